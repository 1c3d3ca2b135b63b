"""FEDn 0.9.5's NetworkAPITests, against the real views and database, plus the rest of its flat routes.

FEDn's own tests mock the API object and only check that the route passes its arguments on; these
assert the response shapes and values of spec §1.2 on a network built through the routes.
"""

import re
from typing import Any

import pytest
from django.conf import settings

from .factories import Network, model_bytes, package_bytes, sha256, status_doc, streamed_bytes, upload

pytestmark = pytest.mark.django_db

HTTP_DATE = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")
PLAIN_DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def ok_json(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    return response.json()


# ---------------------------------------------------------------- NetworkAPITests


def test_add_client(network: Network) -> None:
    network.package(helper="numpyhelper")
    network.combiner("combiner-1", address="combiner-1.local", port=12080)
    answer = ok_json(
        network.api.post("/add_client", {"client_id": "client-a", "preferred_combiner": False}, format="json")
    )
    assert answer == {
        "status": "assigned",
        "host": "combiner-1.local",
        "fqdn": None,
        "package": "remote",
        "ip": "127.0.0.1",
        "port": 12080,
        "certificate": None,
        "helper_type": "numpyhelper",
    }
    client = ok_json(network.api.get("/api/v1/clients/client-a"))
    assert client["combiner"] == "combiner-1"
    assert client["status"] == "available"


def test_add_client_without_package_asks_to_retry(network: Network) -> None:
    network.combiner()
    answer = ok_json(
        network.api.post("/add_client", {"client_id": "c", "preferred_combiner": False}, format="json"), 203
    )
    assert answer == {
        "success": False,
        "status": "retry",
        "message": "No compute package found. Set package in controller.",
    }


def test_add_client_preferred_and_unknown_combiner(network: Network) -> None:
    network.package()
    network.combiner("combiner-1")
    network.combiner("combiner-2", address="c2.local")
    answer = ok_json(
        network.api.post("/add_client", {"client_id": "c", "preferred_combiner": "combiner-2"}, format="json")
    )
    assert answer["host"] == "c2.local"
    refused = ok_json(
        network.api.post("/add_client", {"client_id": "d", "preferred_combiner": "nope"}, format="json"), 400
    )
    assert refused["success"] is False
    assert "nope" in refused["message"]


def test_add_client_spreads_clients_over_combiners(network: Network) -> None:
    network.package()
    network.combiner("combiner-1")
    network.combiner("combiner-2", address="c2.local")
    network.client("a")
    network.client("b")
    assert {network.client_combiner("a"), network.client_combiner("b")} == {"combiner-1", "combiner-2"}


def test_add_combiner(network: Network) -> None:
    body = {
        "combiner_id": "combiner-1",
        "address": "c1.local",
        "fqdn": None,
        "port": 12080,
        "secure_grpc": False,
    }
    answer = ok_json(network.api.post("/add_combiner", body, format="json"))
    assert answer["success"] is True
    assert answer["status"] == "added"
    assert answer["message"] == "Combiner added successfully."
    assert {"storage", "statestore", "certificate", "key"} <= set(answer)
    assert answer["certificate"] is None
    assert answer["statestore"]["network_id"] == settings.FEDPLANE_NETWORK_ID
    combiner = ok_json(network.api.get("/api/v1/combiners/combiner-1"))
    assert (combiner["address"], combiner["port"], combiner["ip"]) == ("c1.local", 12080, "127.0.0.1")
    # Announcing again updates the same combiner (FEDn upserts by name).
    body["port"] = 12090
    ok_json(network.api.post("/add_combiner", body, format="json"))
    assert network.api.get("/api/v1/combiners/count").json() == 1
    assert network.api.get("/api/v1/combiners/combiner-1").json()["port"] == 12090


def test_get_active_clients(populated: Network) -> None:
    # 0.9.5 always answered 500 here (§12); fedplane lists the combiner's online clients.
    answer = ok_json(populated.api.get("/get_active_clients", {"combiner": "combiner-1"}))
    assert answer["count"] == 1
    assert [client["name"] for client in answer["result"]] == ["client-a"]
    assert answer["result"][0]["status"] == "online"
    assert ok_json(populated.api.get("/get_active_clients"), 400)["message"] == "Missing combiner name."
    assert ok_json(populated.api.get("/get_active_clients", {"combiner": "x"}), 404)["success"] is False


def test_get_client_config(network: Network) -> None:
    package = network.package()
    answer = ok_json(network.api.get("/get_client_config"))
    assert answer == {
        "network_id": settings.FEDPLANE_NETWORK_ID,
        "discover_host": settings.FEDPLANE_CONTROLLER_HOST,
        "discover_port": settings.FEDPLANE_CONTROLLER_PORT,
        "checksum": sha256(network.uploaded_packages[package["id"]]),
    }
    assert "checksum" not in ok_json(network.api.get("/get_client_config", {"checksum": "false"}))
    assert "checksum" in ok_json(network.api.get("/get_client_config", {"checksum": "anything"}))


def test_get_combiner(network: Network) -> None:
    network.combiner("combiner-1", address="c1.local", port=12080)
    answer = ok_json(network.api.get("/get_combiner", {"combiner": "combiner-1"}))
    assert list(answer) == ["combiner-1"]
    entry = answer["combiner-1"]
    assert set(entry) == {"address", "fqdn", "parent_reducer", "port", "updated_at"}
    assert (entry["address"], entry["fqdn"], entry["port"], entry["parent_reducer"]) == (
        "c1.local",
        None,
        12080,
        "api",
    )
    assert PLAIN_DATE.match(entry["updated_at"])
    assert ok_json(network.api.get("/get_combiner"), 400)["success"] is False
    # 0.9.5 answered an unknown name with 500 (§12).
    assert ok_json(network.api.get("/get_combiner", {"combiner": "nope"}), 404)["success"] is False


def test_get_controller_status(api: Any) -> None:
    assert ok_json(api.get("/get_controller_status")) == {"state": "idle"}


def test_get_status(api: Any) -> None:
    # FEDn's test_get_status calls /get_controller_status; the state is one of FEDn's four values.
    assert ok_json(api.get("/get_controller_status"))["state"] in {
        "setup",
        "idle",
        "instructing",
        "monitoring",
    }


def test_get_events(populated: Network) -> None:
    answer = ok_json(populated.api.get("/get_events"))
    assert answer["count"] == 2
    first = answer["result"][0]
    assert set(first) == {
        "sender",
        "status",
        "logLevel",
        "data",
        "correlationId",
        "timestamp",
        "type",
        "extra",
        "sessionId",
    }
    assert RFC3339.match(first["timestamp"])
    only_b = ok_json(populated.api.get("/get_events", {"sender.name": "client-b"}))
    assert only_b["count"] == 1
    assert only_b["result"][0]["sender"] == {"name": "client-b", "role": "COMBINER"}
    assert ok_json(populated.api.get("/get_events", {"sessionId": "session-b"}))["count"] == 1
    paged = ok_json(populated.api.get("/get_events", {"limit": "1", "skip": "1"}))
    assert (paged["count"], len(paged["result"])) == (2, 1)
    assert paged["result"][0] == answer["result"][1]


def test_get_events_newest_first(network: Network) -> None:
    network.statuses(status_doc(timestamp="2024-01-01T00:00:00Z", status="old"))
    network.statuses(status_doc(timestamp="2024-06-01T00:00:00Z", status="new"))
    assert [e["status"] for e in network.api.get("/get_events").json()["result"]] == ["new", "old"]


def test_get_initial_model(network: Network) -> None:
    assert ok_json(network.api.get("/get_initial_model")) == {"model_id": None}
    seed = network.seed()
    network.child_model(seed["model"], "s")
    assert ok_json(network.api.get("/get_initial_model")) == {"model_id": seed["model"]}


def test_get_latest_model(network: Network) -> None:
    assert ok_json(network.api.get("/get_latest_model")) == {
        "success": False,
        "message": "No initial model set.",
    }
    seed = network.seed()
    assert ok_json(network.api.get("/get_latest_model")) == {"model_id": seed["model"]}
    child = network.child_model(seed["model"], "s")
    assert ok_json(network.api.get("/get_latest_model")) == {"model_id": child["model"]}


def test_get_model_trail(network: Network) -> None:
    assert ok_json(network.api.get("/get_model_trail")) == {
        "success": False,
        "message": "No model trail available.",
    }
    seed = network.seed()
    child = network.child_model(seed["model"], "s")
    trail = ok_json(network.api.get("/get_model_trail"))
    assert list(trail) == [seed["model"], child["model"]]
    assert all(isinstance(value, str) and value for value in trail.values())


def test_get_package(network: Network) -> None:
    assert ok_json(network.api.get("/get_package"), 404) == {
        "success": False,
        "message": "No compute package found.",
    }
    package = network.package(name="digits", description="a test package", file_name="digits.tgz")
    answer = ok_json(network.api.get("/get_package"))
    assert {"id", "file_name", "helper", "committed_at", "storage_file_name", "name", "description"} <= set(
        answer
    )
    assert answer["id"] == package["id"]
    assert answer["file_name"] == "digits.tgz"
    assert answer["storage_file_name"] == f"{package['id']}.tgz"
    assert (answer["helper"], answer["name"], answer["description"]) == (
        "numpyhelper",
        "digits",
        "a test package",
    )
    assert HTTP_DATE.match(answer["committed_at"])


def test_get_round(populated: Network) -> None:
    answer = ok_json(populated.api.get("/get_round", {"round_id": "1"}))
    assert answer["round_id"] == "1"
    assert [report["name"] for report in answer["combiners"]] == ["combiner-1"]
    assert answer["combiners"][0]["status"] == "Success"
    assert ok_json(populated.api.get("/get_round"), 400)["success"] is False
    assert ok_json(populated.api.get("/get_round", {"round_id": "99"})) == {
        "success": False,
        "message": "Round not found.",
    }


def test_list_clients(populated: Network) -> None:
    answer = ok_json(populated.api.get("/list_clients"))
    assert answer["count"] == 3
    assert {c["id"] for c in answer["result"]} == {"client-a", "client-b", "client-c"}
    for client in answer["result"]:
        assert set(client) == {"id", "combiner", "combiner_preferred", "ip", "status", "last_seen"}
    online = ok_json(populated.api.get("/list_clients", {"status": "online"}))
    assert {c["id"] for c in online["result"]} == {"client-a", "client-c"}
    page = ok_json(populated.api.get("/list_clients", {"limit": "2", "skip": "0"}))
    assert (page["count"], len(page["result"])) == (3, 2)


def test_list_combiners(populated: Network) -> None:
    answer = ok_json(populated.api.get("/list_combiners"))
    assert answer["count"] == 2
    assert {c["name"] for c in answer["result"]} == {"combiner-1", "combiner-2"}
    assert all(set(c) == {"name", "updated_at"} for c in answer["result"])
    page = ok_json(populated.api.get("/list_combiners", {"limit": "1", "skip": "1"}))
    assert (page["count"], len(page["result"])) == (2, 1)


def test_list_compute_packages(network: Network) -> None:
    assert ok_json(network.api.get("/list_compute_packages"), 404)["success"] is False
    first = network.package(name="first")
    second = network.package(name="second")
    answer = ok_json(network.api.get("/list_compute_packages"))
    assert answer["count"] == 2
    assert [p["id"] for p in answer["result"]] == [second["id"], first["id"]]
    assert "active" not in answer["result"][0]
    with_active = ok_json(network.api.get("/list_compute_packages", {"include_active": "true"}))
    assert [p["active"] for p in with_active["result"]] == [True, False]


def test_list_models(network: Network) -> None:
    seed = network.seed()
    child = network.child_model(seed["model"], "session-a")
    answer = ok_json(network.api.get("/list_models"))
    assert answer["count"] == 2
    assert [m["model"] for m in answer["result"]] == [child["model"], seed["model"]]
    assert set(answer["result"][0]) == {"committed_at", "model", "session_id"}
    by_session = ok_json(network.api.get("/list_models", {"session_id": "session-a"}))
    assert [m["model"] for m in by_session["result"]] == [child["model"]]
    with_active = ok_json(network.api.get("/list_models", {"include_active": "true"}))
    assert [m["active"] for m in with_active["result"]] == [True, False]
    page = ok_json(network.api.get("/list_models", {"limit": "1", "skip": "1"}))
    assert [m["model"] for m in page["result"]] == [seed["model"]]


def test_list_rounds(populated: Network) -> None:
    answer = ok_json(populated.api.get("/list_rounds"))
    assert list(answer) == ["1", "2"]
    assert set(answer["1"]) == {"reducer", "combiners"}
    assert answer["1"]["combiners"][0]["name"] == "combiner-1"
    assert answer["2"]["combiners"] == []


def test_list_sessions(network: Network) -> None:
    network.seed()
    network.session("session-a")
    network.session("session-b")
    answer = ok_json(network.api.get("/list_sessions"))
    assert answer["count"] == 2
    assert {s["session_id"] for s in answer["result"]} == {"session-a", "session-b"}
    # Every session, v1-created included, lists (0.9.5 crashed on v1 sessions, §12).
    assert all(s["aggregator"] == "fedavg" for s in answer["result"])
    page = ok_json(network.api.get("/list_sessions", {"limit": "1", "skip": "0"}))
    assert (page["count"], len(page["result"])) == (2, 1)


def test_set_initial_model(network: Network) -> None:
    data = model_bytes()
    answer = ok_json(
        network.api.post("/set_initial_model", {"file": upload("seed.npz", data)}, format="multipart")
    )
    assert answer == {"success": True, "message": "Initial model added successfully."}
    latest = network.api.get("/get_latest_model").json()["model_id"]
    model = ok_json(network.api.get(f"/api/v1/models/{latest}"))
    assert model["parent_model"] is None
    assert model["session_id"] is None
    assert model["checksum"] == sha256(data)
    # A seed uploaded by FEDn 0.9.5's numpyhelper is compressed; it is accepted as well.
    compressed = model_bytes(compressed=True)
    ok_json(
        network.api.post("/set_initial_model", {"file": upload("seed.npz", compressed)}, format="multipart")
    )
    assert network.api.get("/api/v1/models/count").json() == 2


def test_start_session(network: Network) -> None:
    network.package()
    seed = network.seed()
    network.combiner()
    network.client("client-a")
    # FEDn's own test body: a float round_timeout and only some keys.
    body = {"session_id": "test", "round_timeout": float(60), "rounds": 1, "round_buffer_size": -1}
    answer = ok_json(network.api.post("/start_session", body, format="json"))
    assert answer["success"] is True
    assert answer["message"] == "Session started successfully."
    config = answer["config"]
    assert config["session_id"] == "test"
    assert (config["rounds"], config["round_timeout"], config["buffer_size"]) == (1, 60, -1)
    assert (config["aggregator"], config["clients_required"], config["clients_requested"]) == ("fedavg", 1, 8)
    assert (config["delete_models_storage"], config["validate"], config["helper_type"]) == (
        True,
        True,
        "numpyhelper",
    )
    session = ok_json(network.api.get("/api/v1/sessions/test"))
    assert session["status"] in {"Initialized", "Started"}
    assert session["session_config"]["model_id"] == seed["model"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("nothing", "No compute package"),
        ("package", "No initial model"),
        ("package+seed", "Not enough clients"),
    ],
)
def test_start_session_preconditions(network: Network, setup: str, message: str) -> None:
    if "package" in setup:
        network.package()
    if "seed" in setup:
        network.seed()
    answer = ok_json(network.api.post("/start_session", {"session_id": "s", "min_clients": 1}, format="json"))
    assert answer["success"] is False
    assert message in answer["message"]
    assert network.api.get("/api/v1/sessions/count").json() == 0


