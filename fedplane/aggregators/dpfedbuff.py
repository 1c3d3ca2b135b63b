"""FedBuff under central differential privacy: each buffered delta clipped, noise on each version.

As :class:`~fedplane.aggregators.fedbuff.FedBuff`, with DP-FedAvg's mechanism on every version::

    g ← g + η · (Σ s(τᵢ)·clip(Δᵢ, C) + N(0, (z_Δ·C)² I)) / m

Each client moves the sum by at most C: its weight is its staleness weight ``s(τ)`` (at most 1),
not its number of examples. ``m`` is ``DpConfig.expected_clients``, else the buffer size K. Each
version is one release of the Gaussian mechanism; adaptive clipping moves C once per version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedplane import numpyhelper
from fedplane.aggregators.base import BLOCK_ELEMS, InvalidUpdate, check_finite, check_num_examples, open_model
from fedplane.aggregators.fedavg import WeightedSum
from fedplane.aggregators.fedbuff import FedBuff
from fedplane.privacy import (
    AdaptiveClipNorm,
    DpConfig,
    clip_delta,
    make_rng,
    noisy_mean_in_place,
    release_record,
)

__all__ = ["DpFedBuff"]


class DpFedBuff(FedBuff):
    """The buffer of an asynchronous session with central differential privacy."""

    def __init__(self, *, dp: DpConfig, block_elems: int = BLOCK_ELEMS, **kwargs: Any) -> None:
        super().__init__(block_elems=block_elems, **kwargs)
        self.dp = dp
        self._rng = make_rng(dp.seed)
        self._adaptive = AdaptiveClipNorm.from_config(dp) if dp.adaptive else None
        self._within_clip = 0
        self.last_release: dict[str, Any] | None = None

    @classmethod
    def create_private(cls, params: dict[str, Any], dp: DpConfig) -> DpFedBuff:
        """Build from FedBuff's keyword parameters (see ``FedBuff.create``) and the DP settings."""
        plain = FedBuff.create(params)
        return cls(
            dp=dp,
            buffer_size=plain.buffer_size,
            server_learning_rate=plain.server_learning_rate,
            max_staleness=plain.max_staleness,
            staleness=plain.staleness,
        )

    @property
    def clip_norm(self) -> float:
        return self._adaptive.clip_norm if self._adaptive is not None else self.dp.clip_norm

    def add(
        self, update_path: Path, num_examples: float, trained_on_version: int, base_model_path: Path
    ) -> float:
        """Fold ``s(τ) · clip(update - base, C)``; returns ``s(τ)``. Refusals as ``FedBuff.add``."""
        check_num_examples(num_examples)
        with self._lock:
            spec = self._require_started()
            self._check_room()
            self.staleness_weight(trained_on_version)
        with (
            open_model(Path(update_path), spec) as update,
            open_model(Path(base_model_path), spec, what="base model") as base,
        ):
            try:
                check_finite(update)
            except InvalidUpdate:
                raise
            except ValueError as exc:
                raise InvalidUpdate(f"update could not be read: {exc}") from exc
            with self._lock:
                spec = self._require_started()
                self._check_room()
                weight = min(self.staleness_weight(trained_on_version), 1.0)
                assert self._sum is not None
                try:
                    clipped = clip_delta(update, base, self.clip_norm, self.block_elems)
                    dtypes = [layer.dtype for layer in self._sum.layers]
                    self._sum.fold(clipped.blocks(update, base, dtypes), weight)
                except ValueError as exc:
                    self._sum, self._count, self._within_clip = WeightedSum(spec, self.block_elems), 0, 0
                    raise InvalidUpdate(f"update could not be read; the buffer was cleared: {exc}") from exc
                self._count += 1
                self._within_clip += int(clipped.within_clip)
        return weight

    def flush(self, out_path: Path) -> int:
        """Write ``g + η · (Σ + noise) / m`` as the next version; returns its number."""
        out = Path(out_path)
        with self._lock:
            spec = self._require_started()
            if self._count == 0 or self._sum is None:
                raise ValueError("the buffer is empty: no update to aggregate")
            assert self._global_path is not None
            clip_norm = self.clip_norm
            denominator = float(self.dp.expected_clients or self.buffer_size)
            noise_std = self.dp.noise_std(clip_norm)
            with open_model(self._global_path, spec, what="global model") as current:
                # base + (Σ + N) / (m / η) is base + η · (Σ + N) / m.
                noisy_mean_in_place(
                    self._sum.layers,
                    current,
                    denominator=denominator / self.server_learning_rate,
                    noise_std=noise_std,
                    rng=self._rng,
                    block_elems=self.block_elems,
                )
            numpyhelper.save(self._sum.shaped(), out)
            self.last_release = release_record(
                clip_norm=clip_norm,
                noise_std=noise_std,
                noise_multiplier=self.dp.noise_multiplier,
                denominator=denominator,
                updates=self._count,
                adaptive=self._adaptive,
                within_clip=self._within_clip,
                rng=self._rng,
            )
            self._sum = None
            self._global_path, self._version = out, self._version + 1
            self._sum, self._count, self._within_clip = WeightedSum(spec, self.block_elems), 0, 0
            return self._version
