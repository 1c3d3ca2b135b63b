"""Aggregators against direct numpy formulas on random updates; refusal of bad updates."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedplane import numpyhelper
from fedplane.aggregators import (
    AGGREGATOR_NAMES,
    InvalidUpdate,
    create_aggregator,
    weighted_average_files,
)

FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SHAPES = [(7, 5), (3,), (2, 2, 3)]
_file_ids = itertools.count()


def save_model(folder: Path, layers: list[np.ndarray]) -> Path:
    path = folder / f"m{next(_file_ids)}.npz"
    numpyhelper.save(layers, path)
    return path


def random_model(rng: np.random.Generator, dtype=np.float32, scale: float = 1.0) -> list[np.ndarray]:
    return [(rng.standard_normal(shape) * scale).astype(dtype) for shape in SHAPES]


def run_round(aggregator, folder: Path, global_model, updates, weights) -> list[np.ndarray]:
    aggregator.start_round(save_model(folder, global_model))
    for update, weight in zip(updates, weights, strict=True):
        aggregator.add(save_model(folder, update), weight)
    assert aggregator.count == len(updates)
    out = folder / f"out{next(_file_ids)}.npz"
    aggregator.finish(out)
    assert aggregator.count == 0
    return numpyhelper.load(out)


rounds = st.tuples(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 1000), min_size=1, max_size=6))


@FAST
@given(case=rounds)
def test_fedavg_is_the_example_weighted_mean(tmp_path: Path, case) -> None:
    seed, weights = case
    rng = np.random.default_rng(seed)
    global_model = random_model(rng)
    updates = [random_model(rng) for _ in weights]
    got = run_round(
        create_aggregator("fedavg", None, tmp_path / "work"), tmp_path, global_model, updates, weights
    )
    for i, layer in enumerate(got):
        want = np.average(np.stack([u[i].astype(np.float64) for u in updates]), axis=0, weights=weights)
        assert layer.dtype == np.float32 and layer.shape == SHAPES[i]
        np.testing.assert_allclose(layer, want, rtol=1e-5, atol=1e-5)


def test_fedavg_streams_big_layers_in_blocks_and_keeps_integer_dtypes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    big = (300_001,)  # several blocks, last one partial
    global_model = [np.zeros(big, np.float32), np.zeros(3, np.int64), np.zeros(2, np.float64)]
    updates = [
        [rng.standard_normal(big).astype(np.float32), rng.integers(0, 100, 3), rng.standard_normal(2)]
        for _ in range(3)
    ]
    # an update may send float64 for a float32 layer: same kind, cast to the global dtype
    updates[1][0] = updates[1][0].astype(np.float64)
    weights = [5, 1, 2]
    got = run_round(create_aggregator("fedavg", {}, tmp_path / "w"), tmp_path, global_model, updates, weights)
    assert [layer.dtype for layer in got] == [np.float32, np.int64, np.float64]
    for i in range(3):
        want = np.average(np.stack([u[i].astype(np.float64) for u in updates]), axis=0, weights=weights)
        if i == 1:
            want = np.rint(want)
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)


def test_weighted_average_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    models = [random_model(rng) for _ in range(3)]
    weights = [10, 30, 60]
    out = tmp_path / "reduced.npz"
    weighted_average_files([(save_model(tmp_path, m), w) for m, w in zip(models, weights, strict=True)], out)
    for i, layer in enumerate(numpyhelper.load(out)):
        want = np.average(np.stack([m[i] for m in models]), axis=0, weights=weights)
        np.testing.assert_allclose(layer, want, rtol=1e-5, atol=1e-6)
    bad = [layer.copy() for layer in models[0]]
    bad[2][0, 0, 0] = np.inf
    with pytest.raises(InvalidUpdate, match="non-finite"):
        weighted_average_files([(save_model(tmp_path, models[0]), 1), (save_model(tmp_path, bad), 1)], out)
    with pytest.raises(ValueError):
        weighted_average_files([], out)


def _bad_updates(good: list[np.ndarray]) -> dict[str, tuple[list[np.ndarray] | bytes, str]]:
    nan = [layer.copy() for layer in good]
    nan[1][0] = np.nan
    inf = [layer.copy() for layer in good]
    inf[0][-1, -1] = -np.inf
    return {
        "nan": (nan, "non-finite"),
        "inf": (inf, "non-finite"),
        "missing layer": (good[:-1], "layers"),
        "extra layer": ([*good, np.ones(2, np.float32)], "layers"),
        "wrong shape": ([good[0].T.copy(), *good[1:]], "shape"),
        "wrong dtype kind": ([good[0].astype(np.int32), *good[1:]], "dtype"),
        "garbage": (b"not a model at all", "not a valid model"),
    }


@pytest.mark.parametrize("name", AGGREGATOR_NAMES)
def test_invalid_updates_are_refused_and_leave_the_aggregate_untouched(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(3)
    global_model = random_model(rng)
    good = [random_model(rng) for _ in range(4)]
    aggregator = create_aggregator(name, None, tmp_path / "work")
    aggregator.start_round(save_model(tmp_path, global_model))
    for update in good[:2]:
        aggregator.add(save_model(tmp_path, update), 3)
    for label, (update, reason) in _bad_updates(good[0]).items():
        if isinstance(update, bytes):
            path = tmp_path / "garbage.npz"
            path.write_bytes(update)
        else:
            path = save_model(tmp_path, update)
        with pytest.raises(InvalidUpdate, match=reason):
            aggregator.add(path, 3)
        assert aggregator.count == 2, label
    for bad_weight in (0, -1, float("nan"), True, "3"):
        with pytest.raises(InvalidUpdate, match="num_examples"):
            aggregator.add(save_model(tmp_path, good[0]), bad_weight)
    with pytest.raises(InvalidUpdate, match="not found"):
        aggregator.add(tmp_path / "missing.npz", 3)
    for update in good[2:]:
        aggregator.add(save_model(tmp_path, update), 3)
    aggregator.finish(tmp_path / "with_rejects.npz")

    clean = create_aggregator(name, None, tmp_path / "clean")
    clean.start_round(save_model(tmp_path, global_model))
    for update in good:
        clean.add(save_model(tmp_path, update), 3)
    clean.finish(tmp_path / "clean.npz")
    for a, b in zip(
        numpyhelper.load(tmp_path / "with_rejects.npz"), numpyhelper.load(tmp_path / "clean.npz"), strict=True
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", AGGREGATOR_NAMES)
def test_finish_without_updates_raises_and_rounds_repeat(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(4)
    aggregator = create_aggregator(name, None, tmp_path / "work")
    global_path = save_model(tmp_path, random_model(rng))
    with pytest.raises(RuntimeError):
        aggregator.add(global_path, 1)
    aggregator.start_round(global_path)
    with pytest.raises(ValueError, match="no model updates"):
        aggregator.finish(tmp_path / "out.npz")
    for _ in range(2):
        aggregator.start_round(global_path)
        aggregator.add(save_model(tmp_path, random_model(rng)), 2)
        aggregator.finish(tmp_path / "out.npz")
        assert numpyhelper.layer_shapes(tmp_path / "out.npz") == SHAPES
    assert not [p for p in (tmp_path / "work").iterdir()]  # spools are cleaned up


def test_create_aggregator_refuses_unknown_names_and_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown aggregator"):
        create_aggregator("fedsgd", None, tmp_path)
    with pytest.raises(ValueError, match="unknown parameter"):
        create_aggregator("fedavg", {"learning_rate": 1.0}, tmp_path)
    with pytest.raises(ValueError, match="dict"):
        create_aggregator("fedavg", "serveropt=adam", tmp_path)  # type: ignore[arg-type]