def test_start_session_twice_refuses_the_same_id(network: Network) -> None:
    network.package()
    network.seed()
    network.combiner()
    network.client("client-a")
    assert network.api.post("/start_session", {"session_id": "s"}, format="json").json()["success"] is True
    again = ok_json(network.api.post("/start_session", {"session_id": "s"}, format="json"))
    assert again == {"success": False, "message": "Session already exists."}


# ---------------------------------------------------------------- the rest of §1.2


def test_health(api: Any) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    assert response.content == b"OK"


def test_download_package_and_checksum(network: Network) -> None:
    data = package_bytes({"train.py": b"x" * 5000})
    package = network.package(data, file_name="my-package.tar.gz")
    response = network.api.get("/download_package")
    assert response.status_code == 200
    body = streamed_bytes(response)
    assert body == data
    assert response["Content-Disposition"] == f'attachment; filename="{package["id"]}.tar.gz"'
    checksum = ok_json(network.api.get("/get_package_checksum"))
    assert checksum == {"checksum": sha256(body)}
    # By name, as 0.9.5 clients may ask (that crashed with 500 in 0.9.5, §12).
    by_name = network.api.get("/download_package", {"name": package["storage_file_name"]})
    assert streamed_bytes(by_name) == data
    assert (
        ok_json(network.api.get("/get_package_checksum", {"name": package["storage_file_name"]})) == checksum
    )


