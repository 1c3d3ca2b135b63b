"""Adaptive clipping (Andrew et al. 2021): C follows a quantile of the clients' delta norms.

Each round the server learns, with noise, what fraction of the clients' deltas had a norm of at
most C, and moves C geometrically towards the target quantile gamma::

    b̃ = (Σ 1[||Δᵢ|| <= C] + N(0, sigma_b²)) / m        C ← C · exp(-η_C (b̃ - gamma))

More deltas under C than gamma asks for shrinks C; fewer grows it.
"""

from __future__ import annotations

import math

import numpy as np

from fedplane.privacy.config import DpConfig

__all__ = ["AdaptiveClipNorm"]


class AdaptiveClipNorm:
    """The clip norm of a session, updated once per round from the noisy count of unclipped deltas."""

    def __init__(
        self,
        clip_norm: float,
        *,
        target_quantile: float,
        learning_rate: float,
        count_noise_std: float,
        expected_clients: float,
    ) -> None:
        if not clip_norm > 0 or not math.isfinite(clip_norm):
            raise ValueError(f"clip_norm must be a finite number > 0, got {clip_norm!r}")
        if not 0 <= target_quantile <= 1:
            raise ValueError(f"target_quantile must be in [0, 1], got {target_quantile!r}")
        if not learning_rate > 0 or not math.isfinite(learning_rate):
            raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
        if not count_noise_std >= 0 or not math.isfinite(count_noise_std):
            raise ValueError(f"count_noise_std must be a finite number >= 0, got {count_noise_std!r}")
        if not expected_clients > 0 or not math.isfinite(expected_clients):
            raise ValueError(f"expected_clients must be a finite number > 0, got {expected_clients!r}")
        self.clip_norm = float(clip_norm)
        self.target_quantile = float(target_quantile)
        self.learning_rate = float(learning_rate)
        self.count_noise_std = float(count_noise_std)
        self.expected_clients = float(expected_clients)

    @classmethod
    def from_config(cls, config: DpConfig, clip_norm: float | None = None) -> AdaptiveClipNorm:
        """The adaptive clip norm a config describes, starting at ``clip_norm`` (a saved C) if given."""
        if config.target_quantile is None or config.expected_clients is None:
            raise ValueError("the config has no adaptive clipping (target_quantile is not set)")
        return cls(
            config.clip_norm if clip_norm is None else clip_norm,
            target_quantile=config.target_quantile,
            learning_rate=config.clip_learning_rate,
            count_noise_std=config.effective_count_noise_std,
            expected_clients=config.expected_clients,
        )

    def noisy_fraction(self, within_clip: int, rng: np.random.Generator) -> float:
        """b̃: the count of deltas whose norm was at most C, plus N(0, sigma_b²), over the expected clients."""
        if within_clip < 0:
            raise ValueError(f"within_clip must be >= 0, got {within_clip!r}")
        noise = float(rng.normal(0.0, self.count_noise_std)) if self.count_noise_std > 0 else 0.0
        return (within_clip + noise) / self.expected_clients

    def update(self, within_clip: int, rng: np.random.Generator) -> float:
        """Move C after a round in which ``within_clip`` deltas had a norm of at most C; returns the new C."""
        fraction = self.noisy_fraction(within_clip, rng)
        self.clip_norm *= math.exp(-self.learning_rate * (fraction - self.target_quantile))
        return self.clip_norm


def release_record(
    *,
    clip_norm: float,
    noise_std: float,
    noise_multiplier: float,
    denominator: float,
    updates: int,
    adaptive: AdaptiveClipNorm | None,
    within_clip: int,
    rng: np.random.Generator,
) -> dict[str, float | int]:
    """What a noisy release used, for the round's report; adaptive clipping then takes its step,
    and ``next_clip_norm`` is the C the next release will clip to."""
    next_clip_norm = adaptive.update(within_clip, rng) if adaptive is not None else clip_norm
    return {
        "clip_norm": clip_norm,
        "noise_std": noise_std,
        "noise_multiplier": noise_multiplier,
        "denominator": denominator,
        "updates": updates,
        "next_clip_norm": next_clip_norm,
    }
