"""A federation with auth on, end to end, attacked from outside.

Controller, worker and combiner share FEDN_JWT_SECRET_KEY; every token is minted by
`manage.py fedplane_token` and names its holder: the combiner registers with its own `combiner`
token, the worker drives combiners with an `admin` token, each client holds a `client` token with
its own name. Another holder of a valid client token tries to take the clients' tasks, answer them
and invent clients; another combiner's token tries to move the combiner; a client's token is
revoked in the middle of a session.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import numpy as np
import pytest
import requests

from fedplane.api_client import APIClient, APIError
from fedplane.proto import fedn_pb2, fedn_pb2_grpc
from tests.e2e.conftest import CLIENT_ENV
from tests.e2e.harness import PY, ROOT, Federation, prepare_backend

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

SECRET = "e2e-auth-secret-of-at-least-thirty-two-bytes"
COMBINER = "combiner-a"
CLIENTS = ("client-1", "client-2", "client-3")
DOOMED = "client-3"
SESSION = "e2e-auth"
REVOKE_SESSION = "e2e-auth-revoke"
DIGITS = ROOT / "examples" / "digits" / "client"
# Enough rounds (about 2 s each) to outlast the combiner's revocation poll of 5 s.
ROUNDS_AFTER_REVOCATION = 12


def jti_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def code_of(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "SerializeToString"):
            list(result)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


class Secured:
    def __init__(self, federation: Federation, tokens: dict[str, str], seed_id: str) -> None:
        self.federation = federation
        self.tokens = tokens
        self.seed_id = seed_id
        self.attack: dict[str, tuple[grpc.StatusCode, str]] = {}
        self.session: dict[str, Any] = {}

    def combiner_target(self) -> str:
        combiner = self.federation.api.get_combiner(COMBINER)
        return f"{combiner['address']}:{combiner['port']}"


def impersonate(target: str, token: str, victim: str) -> dict[str, tuple[grpc.StatusCode, str]]:
    """Everything one client's token can try in another client's name, while a round runs."""
    victim_id = fedn_pb2.Client(name=victim, role=fedn_pb2.WORKER)
    metadata = bearer(token)
    outcome: dict[str, tuple[grpc.StatusCode, str]] = {}
    with grpc.insecure_channel(target) as channel:
        combiner = fedn_pb2_grpc.CombinerStub(channel)
        connector = fedn_pb2_grpc.ConnectorStub(channel)
        models = fedn_pb2_grpc.ModelServiceStub(channel)
        outcome["TaskStream"] = code_of(
            lambda: combiner.TaskStream(
                fedn_pb2.ClientAvailableMessage(sender=victim_id), metadata=metadata, timeout=5
            )
        )
        outcome["SendHeartbeat"] = code_of(
            lambda: connector.SendHeartbeat(
                fedn_pb2.Heartbeat(sender=victim_id), metadata=metadata, timeout=5
            )
        )
        poison = {"training_metadata": {"num_examples": 10**9}}
        update = fedn_pb2.ModelUpdate(
            sender=victim_id,
            model_update_id=str(uuid.uuid4()),
            correlation_id=str(uuid.uuid4()),
            meta=json.dumps(poison),
        )
        outcome["SendModelUpdate"] = code_of(
            lambda: combiner.SendModelUpdate(update, metadata=metadata, timeout=5)
        )
        payload = [
            fedn_pb2.ModelRequest(id=str(uuid.uuid4()), data=b"\0" * 1024, status=fedn_pb2.IN_PROGRESS),
        ]
        payload.append(fedn_pb2.ModelRequest(id=payload[0].id, status=fedn_pb2.OK))
        outcome["Upload"] = code_of(lambda: models.Upload(iter(payload), metadata=metadata, timeout=5))
    return outcome


@pytest.fixture(scope="module")
def secured(e2e_dir: Path) -> Iterator[Secured]:
    started = time.monotonic()
    backend = prepare_backend(e2e_dir)
    federation = Federation(backend, client_env=CLIENT_ENV, env={"FEDN_JWT_SECRET_KEY": SECRET})
    try:
        assert federation.manage("migrate", "-v0").returncode == 0
        tokens = {
            "admin": federation.mint("admin", "operator"),
            COMBINER: federation.mint("combiner", COMBINER),
        }
        tokens["combiner-b"] = federation.mint("combiner", "combiner-b")
        for name in (*CLIENTS, "mallory"):
            tokens[name] = federation.mint("client", name)
        federation.env["FEDPLANE_CONTROL_TOKEN"] = tokens["admin"]
        federation.api = APIClient("127.0.0.1", federation.port, timeout=30, token=tokens["admin"])
        federation.start_controller()
        federation.start_worker()
        federation.start_combiner(COMBINER, token=tokens[COMBINER])
        _, seed_id = federation.upload_digits()
        for index, name in enumerate(CLIENTS):
            federation.start_client(name, index, len(CLIENTS), combiner=COMBINER, token=tokens[name])
        federation.wait_clients_online(len(CLIENTS), timeout=90)
        print(f"\nsecured federation up in {time.monotonic() - started:.1f} s on {backend.description}")
        secured = Secured(federation, tokens, seed_id)
        federation.start_session(SESSION, rounds=1, round_timeout=90, min_clients=len(CLIENTS))
        federation.wait_training(SESSION)
        secured.attack = impersonate(secured.combiner_target(), tokens["mallory"], "client-1")
        secured.session = federation.wait_session_end(SESSION, timeout=180)
        print(f"secured federation and one attacked round in {time.monotonic() - started:.1f} s")
        yield secured
    finally:
        federation.stop()
        backend.close()


def load(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [data[str(index)] for index in range(len(data.files))]


def test_impostor_takes_no_task_and_the_model_is_the_honest_weighted_average(
    secured: Secured, tmp_path: Path
) -> None:
    federation = secured.federation
    assert secured.attack == {
        "TaskStream": (
            grpc.StatusCode.PERMISSION_DENIED,
            "Token speaks for client 'mallory', not 'client-1'",
        ),
        "SendHeartbeat": (
            grpc.StatusCode.PERMISSION_DENIED,
            "Token speaks for client 'mallory', not 'client-1'",
        ),
        "SendModelUpdate": (
            grpc.StatusCode.PERMISSION_DENIED,
            "Token speaks for client 'mallory', not 'client-1'",
        ),
        "Upload": (
            grpc.StatusCode.FAILED_PRECONDITION,
            "no training task of the current round waits for a model update from this caller",
        ),
    }
    assert secured.session["status"] == "Finished", federation.diagnostics()
    (only_round,) = federation.session_rounds(SESSION)
    assert sorted(only_round["round_data"]["participants_clients"]) == sorted(CLIENTS)

    # Training is deterministic for a given input model and client index: redo each honest
    # client's update here and average them by their examples.
    seed = tmp_path / "seed.npz"
    federation.api.download_model(secured.seed_id, seed)
    updates, weights = [], []
    for index, _name in enumerate(CLIENTS):
        out = tmp_path / f"update-{index}.npz"
        env = {
            **os.environ,
            **CLIENT_ENV,
            "FEDPLANE_CLIENT_INDEX": str(index),
            "FEDPLANE_NUM_CLIENTS": str(len(CLIENTS)),
        }
        done = subprocess.run(
            [PY, "model.py", "train", str(seed), str(out)],
            cwd=DIGITS,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        updates.append(load(out))
        weights.append(json.loads(Path(f"{out}-metadata").read_text())["num_examples"])
    expected = [
        sum(
            weight * update[layer].astype(np.float64) for weight, update in zip(weights, updates, strict=True)
        )
        / sum(weights)
        for layer in range(len(updates[0]))
    ]
    committed = tmp_path / "committed.npz"
    (model,) = federation.api.get_models(session_id=SESSION)["result"]
    assert model["parent_model"] == secured.seed_id
    federation.api.download_model(model["model"], committed)
    for got, want in zip(load(committed), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_made_up_client_names_add_no_online_client(secured: Secured) -> None:
    federation = secured.federation
    metadata = bearer(secured.tokens["mallory"])
    refused = []
    with grpc.insecure_channel(secured.combiner_target()) as channel:
        connector = fedn_pb2_grpc.ConnectorStub(channel)
        for index in range(30):
            beat = fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name=f"sybil-{index}", role=fedn_pb2.WORKER))
            refused.append(
                code_of(lambda beat=beat: connector.SendHeartbeat(beat, metadata=metadata, timeout=5))[0]
            )
        listed = connector.ListActiveClients(
            fedn_pb2.ListClientsRequest(), metadata=bearer(secured.tokens["admin"]), timeout=5
        )
        accepting = connector.AcceptingClients(
            fedn_pb2.ConnectionRequest(), metadata=bearer(secured.tokens["admin"]), timeout=5
        )
    assert refused == [grpc.StatusCode.PERMISSION_DENIED] * 30
    online_at_combiner = sorted(client.name for client in listed.client)
    assert not [name for name in online_at_combiner if name.startswith("sybil-")]
    assert set(online_at_combiner) <= set(CLIENTS)
    assert accepting.status == fedn_pb2.ACCEPTING
    time.sleep(2)  # one report cycle of the combiner
    online = {client["name"] for client in federation.api.get_active_clients()["result"]}
    assert not [name for name in online if name.startswith("sybil-")]


def test_a_combiner_token_cannot_move_another_combiner(secured: Secured) -> None:
    federation = secured.federation
    before = federation.api.get_combiner(COMBINER)
    answer = requests.post(
        f"{federation.url}/add_combiner",
        json={"combiner_id": COMBINER, "address": "127.0.0.1", "port": 1, "fqdn": None, "secure_grpc": False},
        headers={"Authorization": f"Bearer {secured.tokens['combiner-b']}"},
        timeout=10,
    )
    assert answer.status_code == 403, answer.text
    body = answer.json()
    assert "message" in body and "certificate" not in body and "key" not in body
    after = federation.api.get_combiner(COMBINER)
    assert (after["address"], after["port"]) == (before["address"], before["port"])
    # The combiner still answers where it was.
    with grpc.insecure_channel(secured.combiner_target()) as channel:
        status = fedn_pb2_grpc.ConnectorStub(channel).AcceptingClients(
            fedn_pb2.ConnectionRequest(), metadata=bearer(secured.tokens["admin"]), timeout=5
        )
    assert status.status == fedn_pb2.ACCEPTING


def test_a_token_revoked_during_a_session_is_refused_and_the_others_finish(secured: Secured) -> None:
    federation = secured.federation
    doomed = secured.tokens[DOOMED]
    target = secured.combiner_target()
    federation.start_session(REVOKE_SESSION, rounds=ROUNDS_AFTER_REVOCATION, round_timeout=30, min_clients=2)
    federation.wait_training(REVOKE_SESSION)

    done = federation.manage("fedplane_token", "--revoke", jti_of(doomed), "--reason", "e2e: laptop lost")
    assert done.returncode == 0, done.stderr
    # Timed from the revocation's commit: the command's own start-up is not the combiner's delay.
    revoked_at = time.monotonic()
    rest = requests.post(
        f"{federation.url}/add_client",
        json={"client_id": DOOMED, "name": DOOMED, "preferred_combiner": COMBINER},
        headers={"Authorization": f"Bearer {doomed}"},
        timeout=10,
    )
    assert (rest.status_code, rest.json().get("message")) == (401, "Token revoked")

    heartbeat = fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name=DOOMED, role=fedn_pb2.WORKER))
    refused_after: list[float] = []

    def refused() -> bool:
        with grpc.insecure_channel(target) as channel:
            code, details = code_of(
                lambda: fedn_pb2_grpc.ConnectorStub(channel).SendHeartbeat(
                    heartbeat, metadata=bearer(doomed), timeout=5
                )
            )
        if (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "Token revoked"):
            refused_after.append(time.monotonic() - revoked_at)
            return True
        return False

    federation.wait_for("the combiner to refuse the revoked token", refused, 20, interval=0.25)
    rounds_before_refusal = len(federation.session_rounds(REVOKE_SESSION))
    print(f"\nrevoked token refused by the combiner {refused_after[0]:.1f} s after revocation")
    assert refused_after[0] <= 5

    session = federation.wait_session_end(REVOKE_SESSION, timeout=240)
    assert session["status"] == "Finished", federation.diagnostics()
    rounds = sorted(federation.session_rounds(REVOKE_SESSION), key=lambda r: int(r["round_id"]))
    assert len(rounds) == ROUNDS_AFTER_REVOCATION and all(r["status"] == "Finished" for r in rounds)
    # Every round that started after the combiner refused the token ran without its holder.
    later = [sorted(r["round_data"]["participants_clients"]) for r in rounds[rounds_before_refusal:]]
    assert later, f"the session ended before the combiner refused the token ({rounds_before_refusal} rounds)"
    assert all(participants == ["client-1", "client-2"] for participants in later), later


@pytest.mark.parametrize("role", [None, "admin"])
def test_client_without_a_client_token_exits_with_the_reason(secured: Secured, role: str | None) -> None:
    federation = secured.federation
    name = f"refused-{role or 'tokenless'}"
    federation.start_client(name, 0, 1, token=secured.tokens[role] if role else None)
    process = federation.processes[name]
    federation.wait_for(f"{name} to exit", lambda: not process.alive(), 30, interval=0.2)
    assert process.popen.returncode != 0
    log = process.tail()
    assert "controller refused the token (401)" in log, log
    # FEDn's client sends "Bearer None" without a token; ours then says what is missing.
    assert ("give --token" in log) is (role is None), log


def test_api_client_without_a_token_gets_401_missing_token(secured: Secured) -> None:
    anonymous = APIClient("127.0.0.1", secured.federation.port, timeout=10, token=None)
    try:
        with pytest.raises(APIError) as refused:
            anonymous.get_session(SESSION)
    finally:
        anonymous.close()
    assert refused.value.status_code == 401
    assert refused.value.message == "Missing token"


def control_start(target: str, metadata: tuple[tuple[str, str], ...]) -> tuple[grpc.StatusCode, str]:
    request = fedn_pb2.ControlRequest(
        command=fedn_pb2.Command.START, parameter=[fedn_pb2.Parameter(key="round_id", value="99")]
    )
    with grpc.insecure_channel(target) as channel:
        return code_of(
            lambda: fedn_pb2_grpc.ControlStub(channel).Start(request, metadata=metadata, timeout=10)
        )


def test_combiner_refuses_control_calls_from_anyone_but_the_controller_and_itself(secured: Secured) -> None:
    target = secured.combiner_target()
    assert control_start(target, ()) == (grpc.StatusCode.UNAUTHENTICATED, "Token is missing")
    probe = grpc.insecure_channel(target, options=[("grpc.primary_user_agent", "grpc_health_probe")])
    with probe:
        request = fedn_pb2.ControlRequest(command=fedn_pb2.Command.STOP)
        assert code_of(lambda: fedn_pb2_grpc.ControlStub(probe).Stop(request, timeout=10))[0] == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    assert control_start(target, bearer(secured.tokens["client-1"])) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "Insufficient permissions",
    )
    assert control_start(target, bearer(secured.tokens["combiner-b"])) == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"Token speaks for combiner 'combiner-b', not '{COMBINER}'",
    )


def test_combiner_refuses_tokenless_client_calls(secured: Secured) -> None:
    # What a FEDn 0.9.5 client on a plain channel sends: no token (FEDPLANE_GRPC_ALLOW_TOKENLESS_CLIENTS unset).
    heartbeat = fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name="fedn-095", role=fedn_pb2.Role.WORKER))
    with grpc.insecure_channel(secured.combiner_target()) as channel:
        stub = fedn_pb2_grpc.ConnectorStub(channel)
        assert code_of(lambda: stub.SendHeartbeat(heartbeat, metadata=(("client", "fedn-095"),), timeout=10))[
            0
        ] == (grpc.StatusCode.UNAUTHENTICATED)


def test_no_token_on_any_command_line(secured: Secured) -> None:
    secrets = set(secured.tokens.values())
    lines = []
    for process in secured.federation.processes.values():
        if process.alive():
            cmdline = Path(f"/proc/{process.popen.pid}/cmdline").read_bytes().decode(errors="replace")
            lines.append(cmdline)
    assert lines
    assert not [line for line in lines if any(secret in line for secret in secrets)]
