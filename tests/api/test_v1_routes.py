"""The /api/v1 routes beyond list/count/get: model lineage and files, the active package, session
create/start/stop, and the routes combiners report on (docs/combiner-controller.md)."""

from typing import Any

import numpy as np
import pytest
from django.http import StreamingHttpResponse

from .factories import Network, model_bytes, sha256, status_doc, streamed_bytes, validation_doc

pytestmark = pytest.mark.django_db


def json_of(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    return response.json()


def model_chain(network: Network, length: int) -> list[dict]:
    models = [network.seed()]
    for _ in range(length - 1):
        models.append(network.child_model(models[-1]["model"], "session-a"))
    return models


def uuids(docs: list[dict]) -> list[str]:
    return [doc["model"] for doc in docs]


def test_model_ancestors(network: Network) -> None:
    m0, m1, m2, m3 = model_chain(network, 4)
    url = f"/api/v1/models/{m3['model']}/ancestors"
    assert uuids(json_of(network.api.get(url))) == uuids([m2, m1, m0])
    nearest = json_of(network.api.get(url))[0]
    assert (nearest["id"], nearest["parent_model"], nearest["key"]) == (m2["id"], m1["model"], "models")
    assert uuids(json_of(network.api.get(url, {"include_self": "true"}))) == uuids([m3, m2, m1, m0])
    assert uuids(json_of(network.api.get(url, HTTP_X_LIMIT="2"))) == uuids([m2, m1])
    assert uuids(json_of(network.api.get(url, HTTP_X_REVERSE="true"))) == uuids([m0, m1, m2])
    # include_self puts the model first, then the list is reversed (FEDn's order of operations).
    both = json_of(network.api.get(url, {"include_self": "true"}, HTTP_X_REVERSE="true"))
    assert uuids(both) == uuids([m0, m1, m2, m3])
    by_pk = json_of(network.api.get(f"/api/v1/models/{m3['id']}/ancestors"))
    assert uuids(by_pk) == uuids([m2, m1, m0])
    assert json_of(network.api.get(f"/api/v1/models/{m0['model']}/ancestors")) == []
    assert json_of(network.api.get("/api/v1/models/nope/ancestors"), 404)["success"] is False


def test_model_descendants(network: Network) -> None:
    m0, m1, m2, m3 = model_chain(network, 4)
    url = f"/api/v1/models/{m0['model']}/descendants"
    assert uuids(json_of(network.api.get(url))) == uuids([m3, m2, m1])
    assert uuids(json_of(network.api.get(url, HTTP_X_LIMIT="2"))) == uuids([m2, m1])
    assert json_of(network.api.get(f"/api/v1/models/{m3['model']}/descendants")) == []


def test_model_download_and_parameters(network: Network) -> None:
    layers = [np.arange(4, dtype=np.float32).reshape(2, 2), np.array([7, 8, 9], dtype=np.int64)]
    data = model_bytes(layers)
    seed = network.seed(data)
    response = network.api.get(f"/api/v1/models/{seed['model']}/download")
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert streamed_bytes(response) == data
    assert f'filename="{seed["model"]}"' in response["Content-Disposition"]
    assert sha256(data) == seed["checksum"]
    parameters = json_of(network.api.get(f"/api/v1/models/{seed['id']}/parameters"))
    assert parameters == {"array": [[[0.0, 1.0], [2.0, 3.0]], [7, 8, 9]]}
    assert json_of(network.api.get("/api/v1/models/nope/download"), 404)["success"] is False


def test_active_package(network: Network) -> None:
    assert json_of(network.api.get("/api/v1/packages/active"), 404)["success"] is False
    network.package(name="first")
    second = network.package(name="second")
    active = json_of(network.api.get("/api/v1/packages/active"))
    assert active == second
    assert (active["active"], active["key"], active["name"]) == (True, "active", "second")
    listed = json_of(network.api.get("/api/v1/packages/"))["result"]
    assert [p["key"] for p in listed] == ["active", "package_trail"]


def test_session_create(network: Network) -> None:
    seed = network.seed()
    body = {
        "session_id": "s1",
        "session_config": {
            "aggregator": "fedavg",
            "round_timeout": 60,
            "buffer_size": -1,
            "model_id": seed["model"],
            "delete_models_storage": True,
            "clients_required": 1,
            "validate": False,
            "helper_type": "numpyhelper",
            "rounds": 3,
            "custom_key": {"kept": True},
        },
    }
    created = json_of(network.api.post("/api/v1/sessions/", body, format="json"), 201)
    assert (created["session_id"], created["status"]) == ("s1", "Created")
    config = created["session_config"]
    assert (config["round_timeout"], config["rounds"], config["validate"]) == (60, 3, False)
    assert config["custom_key"] == {"kept": True}
    assert created == json_of(network.api.get("/api/v1/sessions/s1"))
    # Without a session_id the server makes one; the same id twice is refused (0.9.5 took it, §12).
    generated = json_of(
        network.api.post("/api/v1/sessions/", {"session_config": {"rounds": 1}}, format="json"), 201
    )
    assert len(generated["session_id"]) == 36
    again = json_of(network.api.post("/api/v1/sessions/", body, format="json"), 400)
    assert "already exists" in again["message"]
    assert network.api.get("/api/v1/sessions/count").json() == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"round_timeout": "60"}, "session_config.round_timeout must be an integer"),
        ({"buffer_size": 1.5}, "session_config.buffer_size must be an integer"),
        ({"model_id": ""}, "session_config.model_id must be a non-empty string"),
        ({"model_id": "no-such-model"}, "no-such-model"),
        ({"delete_models_storage": "maybe"}, "session_config.delete_models_storage must be a boolean"),
        ({"clients_required": None}, "session_config.clients_required must be an integer"),
        ({"validate": 3}, "session_config.validate must be a boolean"),
        ({"helper_type": 5}, "session_config.helper_type must be a string"),
        ({"aggregator": "nope"}, "session_config.aggregator must be one of"),
    ],
)
def test_session_create_validates_the_config(network: Network, config: dict, message: str) -> None:
    answer = json_of(network.api.post("/api/v1/sessions/", {"session_config": config}, format="json"), 400)
    assert message in answer["message"]
    assert network.api.get("/api/v1/sessions/count").json() == 0


