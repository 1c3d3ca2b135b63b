"""Streamed model deltas against numpy on whole arrays, across block sizes and layer dtypes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedplane import numpyhelper
from fedplane.modeldelta import ScaledDelta, delta_norm


def mixed_models(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    base = [
        rng.standard_normal((9, 4)).astype(np.float32),
        rng.integers(0, 255, size=17).astype(np.uint8),  # unsigned: update - base must not wrap
        rng.standard_normal(5),
    ]
    update = [
        rng.standard_normal((9, 4)).astype(np.float32),
        rng.integers(0, 255, size=17).astype(np.uint8),
        rng.standard_normal(5),
    ]
    return base, update


def exact_deltas(update: list[np.ndarray], base: list[np.ndarray]) -> list[np.ndarray]:
    return [
        u.astype(np.float64).ravel() - b.astype(np.float64).ravel() for u, b in zip(update, base, strict=True)
    ]


@pytest.mark.parametrize("block_elems", [1, 4, 7, 1 << 16])
def test_delta_norm_is_the_norm_of_all_layers_together(tmp_path: Path, block_elems: int) -> None:
    rng = np.random.default_rng(block_elems)
    base, update = mixed_models(rng)
    numpyhelper.save(base, tmp_path / "base.npz")
    numpyhelper.save(update, tmp_path / "update.npz")
    expected = np.linalg.norm(np.concatenate(exact_deltas(update, base)))
    with (
        numpyhelper.open_layers(tmp_path / "update.npz") as u,
        numpyhelper.open_layers(tmp_path / "base.npz") as b,
    ):
        assert delta_norm(u, b, block_elems) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("with_base", [False, True])
def test_scaled_delta_blocks_are_factor_times_delta_plus_base_when_asked(
    tmp_path: Path, with_base: bool
) -> None:
    rng = np.random.default_rng(3)
    base, update = mixed_models(rng)
    numpyhelper.save(base, tmp_path / "base.npz")
    numpyhelper.save(update, tmp_path / "update.npz")
    with (
        numpyhelper.open_layers(tmp_path / "update.npz") as u,
        numpyhelper.open_layers(tmp_path / "base.npz") as b,
    ):
        source = ScaledDelta(u, b, 0.25, [np.dtype(np.float64)] * 3, with_base=with_base)
        for i, delta in enumerate(exact_deltas(update, base)):
            got = np.concatenate([block.copy() for _, block in source.iter_blocks(i, 4)])
            expected = 0.25 * delta + (base[i].astype(np.float64).ravel() if with_base else 0.0)
            np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_mismatching_layouts_are_refused(tmp_path: Path) -> None:
    numpyhelper.save([np.zeros((2, 3)), np.zeros(4)], tmp_path / "base.npz")
    numpyhelper.save([np.zeros((3, 2)), np.zeros(4)], tmp_path / "shape.npz")
    numpyhelper.save([np.zeros((2, 3))], tmp_path / "count.npz")
    with numpyhelper.open_layers(tmp_path / "base.npz") as base:
        with (
            numpyhelper.open_layers(tmp_path / "shape.npz") as update,
            pytest.raises(ValueError, match="layer 0"),
        ):
            delta_norm(update, base)
        with (
            numpyhelper.open_layers(tmp_path / "count.npz") as update,
            pytest.raises(ValueError, match="1 layers"),
        ):
            ScaledDelta(update, base, 1.0, [np.dtype(np.float64)])
