"""FedBuff against its formula computed directly with numpy; refusal of stale and bad updates."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedplane import numpyhelper
from fedplane.aggregators.base import InvalidUpdate
from fedplane.aggregators.fedbuff import (
    BufferFull,
    FedBuff,
    StaleUpdate,
    constant_staleness,
    hinge_staleness,
    polynomial_staleness,
)

FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SHAPES = [(7, 5), (3,), (2, 2, 3)]
_file_ids = itertools.count()


def save_model(folder: Path, layers: list[np.ndarray]) -> Path:
    path = folder / f"m{next(_file_ids)}.npz"
    numpyhelper.save(layers, path)
    return path


def random_model(rng: np.random.Generator, dtype=np.float64) -> list[np.ndarray]:
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


STALENESS = {
    "polynomial": (polynomial_staleness(), lambda tau: 1 / math.sqrt(1 + tau)),
    "constant": (constant_staleness(), lambda tau: 1.0),
    "hinge": (hinge_staleness(a=2.0, b=1), lambda tau: 1.0 if tau <= 1 else 1 / (2.0 * (tau - 1) + 1)),
}

arrivals = st.lists(
    st.tuples(st.integers(1, 500), st.integers(0, 3)),  # (num_examples, staleness τ)
    min_size=1,
    max_size=5,
)


@FAST
@given(
    seed=st.integers(0, 2**32 - 1),
    updates=arrivals,
    kind=st.sampled_from(sorted(STALENESS)),
    server_lr=st.sampled_from([1.0, 0.5, 2.0]),
)
def test_flush_is_global_plus_lr_times_the_staleness_weighted_mean_delta(
    tmp_path: Path, seed: int, updates, kind: str, server_lr: float
) -> None:
    rng = np.random.default_rng(seed)
    current = 3
    versions = {v: random_model(rng) for v in range(current + 1)}  # g(0) .. g(3), the current one
    paths = {v: save_model(tmp_path, layers) for v, layers in versions.items()}
    staleness, formula = STALENESS[kind]
    buffer = FedBuff(
        buffer_size=len(updates), server_learning_rate=server_lr, max_staleness=3, staleness=staleness
    )
    buffer.start(paths[current], current)

    models = [random_model(rng) for _ in updates]
    for model, (examples, tau) in zip(models, updates, strict=True):
        weight = buffer.add(save_model(tmp_path, model), examples, current - tau, paths[current - tau])
        assert weight == pytest.approx(examples * formula(tau))
    assert buffer.ready
    assert buffer.flush(tmp_path / "next.npz") == current + 1

    weights = np.array([examples * formula(tau) for examples, tau in updates])
    got = numpyhelper.load(tmp_path / "next.npz")
    for i, layer in enumerate(got):
        deltas = np.stack(
            [m[i] - versions[current - tau][i] for m, (_, tau) in zip(models, updates, strict=True)]
        )
        mean_delta = np.tensordot(weights, deltas, axes=1) / weights.sum()
        np.testing.assert_allclose(
            layer, versions[current][i] + server_lr * mean_delta, rtol=1e-10, atol=1e-12
        )


def test_float32_models_stay_float32_and_match_the_formula(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    base = random_model(rng, np.float32)
    update = random_model(rng, np.float32)
    buffer = FedBuff(buffer_size=1, server_learning_rate=0.5)
    base_path = save_model(tmp_path, base)
    buffer.start(base_path, 0)
    buffer.add(save_model(tmp_path, update), 10, 0, base_path)
    buffer.flush(tmp_path / "next.npz")
    for got, b, u in zip(numpyhelper.load(tmp_path / "next.npz"), base, update, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, b + 0.5 * (u - b), rtol=1e-5, atol=1e-6)


def test_buffer_continues_from_the_flushed_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    g0 = random_model(rng)
    p0 = save_model(tmp_path, g0)
    buffer = FedBuff(buffer_size=1, staleness=constant_staleness())
    buffer.start(p0, 0)
    u1 = random_model(rng)
    buffer.add(save_model(tmp_path, u1), 5, 0, p0)
    p1 = tmp_path / "v1.npz"
    assert buffer.flush(p1) == 1
    assert buffer.count == 0 and not buffer.ready
    # Trained on version 0 while version 1 was made: its delta is against g0, added to g1 = u1.
    u2 = random_model(rng)
    buffer.add(save_model(tmp_path, u2), 5, 0, p0)
    buffer.flush(tmp_path / "v2.npz")
    for got, a, b, c in zip(numpyhelper.load(tmp_path / "v2.npz"), g0, u1, u2, strict=True):
        np.testing.assert_allclose(got, b + (c - a), rtol=1e-12)


def test_updates_staler_than_max_staleness_are_refused_and_not_folded(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    base_path = save_model(tmp_path, random_model(rng))
    buffer = FedBuff(buffer_size=3, max_staleness=2)
    buffer.start(base_path, 10)
    update = save_model(tmp_path, random_model(rng))
    with pytest.raises(
        StaleUpdate, match=r"trained on version 7, 3 versions behind the current version 10; at most 2"
    ):
        buffer.add(update, 5, 7, base_path)
    with pytest.raises(StaleUpdate, match="newer than the current version 10"):
        buffer.add(update, 5, 11, base_path)
    assert buffer.count == 0
    buffer.add(update, 5, 8, base_path)  # τ = 2 is still taken
    assert buffer.count == 1


def test_a_full_buffer_refuses_until_flushed(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base_path = save_model(tmp_path, random_model(rng))
    buffer = FedBuff(buffer_size=2)
    buffer.start(base_path, 0)
    update = save_model(tmp_path, random_model(rng))
    buffer.add(update, 1, 0, base_path)
    buffer.add(update, 1, 0, base_path)
    with pytest.raises(BufferFull, match="K=2"):
        buffer.add(update, 1, 0, base_path)
    buffer.flush(tmp_path / "next.npz")
    buffer.add(update, 1, 0, base_path)  # stale by one now, still within the default bound
    assert buffer.count == 1


def test_bad_updates_are_refused_and_leave_the_buffer_as_it_was(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    base = random_model(rng)
    base_path = save_model(tmp_path, base)
    buffer = FedBuff(buffer_size=2)
    buffer.start(base_path, 0)
    nan_model = random_model(rng)
    nan_model[1][0] = np.nan
    with pytest.raises(InvalidUpdate, match="NaN"):
        buffer.add(save_model(tmp_path, nan_model), 1, 0, base_path)
    with pytest.raises(InvalidUpdate, match="shape"):
        buffer.add(save_model(tmp_path, [np.zeros((5, 7)), *base[1:]]), 1, 0, base_path)
    with pytest.raises(InvalidUpdate, match="num_examples"):
        buffer.add(save_model(tmp_path, base), 0, 0, base_path)
    assert buffer.count == 0
    with pytest.raises(ValueError, match="empty"):
        buffer.flush(tmp_path / "next.npz")


def test_staleness_functions() -> None:
    poly = polynomial_staleness()
    assert [poly(t) for t in (0, 3, 8)] == pytest.approx([1.0, 0.5, 1 / 3])
    assert polynomial_staleness(1.0)(4) == pytest.approx(0.2)
    hinge = hinge_staleness(a=10.0, b=4)
    assert [hinge(t) for t in (0, 4, 5, 6)] == pytest.approx([1.0, 1.0, 1 / 11, 1 / 21])
    assert constant_staleness()(50) == 1.0


def test_create_from_params_builds_the_named_staleness_and_refuses_bad_values() -> None:
    buffer = FedBuff.create({"buffer_size": 4, "staleness": "hinge", "hinge_a": 2, "hinge_b": 0})
    assert buffer.buffer_size == 4
    assert buffer.staleness(1) == pytest.approx(1 / 3)
    assert FedBuff.create({}).staleness(3) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"staleness=.*one of polynomial, constant, hinge"):
        FedBuff.create({"staleness": "linear"})
    with pytest.raises(ValueError, match="buffer_size=0 is out of range"):
        FedBuff.create({"buffer_size": 0})
    with pytest.raises(ValueError, match="unknown parameter"):
        FedBuff.create({"K": 3})
    with pytest.raises(ValueError, match="server_learning_rate"):
        FedBuff(server_learning_rate=0.0)
    with pytest.raises(RuntimeError, match="start must be called"):
        FedBuff().flush(Path("unused.npz"))
