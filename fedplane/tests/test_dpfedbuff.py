"""FedBuff with central differential privacy: staleness-weighted clipped deltas, noise per version."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fedplane import numpyhelper
from fedplane.aggregators.dpfedbuff import DpFedBuff
from fedplane.aggregators.fedbuff import StaleUpdate
from fedplane.privacy import DpConfig

_ids = itertools.count()


def save(folder: Path, layers: list[np.ndarray]) -> Path:
    path = folder / f"m{next(_ids)}.npz"
    numpyhelper.save(layers, path)
    return path


def load(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [data[str(i)] for i in range(len(data.files))]


def test_a_noise_free_version_is_the_staleness_weighted_clipped_sum_over_m(tmp_path: Path) -> None:
    v0 = [np.zeros(3), np.zeros((1, 2))]
    base0 = save(tmp_path, v0)
    buffer = DpFedBuff.create_private(
        {"buffer_size": 1, "server_learning_rate": 0.5, "max_staleness": 2},
        DpConfig(clip_norm=1.0, noise_multiplier=0.0, expected_clients=2),
    )
    buffer.start(base0, 0)
    # Version 1 from one update of norm 5 (clipped to 1), staleness 0: g1 = 0 + 0.5 · clip / 2.
    assert buffer.add(save(tmp_path, [np.array([3.0, 0.0, 4.0]), np.zeros((1, 2))]), 100, 0, base0) == 1.0
    v1_path = tmp_path / "v1.npz"
    assert buffer.flush(v1_path) == 1
    v1 = load(v1_path)
    np.testing.assert_allclose(v1[0], [0.15, 0.0, 0.2])
    # Version 2 from an update trained on version 0, one behind: weight 1/sqrt(2), delta within C.
    update = [np.array([0.0, 0.1, 0.0]), np.zeros((1, 2))]
    assert buffer.add(save(tmp_path, update), 5, 0, base0) == pytest.approx(2**-0.5)
    v2_path = tmp_path / "v2.npz"
    buffer.flush(v2_path)
    np.testing.assert_allclose(load(v2_path)[0], v1[0] + 0.5 * 2**-0.5 * np.array([0.0, 0.1, 0.0]) / 2)
    assert buffer.last_release is not None and buffer.last_release["denominator"] == 2.0
    with pytest.raises(StaleUpdate):
        buffer.add(save(tmp_path, update), 5, -1, base0)


def test_noise_per_version_has_std_z_c_eta_over_m(tmp_path: Path) -> None:
    size = 40_000
    base = save(tmp_path, [np.zeros(size)])
    buffer = DpFedBuff.create_private(
        {"buffer_size": 2, "server_learning_rate": 2.0},
        DpConfig(clip_norm=0.5, noise_multiplier=1.2, seed=5),
    )
    buffer.start(base, 0)
    for _ in range(2):
        buffer.add(save(tmp_path, [np.zeros(size)]), 1, 0, base)
    out = tmp_path / "v1.npz"
    buffer.flush(out)
    expected = 2.0 * 1.2 * 0.5 / 2  # η · z · C / K
    sample = load(out)[0]
    statistic = (size - 1) * float(np.var(sample, ddof=1)) / expected**2
    low, high = stats.chi2.ppf([5e-7, 1 - 5e-7], size - 1)
    assert low < statistic < high
    assert abs(float(np.mean(sample))) < 6 * expected / math.sqrt(size)
