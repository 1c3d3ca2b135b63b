"""The DP-FedAvg aggregator: clipped deltas folded with weight 1, noise on the sum, a fixed denominator."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fedplane import numpyhelper
from fedplane.aggregators import InvalidUpdate
from fedplane.aggregators.dpfedavg import DpFedAvg
from fedplane.privacy import DpConfig

_ids = itertools.count()
STATISTICAL_ALPHA = 1e-6


def save(folder: Path, layers: list[np.ndarray]) -> Path:
    path = folder / f"m{next(_ids)}.npz"
    numpyhelper.save(layers, path)
    return path


def load(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [data[str(i)] for i in range(len(data.files))]


def run_round(tmp_path: Path, aggregator: DpFedAvg, base: Path, updates: list[tuple[Path, int]]) -> list:
    aggregator.start_round(base)
    for path, examples in updates:
        aggregator.add(path, examples)
    out = tmp_path / f"out{next(_ids)}.npz"
    aggregator.finish(out)
    return load(out)


def test_noise_free_round_is_base_plus_clipped_deltas_over_expected_clients(tmp_path: Path) -> None:
    base_layers = [np.array([1.0, 2.0, 3.0]), np.array([[0.5, -0.5]])]
    base = save(tmp_path, base_layers)
    small = [base_layers[0] + [0.1, 0.0, 0.0], base_layers[1] + [[0.0, 0.2]]]  # norm ~0.22 < C
    large = [base_layers[0] + [3.0, 0.0, 4.0], base_layers[1] + [[0.0, 0.0]]]  # norm 5 > C
    config = DpConfig(clip_norm=1.0, noise_multiplier=0.0, expected_clients=4)
    aggregator = DpFedAvg(tmp_path / "work", config)
    # Example counts do not weigh: each client moves the sum by at most C.
    out = run_round(tmp_path, aggregator, base, [(save(tmp_path, small), 10), (save(tmp_path, large), 1000)])
    clipped_large = [np.array([0.6, 0.0, 0.8]), np.array([[0.0, 0.0]])]
    for got, b, s, c in zip(out, base_layers, small, clipped_large, strict=True):
        np.testing.assert_allclose(got, b + ((s - b) + c) / 4, rtol=1e-12)
    assert aggregator.last_release == {
        "clip_norm": 1.0,
        "noise_std": 0.0,
        "noise_multiplier": 0.0,
        "denominator": 4,
        "updates": 2,
        "next_clip_norm": 1.0,
    }


def test_without_expected_clients_the_mean_is_over_the_updates_aggregated(tmp_path: Path) -> None:
    base = save(tmp_path, [np.zeros(4)])
    config = DpConfig(clip_norm=10.0, noise_multiplier=0.0)
    out = run_round(
        tmp_path,
        DpFedAvg(tmp_path / "w", config),
        base,
        [(save(tmp_path, [np.full(4, 1.0)]), 1), (save(tmp_path, [np.full(4, 3.0)]), 1)],
    )
    np.testing.assert_allclose(out[0], np.full(4, 2.0))


def test_every_contribution_is_bounded_by_the_clip_norm(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base_layers = [rng.normal(size=(20, 5)).astype(np.float32), rng.normal(size=7).astype(np.float32)]
    base = save(tmp_path, base_layers)
    config = DpConfig(clip_norm=0.5, noise_multiplier=0.0, expected_clients=1)
    for scale in (0.01, 1.0, 1e4):
        update = [
            layer + rng.normal(scale=scale, size=layer.shape).astype(np.float32) for layer in base_layers
        ]
        out = run_round(tmp_path, DpFedAvg(tmp_path / "w", config), base, [(save(tmp_path, update), 5)])
        norm = math.sqrt(
            sum(float(np.sum((o.astype(np.float64) - b) ** 2)) for o, b in zip(out, base_layers, strict=True))
        )
        assert norm <= 0.5 * (1 + 1e-5)


def test_noise_on_the_mean_has_std_noise_multiplier_times_c_over_the_denominator(tmp_path: Path) -> None:
    size = 40_000
    base = save(tmp_path, [np.zeros(size)])
    config = DpConfig(clip_norm=2.0, noise_multiplier=1.5, expected_clients=3, seed=11)
    aggregator = DpFedAvg(tmp_path / "w", config)
    out = run_round(tmp_path, aggregator, base, [(save(tmp_path, [np.zeros(size)]), 1)])
    expected_std = 1.5 * 2.0 / 3
    sample = out[0]
    # The sample variance of n normals: (n-1)s²/sigma² is chi-square with n-1 degrees of freedom.
    statistic = (size - 1) * float(np.var(sample, ddof=1)) / expected_std**2
    low, high = stats.chi2.ppf([STATISTICAL_ALPHA / 2, 1 - STATISTICAL_ALPHA / 2], size - 1)
    assert low < statistic < high
    assert abs(float(np.mean(sample))) < 6 * expected_std / math.sqrt(size)
    assert aggregator.last_release["noise_std"] == pytest.approx(3.0)


def test_adaptive_clipping_carries_the_clip_norm_from_round_to_round(tmp_path: Path) -> None:
    base = save(tmp_path, [np.zeros(3)])
    config = DpConfig(
        clip_norm=1.0,
        noise_multiplier=0.5,
        expected_clients=2,
        target_quantile=0.5,
        count_noise_std=0.5,
        seed=1,
    )
    aggregator = DpFedAvg(tmp_path / "w", config)
    tiny = save(tmp_path, [np.full(3, 0.01)])
    clip_norms = []
    for _ in range(5):
        run_round(tmp_path, aggregator, base, [(tiny, 1), (tiny, 1)])
        release = aggregator.last_release
        assert release is not None
        clip_norms.append(release["clip_norm"])
        assert release["next_clip_norm"] == aggregator.clip_norm
    # Every delta is far within C: C shrinks towards the median of the norms.
    assert clip_norms[-1] < clip_norms[0] == 1.0


def test_a_refused_update_leaves_the_round_as_it_was(tmp_path: Path) -> None:
    base = save(tmp_path, [np.zeros(3)])
    config = DpConfig(clip_norm=10.0, noise_multiplier=0.0, expected_clients=1)
    aggregator = DpFedAvg(tmp_path / "w", config)
    aggregator.start_round(base)
    with pytest.raises(InvalidUpdate):
        aggregator.add(save(tmp_path, [np.array([1.0, np.nan, 0.0])]), 1)
    with pytest.raises(InvalidUpdate):
        aggregator.add(save(tmp_path, [np.zeros(4)]), 1)
    aggregator.add(save(tmp_path, [np.full(3, 2.0)]), 1)
    out = tmp_path / "out.npz"
    aggregator.finish(out)
    np.testing.assert_allclose(load(out)[0], np.full(3, 2.0))
