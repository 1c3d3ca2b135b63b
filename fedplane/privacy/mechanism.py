"""The Gaussian mechanism of DP-FedAvg over model files: clip each delta, noise the sum, divide.

A round, as an aggregator runs it with one accumulator of the model's size (``WeightedSum``)::

    rng = make_rng(config.seed)
    for update, weight in arrivals:                          # weight in (0, 1], e.g. capped_weight(n)
        clipped = clip_delta(update, base, clip_norm)        # pass 1: the norm
        total.fold(clipped.blocks(update, base, dtypes), weight)  # pass 2: weight·clip(Δ)
    noisy_mean_in_place(total.layers, base, denominator=config.expected_clients or count,
                        noise_std=config.noise_std(clip_norm), rng=rng)

The noise std ``z·C`` bounds one client's influence only while every weight is at most 1, since
a client then moves the sum by at most ``C``.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedplane.modeldelta import ScaledDelta, delta_norm
from fedplane.npzcheck import BLOCK_ELEMS
from fedplane.npzreader import LayerReader

__all__ = [
    "ClippedDelta",
    "add_gaussian_noise",
    "capped_weight",
    "clip_delta",
    "clip_factor",
    "make_rng",
    "noisy_mean_in_place",
]


def make_rng(seed: int | None = None) -> np.random.Generator:
    """A generator for the noise: seeded for reproducible tests, else from 128 bits of the OS's CSPRNG.

    numpy's generators are not cryptographic and its normal sampler draws floating-point values,
    which leak through their low bits in theory (Mironov 2012); the seed at least is unguessable.
    """
    if seed is None:
        seed = secrets.randbits(128)
    return np.random.Generator(np.random.PCG64(seed))


def clip_factor(norm: float, clip_norm: float) -> float:
    """``min(1, C / ||Δ||)``: the scale that brings a delta of norm ``norm`` within ``clip_norm``."""
    if not clip_norm > 0 or not math.isfinite(clip_norm):
        raise ValueError(f"clip_norm must be a finite number > 0, got {clip_norm!r}")
    if not math.isfinite(norm) or norm < 0:
        raise ValueError(f"the delta's norm must be finite, got {norm!r}")
    if norm <= clip_norm:
        return 1.0
    return clip_norm / norm


def capped_weight(num_examples: float, weight_cap: float) -> float:
    """DP-FedAvg's client weight ``min(n / ŵ, 1)``: example-weighted, yet at most 1."""
    if not num_examples > 0 or not weight_cap > 0:
        raise ValueError("num_examples and weight_cap must be > 0")
    return min(num_examples / weight_cap, 1.0)


@dataclass(frozen=True)
class ClippedDelta:
    """The clipping of one update: its delta's norm and the factor applied."""

    norm: float
    clip_norm: float
    factor: float

    @property
    def within_clip(self) -> bool:
        """Whether the norm was at most C: what adaptive clipping counts."""
        return self.norm <= self.clip_norm

    @property
    def clipped_norm(self) -> float:
        return self.norm * self.factor

    def blocks(
        self, update: LayerReader, base: LayerReader, dtypes: Sequence[np.dtype], *, with_base: bool = False
    ) -> ScaledDelta:
        """The clipped delta (or ``base`` + clipped delta) as blocks for an accumulator's fold."""
        return ScaledDelta(update, base, self.factor, dtypes, with_base=with_base)


def clip_delta(
    update: LayerReader, base: LayerReader, clip_norm: float, block_elems: int = BLOCK_ELEMS
) -> ClippedDelta:
    """Measure ``update - base`` over all layers and work out its clipping at ``clip_norm``.

    ``base`` is the global model the update was trained from. This is the first of two passes;
    :meth:`ClippedDelta.blocks` reads both files again for the fold, so no copy is held.
    """
    norm = delta_norm(update, base, block_elems)
    if not math.isfinite(norm):
        raise ValueError("the update's delta has no finite norm (NaN, infinity or overflow)")
    return ClippedDelta(norm=norm, clip_norm=clip_norm, factor=clip_factor(norm, clip_norm))


def add_gaussian_noise(
    layers: Sequence[np.ndarray], std: float, rng: np.random.Generator, block_elems: int = BLOCK_ELEMS
) -> None:
    """Add independent N(0, std²) to every element of the flat float ``layers``, in place."""
    _check_std(std)
    if std == 0:
        return
    for layer in layers:
        scratch = np.empty(min(block_elems, max(layer.size, 1)), dtype=layer.dtype)
        for start in range(0, layer.size, block_elems):
            block = layer[start : start + block_elems]
            noise = scratch[: block.size]
            rng.standard_normal(out=noise, dtype=layer.dtype)
            noise *= std
            block += noise


def noisy_mean_in_place(
    delta_sum: Sequence[np.ndarray],
    base: LayerReader,
    *,
    denominator: float,
    noise_std: float,
    rng: np.random.Generator,
    block_elems: int = BLOCK_ELEMS,
) -> Sequence[np.ndarray]:
    """Turn flat layers holding Σ wᵢ·clip(Δᵢ) into ``base + (Σ + N(0, sigma²I)) / denominator``, in place.

    DP-FedAvg divides by a fixed denominator, the expected number of clients (or expected total
    weight), not by the number that arrived: that count would itself leak.
    """
    _check_std(noise_std)
    if not denominator > 0 or not math.isfinite(denominator):
        raise ValueError(f"denominator must be a finite number > 0, got {denominator!r}")
    if len(delta_sum) != len(base) or any(
        layer.size != math.prod(shape) for layer, shape in zip(delta_sum, base.shapes, strict=False)
    ):
        raise ValueError("the delta sum's layers do not match the base model's")
    scale = 1.0 / denominator
    for i, layer in enumerate(delta_sum):
        scratch = np.empty(min(block_elems, max(layer.size, 1)), dtype=layer.dtype)
        for start, base_block in base.iter_blocks(i, block_elems):
            block = layer[start : start + base_block.size]
            if noise_std > 0:
                noise = scratch[: block.size]
                rng.standard_normal(out=noise, dtype=layer.dtype)
                noise *= noise_std
                block += noise
            block *= scale
            np.add(block, base_block, out=block, casting="unsafe")
    return delta_sum


def _check_std(std: float) -> None:
    if not std >= 0 or not math.isfinite(std):
        raise ValueError(f"noise std must be a finite number >= 0, got {std!r}")
