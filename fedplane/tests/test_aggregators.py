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


# ------------------------------------------------------------------ fedopt


class ReferenceFedOpt:
    """The spec's formulas (§6.2), written out directly in float64 on whole models."""

    def __init__(self, serveropt: str, lr=1e-3, beta1=0.9, beta2=0.99, tau=1e-4) -> None:
        self.serveropt, self.lr, self.beta1, self.beta2, self.tau = serveropt, lr, beta1, beta2, tau
        self.m: list[np.ndarray] | None = None
        self.v: list[np.ndarray] | None = None

    def round(self, old: list[np.ndarray], updates, weights) -> list[np.ndarray]:
        b1, b2, tau = self.beta1, self.beta2, self.tau
        g = [
            sum(w * (u[i].astype(np.float64) - old[i]) for u, w in zip(updates, weights, strict=True))
            / sum(weights)
            for i in range(len(old))
        ]
        if self.m is None:
            self.m = [(1 - b1) * gi for gi in g]
            self.v = [np.full(gi.shape, tau**2) for gi in g]
        else:
            self.m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(self.m, g, strict=True)]
        assert self.v is not None
        if self.serveropt == "adam":
            self.v = [b2 * vi + (1 - b2) * gi**2 for vi, gi in zip(self.v, g, strict=True)]
        elif self.serveropt == "yogi":
            self.v = [vi - (1 - b2) * gi**2 * np.sign(vi - gi**2) for vi, gi in zip(self.v, g, strict=True)]
        else:
            self.v = [vi + gi**2 for vi, gi in zip(self.v, g, strict=True)]
        return [o + self.lr * mi / (np.sqrt(vi) + tau) for o, mi, vi in zip(old, self.m, self.v, strict=True)]


@FAST
@given(
    seed=st.integers(0, 2**32 - 1),
    serveropt=st.sampled_from(["adam", "yogi", "adagrad"]),
    rounds_count=st.integers(2, 3),
    lr=st.sampled_from([1, 0.1, 1e-3]),
)
def test_fedopt_follows_the_spec_formulas_across_rounds(
    tmp_path: Path, seed: int, serveropt: str, rounds_count: int, lr: float
) -> None:
    rng = np.random.default_rng(seed)
    # ints are accepted for float parameters (FEDn refuses learning_rate=1)
    aggregator = create_aggregator("fedopt", {"serveropt": serveropt, "learning_rate": lr}, tmp_path / "w")
    reference = ReferenceFedOpt(serveropt, lr=lr)
    model = [layer.astype(np.float64) for layer in random_model(rng, np.float64)]
    for _ in range(rounds_count):
        weights = list(rng.integers(1, 100, size=int(rng.integers(1, 4))))
        updates = [[layer + 0.1 * rng.standard_normal(layer.shape) for layer in model] for _ in weights]
        got = run_round(aggregator, tmp_path, model, updates, weights)
        want = reference.round(model, updates, weights)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        model = got