def test_session_start_and_stop(network: Network) -> None:
    network.package()
    network.seed()
    created = network.session("s1")
    start = "/api/v1/sessions/start"
    assert (
        json_of(network.api.post(start, {"session_id": "s1", "rounds": 2}, format="json"), 400)["success"]
        is False
    )
    network.combiner()
    network.client("client-a")
    answer = json_of(network.api.post(start, {"session_id": "s1", "rounds": 2}, format="json"))
    assert answer["message"] == "Session started"
    session = json_of(network.api.get(f"/api/v1/sessions/{created['id']}"))
    assert session["status"] in {"Initialized", "Started"}
    assert session["session_config"]["rounds"] == 2
    # Only a Created session starts; the running one holds the controller.
    assert (
        json_of(network.api.post(start, {"session_id": "s1", "rounds": 2}, format="json"), 400)["success"]
        is False
    )
    stopped = json_of(network.api.post("/api/v1/sessions/s1/stop", {}, format="json"))
    assert stopped["status"] in {"Stopped", "Stopping"}
    assert network.api.get("/api/v1/sessions/s1").json()["status"] == stopped["status"]


def test_session_stop_before_start_and_twice(network: Network) -> None:
    network.session("s1")
    assert json_of(network.api.post("/api/v1/sessions/s1/stop"))["status"] == "Stopped"
    assert "already ended" in json_of(network.api.post("/api/v1/sessions/s1/stop"), 400)["message"]
    assert json_of(network.api.post("/api/v1/sessions/nope/stop"), 404)["success"] is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rounds": 1}, "session_id"),
        ({"session_id": "s1", "rounds": "two"}, "rounds"),
        ({"session_id": "s1", "rounds": 0}, "rounds"),
    ],
)
def test_session_start_rejects_bad_bodies(network: Network, body: dict, message: str) -> None:
    network.session("s1")
    answer = json_of(network.api.post("/api/v1/sessions/start", body, format="json"), 400)
    assert message in answer["message"]
    assert network.api.get("/api/v1/sessions/s1").json()["status"] == "Created"


def test_session_start_unknown_session_is_404(network: Network) -> None:
    answer = json_of(
        network.api.post("/api/v1/sessions/start", {"session_id": "x", "rounds": 1}, format="json"), 404
    )
    assert "x" in answer["message"]


