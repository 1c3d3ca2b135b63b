"""POST /api/v1/sessions/: FEDn 0.9.5 reads JSON, or form data when the Content-Type is not JSON.

A form's session_config can only be text; it is read as JSON and anything but an object is
refused, never stored as an empty config with every default.
"""

import json

import pytest

from tests.api.factories import Network


def test_form_session_config_as_json_text(network: Network) -> None:
    config = {"aggregator": "fedavg", "round_timeout": 30}
    response = network.api.post(
        "/api/v1/sessions/", {"session_id": "formy", "session_config": json.dumps(config)}
    )
    assert response.status_code == 201, response.json()
    assert response.json()["session_config"]["round_timeout"] == 30


@pytest.mark.parametrize("text", ["x", "[1]", "3", ""])
def test_form_session_config_not_an_object_is_400(network: Network, text: str) -> None:
    response = network.api.post("/api/v1/sessions/", {"session_id": "formy", "session_config": text})
    assert response.status_code == 400
    assert "session_config" in response.json()["message"]
    assert network.api.get("/api/v1/sessions/count").json() == 0


@pytest.mark.parametrize("value", ["x", [1], 3, None])
def test_json_session_config_not_an_object_is_400(network: Network, value: object) -> None:
    response = network.api.post("/api/v1/sessions/", {"session_config": value}, format="json")
    assert response.status_code == 400
    assert "session_config" in response.json()["message"]
