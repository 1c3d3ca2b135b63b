"""FEDn 0.9.5's own APIClient against a live fedplane controller, compared with fedplane's.

FEDn's client runs in the .fedn095 venv (scripts/fedn_venv.sh) through `fedn_driver.py`; both
clients make the same calls on the same data and must get the same answers. The one intended
difference: where the server answers an error status, FEDn 0.9.5 returns the JSON body and
fedplane raises `APIError` carrying that body's message.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedplane import APIClient
from fedplane.api_client import APIError
from tests.sdk.network import SESSION_ID, Network, build_network, package_archive, seed_model

REPO = Path(__file__).resolve().parents[2]
FEDN_PYTHON = REPO / ".fedn095" / "bin" / "python"
DRIVER = Path(__file__).with_name("fedn_driver.py")
DRIVER_TIMEOUT_SECONDS = 120

# The live server listens on the loopback address only.
os.environ.setdefault("DJANGO_LIVE_TEST_SERVER_ADDRESS", "127.0.0.1")

pytestmark = [
    pytest.mark.compat,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not FEDN_PYTHON.exists(), reason=f"{FEDN_PYTHON} is missing: run scripts/fedn_venv.sh to create it"
    ),
]

Call = dict[str, Any]


def call(method: str, *args: Any, **kwargs: Any) -> Call:
    return {"method": method, "args": list(args), "kwargs": kwargs}


def run_fedn(network: Network, calls: list[Call]) -> list[dict[str, Any]]:
    plan = json.dumps({"host": network.host, "port": network.port, "calls": calls})
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEDN_")}
    done = subprocess.run(
        [str(FEDN_PYTHON), str(DRIVER)],
        input=plan,
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT_SECONDS,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def run_fedplane(api: APIClient, calls: list[Call]) -> list[dict[str, Any]]:
    answers = []
    for planned in calls:
        try:
            result = getattr(api, planned["method"])(*planned["args"], **planned["kwargs"])
            # Through JSON, as the driver's answers come, so tuples and lists compare alike.
            answers.append({"result": json.loads(json.dumps(result))})
        except APIError as exc:
            answers.append({"api_error": exc.message, "status": exc.status_code})
    return answers


def assert_same(calls: list[Call], fedn: list[dict[str, Any]], ours: list[dict[str, Any]]) -> None:
    assert len(fedn) == len(ours) == len(calls)
    for planned, theirs, mine in zip(calls, fedn, ours, strict=True):
        label = f"{planned['method']}({planned['args']}, {planned['kwargs']})"
        assert "error" not in theirs, f"FEDn 0.9.5 failed on {label}: {theirs['error']}"
        if "api_error" in mine:
            # FEDn hands back the error body; it must carry the message fedplane raised.
            assert isinstance(theirs["result"], dict), label
            assert theirs["result"].get("message") == mine["api_error"], label
        else:
            assert theirs["result"] == mine["result"], label


@pytest.fixture
def network(live_server: Any, fs_storage: Any, tmp_path: Path, transactional_db: None) -> Network:
    return build_network(live_server.url, tmp_path)


@pytest.fixture
def api(network: Network, monkeypatch: pytest.MonkeyPatch) -> Iterator[APIClient]:
    for key in ("FEDN_AUTH_TOKEN", "FEDN_AUTH_SCHEME"):
        monkeypatch.delenv(key, raising=False)
    with APIClient(network.host, network.port) as client:
        yield client


def test_read_methods_answer_alike(network: Network, api: APIClient, tmp_path: Path) -> None:
    client_id = api.get_clients()["result"][0]["id"]
    first_model = network.session_model_ids[0]
    calls = [
        call("get_client", client_id),
        call("get_clients"),
        call("get_clients", n_max=2),
        call("get_clients_count"),
        call("get_client_config"),
        call("get_client_config", checksum=False),
        call("get_active_clients"),
        call("get_active_clients", "combiner-a", 1),
        call("get_active_clients", combiner_id="combiner-b"),
        call("get_combiner", "combiner-a"),
        call("get_combiners"),
        call("get_combiners", n_max=1),
        call("get_combiners_count"),
        call("get_controller_status"),
        call("get_model", first_model),
        call("get_models"),
        call("get_models", session_id=SESSION_ID, n_max=1),
        call("get_models_count"),
        call("get_active_model"),
        call("get_model_trail"),
        call("get_model_trail", first_model, include_self=False, reverse=False, n_max=5),
        call("get_package", network.package_ids[0]),
        call("get_packages"),
        call("get_packages", n_max=1),
        call("get_packages_count"),
        call("get_active_package"),
        call("get_package_checksum"),
        call("get_round", "1"),
        call("get_rounds"),
        call("get_rounds", n_max=1),
        call("get_rounds_count"),
        call("get_session", SESSION_ID),
        call("get_sessions"),
        call("get_sessions", n_max=1),
        call("get_sessions_count"),
        call("get_session_status", SESSION_ID),
        call("session_is_finished", SESSION_ID),
        call("get_status", network.status_ids[0]),
        call("get_statuses"),
        call("get_statuses", session_id=SESSION_ID, event_type="MODEL_UPDATE", sender_name="client-1"),
        call("get_statuses", sender_role="WORKER", n_max=1),
        call("get_statuses_count"),
        call("get_validation", network.validation_ids[0]),
        call("get_validations"),
        call("get_validations", session_id=SESSION_ID, model_id=first_model, sender_name="client-2"),
        call(
            "get_validations",
            correlation_id="val-1-client-1",
            receiver_name="combiner-a",
            receiver_role="COMBINER",
        ),
        call("get_validations", sender_role="WORKER", n_max=3),
        call("get_validations_count"),
        # Errors: FEDn returns the body, fedplane raises with its message.
        call("get_model", "no-such-model"),
        call("get_session", "no-such-session"),
        call("get_combiner", "no-such-combiner"),
    ]
    fedn, ours = run_fedn(network, calls), run_fedplane(api, calls)
    assert_same(calls, fedn, ours)
    # The comparison is about real data, not two empty answers.
    assert ours[1]["result"]["count"] == 3
    assert [m["model"] for m in ours[19]["result"]] == [network.seed_model_id, *network.session_model_ids]
    assert ours[36]["result"] is True
    assert ours[39]["result"]["count"] == 2  # client-1, one update per round


def test_downloads_write_the_same_bytes(network: Network, api: APIClient, tmp_path: Path) -> None:
    model = network.session_model_ids[-1]
    theirs, mine = tmp_path / "fedn", tmp_path / "ours"
    theirs.mkdir()
    mine.mkdir()
    calls = [
        call("download_model", model, str(theirs / "m.npz")),
        call("download_package", str(theirs / "p.tgz")),
    ]
    fedn = run_fedn(network, calls)
    ours = run_fedplane(
        api,
        [call("download_model", model, str(mine / "m.npz")), call("download_package", str(mine / "p.tgz"))],
    )
    assert_same(calls, fedn, ours)
    assert (theirs / "m.npz").read_bytes() == (mine / "m.npz").read_bytes() == network.seed_bytes
    assert (theirs / "p.tgz").read_bytes() == (mine / "p.tgz").read_bytes() == network.package_bytes


def test_writes_answer_alike(
    network: Network, api: APIClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.sessions import steps

    # Sessions started here are only recorded: no orchestration picks them up.
    monkeypatch.setattr(steps.session_advance, "delay", lambda *args, **kwargs: None)
    for who in ("fedn", "ours"):
        (tmp_path / f"{who}.tgz").write_bytes(package_archive(who))
        (tmp_path / f"{who}.npz").write_bytes(seed_model())

    def plan(who: str) -> list[Call]:
        return [
            call(
                "set_active_package",
                str(tmp_path / f"{who}.tgz"),
                "numpyhelper",
                name=who,
                description="compat",
            ),
            call("set_active_model", str(tmp_path / f"{who}.npz")),
            call("start_session", id=f"{who}-refused", min_clients=50),
        ]

    fedn = run_fedn(network, plan("fedn"))
    ours = run_fedplane(api, plan("ours"))
    assert_same(plan("fedn"), fedn, ours)
    assert api.get_packages_count() == 4
    assert api.get_models_count() == 5
    assert api.get_active_package()["name"] == "ours"
    assert ours[2]["result"] == {
        "success": False,
        "message": "Not enough clients available to start session.",
    }

    # A session FEDn 0.9.5's client starts is stored with its twelve arguments mapped.
    started = run_fedn(
        network,
        [call("start_session", id="fedn-session", rounds=2, round_timeout=30, min_clients=2, validate=False)],
    )
    assert started[0]["result"]["success"] is True, started
    session = api.get_session("fedn-session")
    config = session["session_config"]
    assert session["status"] in {"Initialized", "Started"}
    assert (config["rounds"], config["round_timeout"], config["clients_required"], config["validate"]) == (
        2,
        30,
        2,
        False,
    )
    assert (config["aggregator"], config["helper_type"], config["buffer_size"]) == (
        "fedavg",
        "numpyhelper",
        -1,
    )
    assert config["model_id"] == api.get_active_model()["model"]