def test_fedopt_works_without_parameters_and_keeps_float32(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    model = random_model(rng)
    updates = [[layer + 0.05 * rng.standard_normal(layer.shape).astype(np.float32) for layer in model]]
    got = run_round(create_aggregator("fedopt", None, tmp_path / "w"), tmp_path, model, updates, [10])
    want = ReferenceFedOpt("adam").round([layer.astype(np.float64) for layer in model], updates, [10])
    for a, b in zip(got, want, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "params",
    [
        {"serveropt": "sgd"},
        {"learning_rate": "0.1"},
        {"learning_rate": -1.0},
        {"beta1": 1.0},
        {"beta2": True},
        {"tau": 0},
        {"momentum": 0.9},
    ],
)
def test_fedopt_refuses_bad_parameters(tmp_path: Path, params: dict) -> None:
    with pytest.raises(ValueError):
        create_aggregator("fedopt", params, tmp_path)


# ------------------------------------------------------------------ robust aggregators


def flat(model: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([layer.astype(np.float64).ravel() for layer in model])


def unflatten(vector: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    out, start = [], 0
    for layer in like:
        out.append(vector[start : start + layer.size].reshape(layer.shape))
        start += layer.size
    return out


robust_rounds = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 9))


@FAST
@given(case=robust_rounds)
def test_fedmedian_is_the_coordinatewise_median(tmp_path: Path, case) -> None:
    seed, n = case
    rng = np.random.default_rng(seed)
    updates = [random_model(rng) for _ in range(n)]
    weights = list(rng.integers(1, 50, n))
    got = run_round(
        create_aggregator("fedmedian", None, tmp_path / "w"), tmp_path, random_model(rng), updates, weights
    )
    want = unflatten(np.median(np.stack([flat(u) for u in updates]), axis=0), updates[0])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@FAST
@given(case=robust_rounds, beta=st.sampled_from([0, 0.1, 0.25, 0.49]))
def test_trimmedmean_drops_the_extremes_per_coordinate(tmp_path: Path, case, beta: float) -> None:
    seed, n = case
    rng = np.random.default_rng(seed)
    updates = [random_model(rng) for _ in range(n)]
    aggregator = create_aggregator("trimmedmean", {"beta": beta}, tmp_path / "w")
    got = run_round(aggregator, tmp_path, random_model(rng), updates, [1] * n)
    cut = int(np.floor(beta * n))
    ordered = np.sort(np.stack([flat(u) for u in updates]), axis=0)
    want = unflatten(ordered[cut : n - cut].mean(axis=0), updates[0])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def brute_force_krum_ranking(updates: list[list[np.ndarray]], f: int) -> np.ndarray:
    vectors = [flat(u) for u in updates]
    n = len(vectors)
    neighbours = n - f - 2
    scores = []
    for i in range(n):
        distances = sorted(float(np.sum((vectors[i] - vectors[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(distances[:neighbours]))
    return np.argsort(scores, kind="stable")


@FAST
@given(seed=st.integers(0, 2**32 - 1), extra=st.integers(0, 4), f=st.integers(0, 2), multi=st.booleans())
def test_krum_and_multikrum_match_brute_force_and_exclude_outliers(
    tmp_path: Path, seed: int, extra: int, f: int, multi: bool
) -> None:
    honest = f + 3 + extra  # Krum's guarantee needs N >= 2f + 3; colluding outliers may be identical
    rng = np.random.default_rng(seed)
    centre = random_model(rng)
    updates = [
        [layer + 0.1 * rng.standard_normal(layer.shape).astype(np.float32) for layer in centre]
        for _ in range(honest)
    ]
    outliers = [[layer + rng.choice([-50.0, 50.0]) for layer in centre] for _ in range(f)]
    positions = rng.permutation(honest + f)
    mixed: list = [None] * (honest + f)
    for k, update in zip(positions, updates + outliers, strict=True):
        mixed[k] = update
    outlier_positions = set(positions[honest:].tolist())
    weights = [int(w) for w in rng.integers(1, 100, honest + f)]
    ranking = brute_force_krum_ranking(mixed, f)
    if multi:
        params: dict = {"f": f} if seed % 2 else {"f": f, "m": honest}
        got = run_round(
            create_aggregator("multikrum", params, tmp_path / "w"), tmp_path, centre, mixed, weights
        )
        chosen = sorted(ranking[:honest].tolist())
        assert not outlier_positions & set(chosen)
        want_vector = np.average(
            np.stack([flat(mixed[k]) for k in chosen]), axis=0, weights=[weights[k] for k in chosen]
        )
        want = unflatten(want_vector, centre)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    else:
        got = run_round(create_aggregator("krum", {"f": f}, tmp_path / "w"), tmp_path, centre, mixed, weights)
        best = int(ranking[0])
        assert best not in outlier_positions
        for a, b in zip(got, mixed[best], strict=True):
            np.testing.assert_array_equal(a, b)


def test_robust_aggregators_stream_blocks_smaller_than_a_layer(tmp_path: Path, monkeypatch) -> None:
    from fedplane.aggregators import robust

    monkeypatch.setattr(robust, "BLOCK_BUDGET_BYTES", 1024)
    monkeypatch.setattr(
        robust, "MIN_BLOCK_ELEMS", 16
    )  # a few coordinates per block, several blocks per layer
    rng = np.random.default_rng(6)
    updates = [[rng.standard_normal(100).astype(np.float32), rng.standard_normal((9, 11))] for _ in range(5)]
    global_model = [np.zeros(100, np.float32), np.zeros((9, 11))]
    got = run_round(
        create_aggregator("fedmedian", None, tmp_path / "a"), tmp_path, global_model, updates, [1] * 5
    )
    for i in range(2):
        np.testing.assert_allclose(got[i], np.median(np.stack([u[i] for u in updates]), axis=0), rtol=1e-6)
    ranking = brute_force_krum_ranking(updates, 1)
    got = run_round(
        create_aggregator("krum", {"f": 1}, tmp_path / "b"), tmp_path, global_model, updates, [1] * 5
    )
    np.testing.assert_array_equal(got[1], updates[int(ranking[0])][1])


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("trimmedmean", {"beta": 0.5}),
        ("trimmedmean", {"beta": -0.1}),
        ("trimmedmean", {"beta": "0.1"}),
        ("krum", {"f": -1}),
        ("krum", {"f": 1.5}),
        ("krum", {"m": 2}),
        ("multikrum", {"m": 0}),
        ("fedmedian", {"beta": 0.1}),
    ],
)
def test_robust_aggregators_refuse_bad_parameters(tmp_path: Path, name: str, params: dict) -> None:
    with pytest.raises(ValueError):
        create_aggregator(name, params, tmp_path)


def test_concurrent_adds_give_the_same_mean(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    updates = [random_model(rng) for _ in range(12)]
    weights = [int(w) for w in rng.integers(1, 50, 12)]
    paths = [save_model(tmp_path, u) for u in updates]
    aggregator = create_aggregator("fedavg", None, tmp_path / "w")
    aggregator.start_round(save_model(tmp_path, random_model(rng)))
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(aggregator.add, paths, weights))
    assert aggregator.count == 12
    aggregator.finish(tmp_path / "out.npz")
    for i, layer in enumerate(numpyhelper.load(tmp_path / "out.npz")):
        want = np.average(np.stack([u[i] for u in updates]), axis=0, weights=weights)
        np.testing.assert_allclose(layer, want, rtol=1e-5, atol=1e-6)


def test_compressed_updates_from_fedn_clients_are_aggregated(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    updates = [random_model(rng) for _ in range(3)]
    aggregator = create_aggregator("fedavg", None, tmp_path / "w")
    aggregator.start_round(save_model(tmp_path, random_model(rng)))
    for k, update in enumerate(updates):
        path = tmp_path / f"fedn{k}.npz"
        np.savez_compressed(path, **{str(i): layer for i, layer in enumerate(update)})
        aggregator.add(path, 1)
    poisoned = [layer.copy() for layer in updates[0]]
    poisoned[0][1, 1] = np.nan
    np.savez_compressed(tmp_path / "nan.npz", **{str(i): layer for i, layer in enumerate(poisoned)})
    with pytest.raises(InvalidUpdate, match="non-finite"):
        aggregator.add(tmp_path / "nan.npz", 1)
    assert aggregator.count == 3
    assert not list((tmp_path / "w").iterdir())  # inflated copies are removed once folded
    aggregator.finish(tmp_path / "out.npz")
    for i, layer in enumerate(numpyhelper.load(tmp_path / "out.npz")):
        np.testing.assert_allclose(layer, np.mean([u[i] for u in updates], axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["fedavg", "fedmedian"])
def test_damaged_compressed_update_is_refused(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(9)
    global_model = [np.zeros(20_000, np.float32)]
    path = tmp_path / "damaged.npz"
    np.savez_compressed(path, **{"0": rng.standard_normal(20_000).astype(np.float32)})
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # damage the deflate stream, keep the headers
    path.write_bytes(data)
    aggregator = create_aggregator(name, None, tmp_path / "w")
    aggregator.start_round(save_model(tmp_path, global_model))
    with pytest.raises(InvalidUpdate):
        aggregator.add(path, 1)
    assert aggregator.count == 0
    assert not list((tmp_path / "w").iterdir())