def test_download_package_without_package(api: Any) -> None:
    assert ok_json(api.get("/download_package"), 404)["success"] is False
    assert ok_json(api.get("/get_package_checksum"), 404)["success"] is False


def test_set_active_package(network: Network) -> None:
    first = network.package(name="first")
    network.package(name="second")
    assert ok_json(network.api.put(f"/set_active_package?id={first['id']}")) == {
        "success": True,
        "message": "Compute package set.",
    }
    assert network.api.get("/get_package").json()["id"] == first["id"]
    assert network.api.get("/api/v1/packages/active").json()["name"] == "first"
    failed = ok_json(network.api.put("/set_active_package?id=nope"), 400)
    assert failed == {"success": False, "message": "Failed to set compute package."}


def test_set_current_model(network: Network) -> None:
    seed = network.seed()
    child = network.child_model(seed["model"], "s")
    assert ok_json(network.api.put(f"/set_current_model?id={seed['model']}")) == {
        "success": True,
        "message": "Active model set.",
    }
    assert network.api.get("/get_latest_model").json() == {"model_id": seed["model"]}
    assert network.api.get(f"/api/v1/models/{child['model']}").json()["active"] is False
    assert ok_json(network.api.put("/set_current_model"), 400)["message"] == "Missing model id."
    unknown = ok_json(network.api.put(f"/set_current_model?id={child['id']}0000"), 400)
    assert unknown["message"] == "Failed to set active model."


