"""Central differential privacy on a real in-process combiner: the round config's `dp`, the clipped
and noised model, and what the report says of the release."""

from __future__ import annotations

import math

import numpy as np
import pytest

from combiner_node.roundconfig import RoundConfigError, parse_round_config
from combiner_node.tests.conftest import load_model
from combiner_node.tests.test_rounds import SHAPES, layers, report_of, round_config, seed_model, start
from fedplane.privacy import DpConfig


def stringified(config: dict) -> dict[str, str]:
    return {key: str(value) for key, value in config.items()}


def test_dp_settings_are_parsed_from_the_stringified_round_config() -> None:
    dp = {"clip_norm": 1.5, "noise_multiplier": 0.8, "delta": 1e-5, "expected_clients": 2}
    parsed = parse_round_config(stringified(round_config("a" * 32, dp=dp)))
    assert parsed.dp == DpConfig(clip_norm=1.5, noise_multiplier=0.8, delta=1e-5, expected_clients=2)
    assert parse_round_config(stringified(round_config("a" * 32))).dp is None
    assert parse_round_config(stringified(round_config("a" * 32, dp=None))).dp is None


@pytest.mark.parametrize(
    ("dp", "message"),
    [
        ({"clip_norm": -1, "noise_multiplier": 1.0}, "clip_norm must be"),
        ({"noise_multiplier": 1.0}, "needs clip_norm"),
        ({"clip_norm": 1, "noise_multiplier": 1.0, "bogus": 1}, "unknown differential privacy"),
        ("[1, 2]", "dp must be a dict"),
    ],
)
def test_bad_dp_settings_are_refused(dp, message) -> None:
    with pytest.raises(RoundConfigError, match=message):
        parse_round_config(stringified(round_config("a" * 32, dp=dp)))


def test_a_dp_round_clips_each_delta_divides_by_the_expected_clients_and_reports_the_release(
    node, make_client, controller, store, tmp_path
):
    model_id = seed_model(store, tmp_path)
    clients = [make_client(f"client-{i}") for i in range(2)]
    dp = {"clip_norm": 1.0, "noise_multiplier": 0.0, "expected_clients": 4}
    start(node.port, **round_config(model_id, dp=dp))
    for client, value in zip(clients, (0.1, 100.0), strict=True):
        response = client.send_update(client.next_task(), layers(value), 10, tmp_path)
        assert response.response == "Model update accepted."

    report = report_of(controller)
    assert report["status"] == "Success", report
    assert report["data"]["dp"] == {
        "clip_norm": 1.0,
        "noise_std": 0.0,
        "noise_multiplier": 0.0,
        "denominator": 4,
        "updates": 2,
        "next_clip_norm": 1.0,
    }
    combined = tmp_path / "combined.npz"
    with store.open_read(f"models/{report['model_id']}.npz") as source:
        combined.write_bytes(source.read())
    size = sum(math.prod(shape) for shape in SHAPES)
    small_norm = 0.1 * math.sqrt(size)  # within C: taken whole
    large_scale = 1.0 / (100.0 * math.sqrt(size))  # clipped to norm 1
    expected = (0.1 * (1.0 if small_norm <= 1.0 else 1.0 / small_norm) + 100.0 * large_scale) / 4
    for layer in load_model(combined):
        np.testing.assert_allclose(layer, expected, rtol=1e-9)


def test_a_dp_round_with_another_aggregator_fails_with_the_reason(
    node, make_client, controller, store, tmp_path
):
    model_id = seed_model(store, tmp_path)
    make_client("client-0")
    start(
        node.port,
        **round_config(model_id, aggregator="fedmedian", dp={"clip_norm": 1.0, "noise_multiplier": 1.0}),
    )
    report = report_of(controller)
    assert report["status"] == "Failed"
    assert "differential privacy runs with fedavg" in report["reason"]
