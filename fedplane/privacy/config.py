"""The settings of central differential privacy for a session, checked once when they are made."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["DpConfig", "delta_noise_multiplier"]

# Andrew et al. 2021 (section 3) run adaptive clipping with η_C = 0.2 and sigma_b = m/20.
DEFAULT_CLIP_LEARNING_RATE = 0.2
COUNT_NOISE_PER_CLIENT = 1.0 / 20.0


def delta_noise_multiplier(noise_multiplier: float, count_noise_std: float) -> float:
    """Noise multiplier left for the deltas when the clipped count takes its share of the budget.

    Andrew et al. 2021, Theorem 1: releasing the count with noise sigma_b and the delta sum with
    noise multiplier z_Δ is as private as one Gaussian query with ``z`` where
    z⁻² = z_Δ⁻² + (2sigma_b)⁻²; so z_Δ = (z⁻² - (2sigma_b)⁻²)^(-1/2), defined only for 2sigma_b > z.
    """
    if noise_multiplier < 0 or count_noise_std <= 0:
        raise ValueError("noise_multiplier must be >= 0 and count_noise_std > 0")
    if noise_multiplier == 0:
        return 0.0
    if 2.0 * count_noise_std <= noise_multiplier:
        raise ValueError(
            f"count_noise_std={count_noise_std} must be more than noise_multiplier/2 "
            f"({noise_multiplier / 2}): the clipped count would use the whole privacy budget"
        )
    return (noise_multiplier**-2 - (2.0 * count_noise_std) ** -2) ** -0.5


@dataclass(frozen=True)
class DpConfig:
    """DP-FedAvg (McMahan et al. 2018) with optional adaptive clipping (Andrew et al. 2021).

    ``clip_norm`` is C, the bound on each client's delta norm (the starting C when
    ``target_quantile`` is set). ``noise_multiplier`` is z, the privacy of the whole round: the
    noise on the sum of clipped deltas has std ``z·C``, or ``z_Δ·C`` with adaptive clipping.
    ``expected_clients`` is the fixed denominator of the mean (the expected number of sampled
    clients); ``None`` divides by the number actually aggregated, which DP-FedAvg's analysis does
    not cover. ``sampling_rate`` (q) and ``delta`` (δ) serve the accountant; ``target_epsilon``
    is the budget a session stops at. ``seed`` makes the noise reproducible (tests only).
    """

    clip_norm: float
    noise_multiplier: float
    delta: float = 1e-5
    expected_clients: float | None = None
    sampling_rate: float | None = None
    target_epsilon: float | None = None
    target_quantile: float | None = None
    clip_learning_rate: float = DEFAULT_CLIP_LEARNING_RATE
    count_noise_std: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        _require(_positive(self.clip_norm), f"clip_norm must be a finite number > 0, got {self.clip_norm!r}")
        _require(
            _number(self.noise_multiplier) and self.noise_multiplier >= 0,
            f"noise_multiplier must be a finite number >= 0, got {self.noise_multiplier!r}",
        )
        _require(_number(self.delta) and 0 < self.delta < 1, f"delta must be in (0, 1), got {self.delta!r}")
        if self.expected_clients is not None:
            _require(
                _positive(self.expected_clients),
                f"expected_clients must be a finite number > 0, got {self.expected_clients!r}",
            )
        if self.sampling_rate is not None:
            _require(
                _number(self.sampling_rate) and 0 < self.sampling_rate <= 1,
                f"sampling_rate must be in (0, 1], got {self.sampling_rate!r}",
            )
        if self.target_epsilon is not None:
            _require(
                _positive(self.target_epsilon),
                f"target_epsilon must be a finite number > 0, got {self.target_epsilon!r}",
            )
        if self.seed is not None:
            _require(
                isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
                f"seed must be an integer >= 0, got {self.seed!r}",
            )
        _require(
            _positive(self.clip_learning_rate),
            f"clip_learning_rate must be a finite number > 0, got {self.clip_learning_rate!r}",
        )
        if self.target_quantile is None:
            _require(
                self.count_noise_std is None,
                "count_noise_std is only used with adaptive clipping (target_quantile)",
            )
            return
        _require(
            _number(self.target_quantile) and 0 <= self.target_quantile <= 1,
            f"target_quantile must be in [0, 1], got {self.target_quantile!r}",
        )
        _require(
            self.expected_clients is not None,
            "adaptive clipping (target_quantile) needs expected_clients, the denominator of the noisy count",
        )
        if self.count_noise_std is not None:
            _require(
                _positive(self.count_noise_std),
                f"count_noise_std must be a finite number > 0, got {self.count_noise_std!r}",
            )
        delta_noise_multiplier(self.noise_multiplier, self.effective_count_noise_std)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DpConfig:
        """Build from keyword parameters (e.g. a session's settings), refusing unknown names."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise ValueError(
                f"unknown differential privacy parameter(s): {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(names))})"
            )
        for required in ("clip_norm", "noise_multiplier"):
            if required not in params:
                raise ValueError(f"differential privacy needs {required}")
        return cls(**params)

    @property
    def adaptive(self) -> bool:
        return self.target_quantile is not None

    @property
    def effective_count_noise_std(self) -> float:
        """sigma_b: as given, or the paper's expected_clients / 20."""
        if self.count_noise_std is not None:
            return self.count_noise_std
        if self.expected_clients is None:
            raise ValueError("count_noise_std needs expected_clients")
        return self.expected_clients * COUNT_NOISE_PER_CLIENT

    @property
    def delta_noise_multiplier(self) -> float:
        """The multiplier of C for the noise on the delta sum: z, or z_Δ with adaptive clipping."""
        if not self.adaptive:
            return self.noise_multiplier
        return delta_noise_multiplier(self.noise_multiplier, self.effective_count_noise_std)

    def noise_std(self, clip_norm: float | None = None) -> float:
        """Std of the Gaussian noise added to the sum of clipped deltas clipped at ``clip_norm``."""
        return self.delta_noise_multiplier * (self.clip_norm if clip_norm is None else clip_norm)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