def test_get_model(network: Network) -> None:
    seed = network.seed()
    child = network.child_model(seed["model"], "session-a")
    answer = ok_json(network.api.get("/get_model", {"model": child["model"]}))
    assert set(answer) == {"committed_at", "parent_model", "model", "session_id"}
    assert (answer["model"], answer["parent_model"], answer["session_id"]) == (
        child["model"],
        seed["model"],
        "session-a",
    )
    assert ok_json(network.api.get("/get_model"), 400) == {"success": False, "message": "Missing model id."}
    assert ok_json(network.api.get("/get_model", {"model": "nope"}), 404) == {
        "success": False,
        "message": "No model found.",
    }


def _chain(network: Network, length: int) -> list[dict]:
    models = [network.seed()]
    for _ in range(length - 1):
        models.append(network.child_model(models[-1]["model"], "session-a"))
    return models


def test_get_model_ancestors(network: Network) -> None:
    m0, m1, m2, m3 = _chain(network, 4)
    answer = ok_json(network.api.get("/get_model_ancestors", {"model": m3["model"]}))
    assert [a["model"] for a in answer["result"]] == [m2["model"], m1["model"], m0["model"]]
    assert set(answer["result"][0]) == {"model", "committed_at", "session_id", "parent_model"}
    assert answer["result"][0]["parent_model"] == m1["model"]
    limited = ok_json(network.api.get("/get_model_ancestors", {"model": m3["model"], "limit": "2"}))
    assert [a["model"] for a in limited["result"]] == [m2["model"], m1["model"]]
    assert ok_json(network.api.get("/get_model_ancestors"))["success"] is False
    assert ok_json(network.api.get("/get_model_ancestors", {"model": m0["model"]}))["success"] is False


