"""Central differential privacy for aggregation: DP-FedAvg with fixed or adaptive clipping.

- :mod:`~fedplane.privacy.config`: :class:`DpConfig`, the validated settings of a session.
- :mod:`~fedplane.privacy.mechanism`: clip each client's delta to norm C (two streamed passes
  over the files), add Gaussian noise to the sum, divide by a fixed denominator.
- :mod:`~fedplane.privacy.adaptive`: :class:`AdaptiveClipNorm`, C following a target quantile.
- :mod:`fedplane.privacy.accounting`: ε after T rounds, the noise for a target ε, and the
  per-session ledger. Import it by name: it needs dp-accounting, which only the server installs.
"""

from fedplane.privacy.adaptive import AdaptiveClipNorm, release_record
from fedplane.privacy.config import DpConfig, delta_noise_multiplier
from fedplane.privacy.mechanism import (
    ClippedDelta,
    add_gaussian_noise,
    capped_weight,
    clip_delta,
    clip_factor,
    make_rng,
    noisy_mean_in_place,
)

__all__ = [
    "AdaptiveClipNorm",
    "ClippedDelta",
    "DpConfig",
    "add_gaussian_noise",
    "capped_weight",
    "clip_delta",
    "clip_factor",
    "delta_noise_multiplier",
    "make_rng",
    "noisy_mean_in_place",
    "release_record",
]
