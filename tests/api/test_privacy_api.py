"""session_config.dp through the API: accepted settings as the session keeps them, refusals as 400."""

from typing import Any

import pytest

from fedplane.privacy.accounting import epsilon_after

from .factories import Network
from .test_bad_input import refused, snapshot

pytestmark = pytest.mark.django_db


def create(network: Network, dp: Any, **config: Any) -> Any:
    body = {
        "session_config": {"aggregator": "fedavg", "rounds": 4, "clients_requested": 3, "dp": dp, **config}
    }
    return network.api.post("/api/v1/sessions/", body, format="json")


def test_a_dp_session_keeps_its_settings_with_the_defaults_filled_in(network: Network) -> None:
    response = create(network, {"noise_multiplier": 1.1, "clip_norm": 0.5, "target_epsilon": 50})
    assert response.status_code == 201, response.json()
    doc = response.json()
    assert doc["session_config"]["dp"] == {
        "clip_norm": 0.5,
        "noise_multiplier": 1.1,
        "delta": 1e-5,
        "expected_clients": 3,
        "sampling_rate": 1.0,
        "target_epsilon": 50,
        "clip_learning_rate": 0.2,
    }
    assert doc["privacy"] == {
        "epsilon": 0.0,
        "delta": 1e-5,
        "target_epsilon": 50,
        "noise_multiplier": 1.1,
        "rounds": 0,
    }
    fetched = network.api.get(f"/api/v1/sessions/{doc['session_id']}").json()
    assert fetched["privacy"] == doc["privacy"]


def test_without_noise_multiplier_the_target_epsilon_sets_it_for_the_sessions_rounds(
    network: Network,
) -> None:
    response = create(network, {"clip_norm": 1.0, "target_epsilon": 8.0, "sampling_rate": 0.5})
    assert response.status_code == 201, response.json()
    z = response.json()["session_config"]["dp"]["noise_multiplier"]
    spent = epsilon_after(4, sampling_rate=0.5, noise_multiplier=z, delta=1e-5)
    assert 7.9 < spent <= 8.0


def test_a_session_without_dp_has_no_privacy(network: Network) -> None:
    response = create(network, None)
    assert response.status_code == 201
    assert response.json()["privacy"] is None
    assert "dp" not in response.json()["session_config"]


BAD_DP = [
    ("on", "must be an object"),
    ({"clip_norm": 1.0}, "needs noise_multiplier, or target_epsilon"),
    ({"noise_multiplier": 1.0}, "needs clip_norm"),
    ({"noise_multiplier": 1.0, "clip_norm": 0}, "clip_norm must be"),
    ({"noise_multiplier": -1, "clip_norm": 1}, "noise_multiplier must be"),
    ({"noise_multiplier": 0, "clip_norm": 1}, "without noise there is no privacy"),
    ({"noise_multiplier": "1", "clip_norm": 1}, "noise_multiplier must be"),
    ({"noise_multiplier": 1, "clip_norm": 1, "delta": 2}, "delta must be in (0, 1)"),
    ({"noise_multiplier": 1, "clip_norm": 1, "sampling_rate": 0}, "sampling_rate must be"),
    ({"noise_multiplier": 1, "clip_norm": 1, "target_epsilon": -3}, "target_epsilon must be"),
    ({"noise_multiplier": 0.3, "clip_norm": 1, "target_epsilon": 1}, "below the ε of a single round"),
    ({"noise_multiplier": 1, "clip_norm": 1, "seed": 3}, "dp.seed is not accepted"),
    ({"noise_multiplier": 1, "clip_norm": 1, "sigma": 3}, "unknown key(s) sigma"),
    ({"noise_multiplier": 1, "clip_norm": 1, "target_quantile": 1.5}, "target_quantile must be"),
    # sigma_b = m/20 = 0.15 leaves nothing of z = 1 for the deltas.
    ({"noise_multiplier": 1, "clip_norm": 1, "target_quantile": 0.5}, "count_noise_std"),
]


@pytest.mark.parametrize(("dp", "mentions"), BAD_DP, ids=[str(i) for i in range(len(BAD_DP))])
def test_invalid_dp_settings_are_a_400_and_nothing_is_stored(
    network: Network, artifact_store: Any, dp: Any, mentions: str
) -> None:
    before = snapshot(artifact_store)
    message = refused(create(network, dp), 400)
    assert mentions in message, message
    assert snapshot(artifact_store) == before


def test_dp_needs_plain_fedavg(network: Network) -> None:
    dp = {"noise_multiplier": 1, "clip_norm": 1}
    assert "aggregator fedavg" in refused(create(network, dp, aggregator="fedmedian"), 400)
    assert "aggregator fedavg" in refused(create(network, dp, aggregator_kwargs={"x": 1}), 400)


def test_start_session_refuses_invalid_dp_and_nothing_is_stored(
    network: Network, artifact_store: Any
) -> None:
    before = snapshot(artifact_store)
    body = {"session_id": "dp", "rounds": 2, "dp": {"clip_norm": 1.0, "noise_multiplier": -2}}
    message = refused(network.api.post("/start_session", body, format="json"), 400)
    assert "noise_multiplier must be" in message
    assert snapshot(artifact_store) == before