def test_get_model_descendants(network: Network) -> None:
    m0, m1, m2, m3 = _chain(network, 4)
    answer = ok_json(network.api.get("/get_model_descendants", {"model": m0["model"]}))
    # Reversed, as in FEDn: the farthest descendant first.
    assert [d["model"] for d in answer["result"]] == [m3["model"], m2["model"], m1["model"]]
    limited = ok_json(network.api.get("/get_model_descendants", {"model": m0["model"], "limit": "2"}))
    assert [d["model"] for d in limited["result"]] == [m2["model"], m1["model"]]
    assert ok_json(network.api.get("/get_model_descendants", {"model": m3["model"]}))["success"] is False


def test_list_validations(populated: Network) -> None:
    answer = ok_json(populated.api.get("/list_validations"))
    assert len(answer) == 2
    for doc in answer.values():
        assert set(doc) == {"model_id", "data", "timestamp", "meta", "sender", "receiver"}
    only_c = ok_json(populated.api.get("/list_validations", {"sender.name": "client-c"}))
    assert [doc["model_id"] for doc in only_c.values()] == ["model-b"]
    assert len(ok_json(populated.api.get("/list_validations", {"modelId": "model-b"}))) == 1


def test_list_combiners_data(populated: Network) -> None:
    answer = ok_json(
        populated.api.post("/list_combiners_data", {"combiners": ["combiner-1", "combiner-2"]}, format="json")
    )
    assert answer == {
        "result": [{"combiner": "combiner-1", "count": 1}, {"combiner": "combiner-2", "count": 1}]
    }
    every = ok_json(populated.api.post("/list_combiners_data", {"combiners": None}, format="json"))
    assert sorted((r["combiner"], r["count"]) for r in every["result"]) == [
        ("combiner-1", 2),
        ("combiner-2", 1),
    ]
    assert (
        ok_json(populated.api.post("/list_combiners_data", {"combiners": "x"}, format="json"), 400)["success"]
        is False
    )


