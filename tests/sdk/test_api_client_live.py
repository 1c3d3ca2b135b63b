"""fedplane's APIClient and `fedplane` command against a live controller with real data."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedplane import APIClient
from fedplane.api_client import APIError
from fedplane.cli import EXIT_OK, EXIT_SERVER_ERROR, main

from .network import CLIENTS, COMBINERS, ONLINE_CLIENTS, SESSION_ID, Network, package_archive, seed_model

pytestmark = pytest.mark.django_db(transaction=True)


# --- clients --- #


def test_clients(api: APIClient, network: Network) -> None:
    listed = api.get_clients()
    assert listed["count"] == len(CLIENTS) == api.get_clients_count()
    assert {c["name"] for c in listed["result"]} == set(CLIENTS)
    assert len(api.get_clients(n_max=1)["result"]) == 1

    one = next(c for c in listed["result"] if c["name"] == "client-3")
    client = api.get_client(one["id"])
    assert (client["name"], client["combiner"], client["status"]) == ("client-3", "combiner-b", "available")

    config = api.get_client_config()
    assert config["checksum"] == hashlib.sha256(network.package_bytes).hexdigest()
    assert {"network_id", "discover_host", "discover_port"} <= set(config)
    assert "checksum" not in api.get_client_config(checksum=False)


def test_get_active_clients(api: APIClient, network: Network) -> None:
    online = api.get_active_clients()
    assert online["count"] == len(ONLINE_CLIENTS)
    assert {c["name"] for c in online["result"]} == set(ONLINE_CLIENTS)
    assert {c["status"] for c in online["result"]} == {"online"}
    assert api.get_active_clients("combiner-a")["count"] == 2
    assert api.get_active_clients("combiner-b") == {"count": 0, "result": []}
    assert len(api.get_active_clients(n_max=1)["result"]) == 1


# --- combiners and controller --- #


def test_combiners_and_controller_status(api: APIClient, network: Network) -> None:
    assert api.get_controller_status() == {"state": "idle"}
    listed = api.get_combiners()
    assert listed["count"] == len(COMBINERS) == api.get_combiners_count()
    assert {c["name"] for c in listed["result"]} == set(COMBINERS)
    by_name = api.get_combiner("combiner-b")
    assert (by_name["name"], by_name["address"], by_name["port"]) == ("combiner-b", "127.0.0.1", 12081)
    assert api.get_combiner(by_name["id"]) == by_name
    assert len(api.get_combiners(n_max=1)["result"]) == 1


# --- models --- #


def test_models(api: APIClient, network: Network) -> None:
    listed = api.get_models()
    assert api.get_models_count() == listed["count"] == 3
    # Newest first: the second round's model, the first round's, then the seed.
    assert [m["model"] for m in listed["result"]] == [
        *reversed(network.session_model_ids),
        network.seed_model_id,
    ]
    of_session = api.get_models(session_id=SESSION_ID)
    assert {m["model"] for m in of_session["result"]} == set(network.session_model_ids)
    assert [m["model"] for m in api.get_models(n_max=1)["result"]] == [network.session_model_ids[-1]]

    first = api.get_model(network.session_model_ids[0])
    assert (first["parent_model"], first["session_id"]) == (network.seed_model_id, SESSION_ID)
    assert api.get_model(first["id"]) == first
    with pytest.raises(APIError) as missing:
        api.get_model("no-such-model")
    assert missing.value.status_code == 404


def test_get_active_model_and_trail(api: APIClient, network: Network) -> None:
    active = api.get_active_model()
    assert active["model"] == network.session_model_ids[-1]

    oldest_first = [network.seed_model_id, *network.session_model_ids]
    assert [m["model"] for m in api.get_model_trail()] == oldest_first
    assert [m["model"] for m in api.get_model_trail(reverse=False)] == oldest_first[::-1]
    assert [m["model"] for m in api.get_model_trail(include_self=False)] == oldest_first[:-1]
    middle = api.get_model(network.session_model_ids[0])["id"]
    assert [m["model"] for m in api.get_model_trail(middle)] == oldest_first[:2]
    assert [m["model"] for m in api.get_model_trail(n_max=2, reverse=False)] == oldest_first[:0:-1]


def test_download_model(api: APIClient, network: Network, tmp_path: Path) -> None:
    target = tmp_path / "global.npz"
    answer = api.download_model(network.session_model_ids[-1], target)
    assert answer == {"success": True, "message": "Model downloaded successfully."}
    assert target.read_bytes() == network.seed_bytes
    with np.load(target, allow_pickle=False) as arrays:
        assert sorted(arrays.files) == ["0", "1"]

    failed = api.download_model("no-such-model", tmp_path / "missing.npz")
    assert failed["success"] is False
    assert not (tmp_path / "missing.npz").exists()


def test_set_active_model(api: APIClient, network: Network, tmp_path: Path) -> None:
    seed = tmp_path / "new-seed.npz"
    seed.write_bytes(seed_model())
    answer = api.set_active_model(seed)
    assert answer["success"] is True
    assert api.get_models_count() == 4
    new = api.get_active_model()
    assert new["model"] not in {network.seed_model_id, *network.session_model_ids}
    assert new["parent_model"] is None

    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(APIError) as refused:
        api.set_active_model(broken)
    assert refused.value.status_code == 400
    assert "model" in refused.value.message.lower()
    assert api.get_models_count() == 4


# --- packages --- #


def test_packages_checksum_and_download(api: APIClient, network: Network, tmp_path: Path) -> None:
    listed = api.get_packages()
    assert listed["count"] == 2 == api.get_packages_count()
    assert {p["id"] for p in listed["result"]} == set(network.package_ids)
    assert len(api.get_packages(n_max=1)["result"]) == 1

    first = api.get_package(network.package_ids[0])
    assert (first["name"], first["helper"], first["description"]) == ("first", "numpyhelper", "first package")
    assert first["active"] is False
    active = api.get_active_package()
    assert (active["id"], active["name"], active["active"]) == (network.package_ids[-1], "digits", True)

    assert api.get_package_checksum() == {"checksum": hashlib.sha256(network.package_bytes).hexdigest()}
    target = tmp_path / "package.tgz"
    assert api.download_package(target) == {"success": True, "message": "Package downloaded successfully."}
    assert target.read_bytes() == network.package_bytes


def test_set_active_package(api: APIClient, network: Network, tmp_path: Path) -> None:
    archive = tmp_path / "mnist.tgz"
    archive.write_bytes(package_archive("mnist"))
    answer = api.set_active_package(archive, "numpyhelper", name="mnist", description="third")
    assert answer == {"success": True, "message": "Compute package set."}
    assert api.get_packages_count() == 3
    active = api.get_active_package()
    assert (active["name"], active["description"], active["file_name"]) == ("mnist", "third", "mnist.tgz")

    no_helper = tmp_path / "other.tgz"
    no_helper.write_bytes(package_archive("other"))
    with pytest.raises(APIError) as refused:
        api.set_active_package(no_helper, "")
    assert refused.value.status_code == 400
    assert api.get_packages_count() == 3


# --- rounds --- #


def test_rounds(api: APIClient, network: Network) -> None:
    listed = api.get_rounds()
    assert listed["count"] == 2 == api.get_rounds_count()
    assert [r["round_id"] for r in listed["result"]] == ["2", "1"]
    assert len(api.get_rounds(n_max=1)["result"]) == 1
    first = api.get_round("1")
    assert (first["status"], first["model_id"]) == ("Success", network.session_model_ids[0])
    assert [c["participants"] for c in first["combiners"]] == [["client-1", "client-2"]]


# --- sessions --- #


def test_sessions(api: APIClient, network: Network) -> None:
    listed = api.get_sessions()
    assert listed["count"] == 1 == api.get_sessions_count()
    assert len(api.get_sessions(n_max=1)["result"]) == 1
    session = api.get_session(SESSION_ID)
    assert (session["session_id"], session["status"]) == (SESSION_ID, "Finished")
    assert session["session_config"]["rounds"] == 2
    assert api.get_session(session["id"]) == session
    assert api.get_session_status(SESSION_ID) == "Finished"
    assert api.session_is_finished(SESSION_ID) is True


def test_start_session(api: APIClient, network: Network, sessions_not_run: None) -> None:
    refused = api.start_session(id="too-big", min_clients=5)
    assert refused["success"] is False
    assert "Not enough clients" in refused["message"]
    assert api.get_sessions_count() == 1

    started = api.start_session(
        id="sess-new",
        aggregator_kwargs={"lr": 0.1},
        rounds=3,
        round_timeout=60,
        min_clients=2,
        validate=False,
    )
    assert started["success"] is True, started
    config = started["config"]
    assert (config["session_id"], config["rounds"], config["round_timeout"]) == ("sess-new", 3, 60)
    assert (config["clients_required"], config["validate"], config["aggregator_kwargs"]) == (
        2,
        False,
        {"lr": 0.1},
    )
    assert config["model_id"] == network.session_model_ids[-1]
    assert api.get_session_status("sess-new") in {"Initialized", "Started"}
    assert api.session_is_finished("sess-new") is False

    again = api.start_session(id="sess-new")
    assert again == {"success": False, "message": "Session already exists."}


def test_stop_session(api: APIClient, network: Network) -> None:
    from apps.sessions.choices import SessionStatus
    from apps.sessions.models import Session

    Session.objects.create(
        session_id="sess-running", status=SessionStatus.STARTED, model_id=network.seed_model_id
    )
    answer = api.stop_session("sess-running")
    assert "sess-running" in answer["message"]
    assert api.get_session_status("sess-running") in {"Stopping", "Stopped"}
    with pytest.raises(APIError) as refused:
        api.stop_session(SESSION_ID)  # already finished
    assert refused.value.status_code == 400


def test_wait_for_session(api: APIClient, network: Network) -> None:
    seen: list[dict[str, Any]] = []
    final = api.wait_for_session(SESSION_ID, timeout=10, poll_interval=0.05, on_round=seen.append)
    assert final["status"] == "Finished"
    assert [r["round_id"] for r in seen] == network.round_ids

    from apps.sessions.choices import SessionStatus
    from apps.sessions.models import Session

    Session.objects.create(
        session_id="sess-stuck", status=SessionStatus.STARTED, model_id=network.seed_model_id
    )
    with pytest.raises(TimeoutError):
        api.wait_for_session("sess-stuck", timeout=0.3, poll_interval=0.05)


# --- statuses and validations --- #


def test_statuses(api: APIClient, network: Network) -> None:
    listed = api.get_statuses()
    assert listed["count"] == 4 == api.get_statuses_count()
    assert len(api.get_statuses(n_max=3)["result"]) == 3
    assert api.get_statuses(sender_name="client-1")["count"] == 2
    assert api.get_statuses(event_type="MODEL_UPDATE", sender_role="WORKER")["count"] == 4
    assert api.get_statuses(event_type="LOG")["count"] == 0
    # FEDn 0.9.5 sends session_id; fedplane matches it (0.9.5's server never did).
    assert api.get_statuses(session_id=SESSION_ID)["count"] == 4

    newest = api.get_status(network.status_ids[0])
    assert (newest["sender"]["name"], newest["type"]) == ("client-2", "MODEL_UPDATE")
    assert newest["status"] == "model update for round 2"


def test_validations(api: APIClient, network: Network) -> None:
    listed = api.get_validations()
    assert listed["count"] == 4 == api.get_validations_count()
    assert len(api.get_validations(n_max=1)["result"]) == 1
    of_model = api.get_validations(model_id=network.session_model_ids[0])
    assert {v["sender"]["name"] for v in of_model["result"]} == {"client-1", "client-2"}
    assert api.get_validations(session_id=SESSION_ID, sender_name="client-1")["count"] == 2
    assert api.get_validations(correlation_id="val-2-client-2")["count"] == 1
    assert api.get_validations(receiver_name="combiner-a", receiver_role="COMBINER")["count"] == 4
    assert api.get_validations(sender_role="COMBINER")["count"] == 0

    newest = api.get_validation(network.validation_ids[0])
    assert newest["model_id"] == network.session_model_ids[-1]
    assert json.loads(newest["data"]) == {"test_accuracy": 0.9, "test_loss": 0.4}


def test_token_is_sent_and_checked(
    network: Network, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlplane.tokens import TokenSettings, mint_token

    monkeypatch.delenv("FEDN_AUTH_TOKEN", raising=False)
    secret = "sdk-test-secret-of-at-least-32-bytes"
    settings.FEDN_JWT_SECRET_KEY = secret
    admin = mint_token(TokenSettings(secret=secret), "admin")
    with APIClient(network.host, network.port, token=admin) as api:
        assert api.get_clients_count() == 3
        # The model file needs the token too (open in FEDn 0.9.5); the APIClient sends it.
        assert api.download_model(network.session_model_ids[-1], tmp_path / "m.npz")["success"] is True
    with APIClient(network.host, network.port, token="not-a-jwt") as api, pytest.raises(APIError) as denied:
        api.get_clients_count()
    assert denied.value.status_code in {401, 403}
    assert denied.value.message
    with APIClient(network.host, network.port) as anonymous:
        refused = anonymous.download_model(network.session_model_ids[-1], tmp_path / "refused.npz")
    assert refused["success"] is False and "Missing token" in refused["message"]
    assert not (tmp_path / "refused.npz").exists()


# --- the `fedplane` command --- #


def cli(network: Network, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--host", network.url, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_status_and_lists(network: Network, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(network, capsys, "status")
    assert (code, out.strip()) == (EXIT_OK, f"controller {network.url}: idle")

    code, out, _ = cli(network, capsys, "clients", "list")
    assert code == EXIT_OK
    rows = [line.split() for line in out.splitlines()[1:-1]]
    assert sorted(row[1] for row in rows) == sorted(CLIENTS)
    assert out.splitlines()[-1] == "(3 of 3 clients)"

    code, out, _ = cli(network, capsys, "models", "list", "--json", "--n-max", "2")
    answer = json.loads(out)
    assert (code, answer["count"], len(answer["result"])) == (EXIT_OK, 3, 2)

    for entity in ("combiners", "packages", "sessions", "rounds", "statuses", "validations"):
        code, out, _ = cli(network, capsys, entity, "list")
        assert code == EXIT_OK, entity
        assert out.splitlines()[-1].endswith(f" {entity})")


def test_cli_show(network: Network, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(network, capsys, "sessions", "show", SESSION_ID)
    assert code == EXIT_OK
    assert ["status", "Finished"] in [line.split() for line in out.splitlines()]
    code, out, _ = cli(network, capsys, "round", "show", "2", "--json")
    assert json.loads(out)["model_id"] == network.session_model_ids[-1]
    code, _, err = cli(network, capsys, "models", "show", "nope")
    assert code == EXIT_SERVER_ERROR
    assert "HTTP 404" in err


def test_cli_session_watch(network: Network, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(network, capsys, "session", "watch", SESSION_ID, "--poll-interval", "0.05")
    assert code == EXIT_OK
    assert out.splitlines() == [
        "round 1  Success  participants=2  test_accuracy=0.6000  test_loss=1.1000",
        "round 2  Success  participants=2  test_accuracy=0.8500  test_loss=0.5000",
        f"session {SESSION_ID}: Finished",
    ]


def test_cli_uploads_and_downloads(
    network: Network, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    archive = tmp_path / "cli.tgz"
    archive.write_bytes(package_archive("cli"))
    code, out, _ = cli(network, capsys, "package", "upload", str(archive), "--name", "cli")
    assert (code, out.strip()) == (EXIT_OK, "Compute package set.")
    code, _, _ = cli(network, capsys, "package", "download", str(tmp_path / "back.tgz"))
    assert code == EXIT_OK
    assert (tmp_path / "back.tgz").read_bytes() == archive.read_bytes()

    seed = tmp_path / "cli-seed.npz"
    seed.write_bytes(seed_model())
    code, _, _ = cli(network, capsys, "model", "upload", str(seed))
    assert code == EXIT_OK
    code, _, _ = cli(network, capsys, "model", "download", network.seed_model_id, str(tmp_path / "seed.npz"))
    assert code == EXIT_OK
    assert (tmp_path / "seed.npz").read_bytes() == network.seed_bytes
    # "active" names the model a new session would start from: the seed just uploaded.
    code, _, _ = cli(network, capsys, "model", "download", "active", str(tmp_path / "active.npz"))
    assert code == EXIT_OK
    assert (tmp_path / "active.npz").read_bytes() == seed.read_bytes()
    # Downloads get the mode any new file gets (not mkstemp's private 0600).
    umask = os.umask(0o022)
    os.umask(umask)
    for downloaded in ("seed.npz", "back.tgz"):
        assert stat.S_IMODE((tmp_path / downloaded).stat().st_mode) == 0o666 & ~umask


def test_cli_session_start_and_stop(
    network: Network, capsys: pytest.CaptureFixture[str], sessions_not_run: None
) -> None:
    code, _, err = cli(network, capsys, "session", "start", "--min-clients", "9")
    assert code == EXIT_SERVER_ERROR
    assert "Not enough clients" in err

    code, out, _ = cli(
        network, capsys, "session", "start", "--id", "cli-sess", "--rounds", "2", "--no-validate"
    )
    assert code == EXIT_OK
    assert out.strip().endswith("session_id: cli-sess")
    code, out, _ = cli(network, capsys, "session", "stop", "cli-sess")
    assert code == EXIT_OK
    assert "cli-sess" in out