def test_combiner_reports_client_transitions(network: Network) -> None:
    network.package()
    network.combiner("combiner-1")
    network.combiner("combiner-2", address="c2.local")
    network.client("client-a", combiner="combiner-1")
    url = "/api/v1/combiners/combiner-1/clients"
    batch = {
        "clients": [
            {"name": "client-a", "status": "offline", "last_seen": "2024-05-22T12:00:00Z"},
            {"name": "client-new", "status": "online"},
        ]
    }
    assert json_of(network.api.post(url, batch, format="json")) == {"updated": 2}
    assert network.api.get("/api/v1/clients/client-a").json()["status"] == "offline"
    new = network.api.get("/api/v1/clients/client-new").json()
    assert (new["status"], new["combiner"]) == ("online", "combiner-1")
    # A stale "offline" from a combiner the client has left is ignored.
    network.api.post(
        "/api/v1/combiners/combiner-2/clients",
        {"clients": [{"name": "client-new", "status": "online"}]},
        format="json",
    )
    network.api.post(url, {"clients": [{"name": "client-new", "status": "offline"}]}, format="json")
    assert network.api.get("/api/v1/clients/client-new").json()["status"] == "online"
    assert (
        json_of(network.api.post("/api/v1/combiners/nope/clients", batch, format="json"), 404)["success"]
        is False
    )
    bad = json_of(network.api.post(url, {"clients": [{"name": "x", "status": "asleep"}]}, format="json"), 400)
    assert "status" in bad["message"]


def test_round_reports(network: Network) -> None:
    network.session("s1")
    round_doc = network.round("s1")
    report = {
        "participants": ["client-a"],
        "model_id": "b2a7c1e0-0000-4000-8000-000000000001",
        "timings": {"time_combination": 1.5},
        "data": {"nr_aggregated_models": 1},
        "config": {"round_id": round_doc["round_id"], "session_id": "s1"},
    }
    response = network.report(round_doc["round_id"], "combiner-1", **report)
    assert json_of(response, 201) == {"accepted": True}
    stored = json_of(network.api.get(f"/api/v1/rounds/{round_doc['round_id']}"))["combiners"]
    assert [(r["name"], r["num_examples"], r["participants"]) for r in stored] == [
        ("combiner-1", 10, ["client-a"])
    ]
    again = json_of(network.report(round_doc["round_id"], "combiner-1"), 409)
    assert "already reported" in again["message"]
    assert json_of(network.report("999", "combiner-1"), 404)["success"] is False
    bad = json_of(network.report(round_doc["round_id"], "combiner-2", status="Maybe"), 400)
    assert "status" in bad["message"]


def test_report_on_a_closed_round_is_409(network: Network) -> None:
    from apps.sessions.models import Round

    network.session("s1")
    round_doc = network.round("s1")
    Round.objects.filter(round_id=round_doc["round_id"]).update(status="Success")
    assert (
        "takes no more reports"
        in json_of(network.report(round_doc["round_id"], "combiner-1"), 409)["message"]
    )


def test_statuses_and_validations_posted_one_or_many(network: Network) -> None:
    one = json_of(network.api.post("/api/v1/statuses/", status_doc(), format="json"), 201)
    assert one == {"created": 1}
    network.statuses(status_doc(type=1), status_doc(logLevel=3, status="typed by number"))
    docs = json_of(network.api.get("/api/v1/statuses/", HTTP_X_SORT_ORDER="asc"))["result"]
    assert [d["type"] for d in docs].count("MODEL_UPDATE_REQUEST") == 1
    raw = json_of(network.api.get(f"/api/v1/statuses/{docs[0]['id']}", HTTP_X_SKIP_TYPING="true"))
    assert set(raw) >= {"sessionId", "logLevel", "correlationId"}
    assert json_of(network.api.post("/api/v1/validations/", validation_doc(), format="json"), 201) == {
        "created": 1
    }
    validation = json_of(network.api.get("/api/v1/validations/"))["result"][0]
    assert (validation["model_id"], validation["session_id"]) == ("model-a", "session-a")
    assert validation["receiver"] == {"name": "combiner-1", "role": "COMBINER"}