def test_get_plot_data(populated: Network) -> None:
    answer = ok_json(populated.api.get("/get_plot_data"))
    assert answer["valid_metrics"] == ["accuracy", "loss"]
    assert '"box"' in answer["box_plot"]
    loss = ok_json(populated.api.get("/get_plot_data", {"feature": "loss"}))
    assert '"loss"' in loss["box_plot"]
    assert ok_json(populated.api.get("/get_plot_data", {"feature": "nope"}), 404)["success"] is False


def test_get_plot_data_without_validations(api: Any) -> None:
    assert ok_json(api.get("/get_plot_data")) == {"valid_metrics": [], "box_plot": None}


@pytest.mark.parametrize("method", ["get", "post"])
def test_delete_model_trail_is_not_implemented(api: Any, method: str) -> None:
    assert ok_json(getattr(api, method)("/delete_model_trail"), 501) == {"message": "Not implemented"}


def test_get_session(network: Network) -> None:
    seed = network.seed()
    network.session("session-a", model_id=seed["model"])
    answer = ok_json(network.api.get("/get_session", {"session_id": "session-a"}))
    assert set(answer) == {"session-a", "status"}
    assert answer["status"] == "Created"
    assert answer["session-a"]["session_id"] == "session-a"
    assert answer["session-a"]["model_id"] == seed["model"]
    assert ok_json(network.api.get("/get_session"), 400)["success"] is False
    assert ok_json(network.api.get("/get_session", {"session_id": "nope"}), 404) == {
        "success": False,
        "message": "Session nope not found.",
    }


def test_legacy_routes_answer_with_and_without_trailing_slash(api: Any) -> None:
    assert api.get("/get_controller_status/").json() == {"state": "idle"}
    assert api.get("/get_controller_status").json() == {"state": "idle"}
