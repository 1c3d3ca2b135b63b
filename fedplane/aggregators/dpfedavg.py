"""DP-FedAvg (McMahan et al. 2018): clipped deltas, Gaussian noise on their sum, a fixed denominator.

Each accepted update's delta from the round's global model is clipped to L2 norm C and folded,
with weight 1, into one running sum (memory of one model, as for fedavg). At the round's close::

    g ← g + (Σ clip(Δᵢ, C) + N(0, (z_Δ·C)² I)) / m

``m`` is the expected number of clients (``DpConfig.expected_clients``), or the number aggregated
when it is not set. Every client weighs the same: an example-weighted mean would let one client
move the sum by more than C. With adaptive clipping (Andrew et al. 2021) C then moves towards the
target quantile of the delta norms, from the noisy count of deltas that needed no clipping.

What a round released is in :attr:`DpFedAvg.last_release` (only noisy or public quantities).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedplane import numpyhelper
from fedplane.aggregators.base import Aggregator, InvalidUpdate, ModelSpec, check_finite, open_model
from fedplane.aggregators.fedavg import WeightedSum
from fedplane.numpyhelper import LayerReader
from fedplane.privacy import (
    AdaptiveClipNorm,
    DpConfig,
    clip_delta,
    make_rng,
    noisy_mean_in_place,
    release_record,
)

__all__ = ["DpFedAvg"]


class DpFedAvg(Aggregator):
    """fedavg under central differential privacy, configured by a :class:`DpConfig`."""

    name = "fedavg"

    def __init__(self, workdir: Path, config: DpConfig) -> None:
        super().__init__(workdir)
        self.config = config
        self._rng = make_rng(config.seed)
        self._adaptive = AdaptiveClipNorm.from_config(config) if config.adaptive else None
        self._sum: WeightedSum | None = None
        self._within_clip = 0
        self._broken: str | None = None
        self.last_release: dict[str, Any] | None = None

    @property
    def clip_norm(self) -> float:
        """C for the current round: fixed, or where adaptive clipping has moved it."""
        return self._adaptive.clip_norm if self._adaptive is not None else self.config.clip_norm

    def _begin_round(self, spec: ModelSpec) -> None:
        self._sum = WeightedSum(spec)
        self._within_clip = 0
        self._broken = None

    def _prepare(self, reader: LayerReader, spec: ModelSpec) -> None:
        check_finite(reader)
        return None

    def _accept(self, reader: LayerReader, spec: ModelSpec, weight: float, prepared: Any) -> None:
        assert self._sum is not None and self._global_path is not None
        if self._broken is not None:
            raise InvalidUpdate(f"the round cannot take more updates: {self._broken}")
        with open_model(self._global_path, spec, what="global model") as base:
            clipped = clip_delta(reader, base, self.clip_norm)
            dtypes = [layer.dtype for layer in self._sum.layers]
            try:
                self._sum.fold(clipped.blocks(reader, base, dtypes), 1.0)
            except ValueError as exc:
                # Part of the delta may be in the sum: this round can no longer be released.
                self._broken = f"an update failed while it was folded in ({exc})"
                raise InvalidUpdate(f"update could not be read; the round is spoiled: {exc}") from exc
        if clipped.within_clip:
            self._within_clip += 1

    def _write(self, spec: ModelSpec, global_path: Path, out_path: Path) -> None:
        assert self._sum is not None
        if self._broken is not None:
            raise ValueError(self._broken)
        clip_norm = self.clip_norm
        count = self._count
        denominator = self.config.expected_clients or float(count)
        noise_std = self.config.noise_std(clip_norm)
        with open_model(global_path, spec, what="global model") as base:
            noisy_mean_in_place(
                self._sum.layers, base, denominator=denominator, noise_std=noise_std, rng=self._rng
            )
        numpyhelper.save(self._sum.shaped(), out_path)
        self.last_release = release_record(
            clip_norm=clip_norm,
            noise_std=noise_std,
            noise_multiplier=self.config.noise_multiplier,
            denominator=denominator,
            updates=count,
            adaptive=self._adaptive,
            within_clip=self._within_clip,
            rng=self._rng,
        )

    def _discard_round(self) -> None:
        self._sum = None
