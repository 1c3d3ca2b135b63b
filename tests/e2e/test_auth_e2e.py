"""A federation with auth on, end to end: every process holds a token of its role, minted by
`manage.py fedplane_token`, and a session runs; callers without the right token are refused.

Controller, worker and combiner share FEDN_JWT_SECRET_KEY. The combiner registers and reports with
a `combiner` token, the controller and worker make Control calls with an `admin` token
(FEDPLANE_CONTROL_TOKEN), two clients hold `client` tokens and the APIClient an `admin` token.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from fedplane.api_client import APIClient, APIError
from fedplane.proto import fedn_pb2, fedn_pb2_grpc
from tests.e2e.conftest import CLIENT_ENV
from tests.e2e.harness import PY, ROOT, SCRUBBED_ENV, Federation, prepare_backend

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SECRET = "e2e-auth-secret-of-at-least-thirty-two-bytes"
COMBINER = "combiner-a"
CLIENTS = ("client-1", "client-2")
SESSION = "e2e-auth"


def mint(role: str, subject: str, var_dir: Path) -> str:
    """A token from the management command, as an operator would get one."""
    env = {key: value for key, value in os.environ.items() if key not in SCRUBBED_ENV}
    env.update(
        {
            "FEDN_JWT_SECRET_KEY": SECRET,
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "FEDPLANE_VAR_DIR": str(var_dir),
        }
    )
    done = subprocess.run(
        [PY, "manage.py", "fedplane_token", "--role", role, "--subject", subject, "--days", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Secured:
    def __init__(self, federation: Federation, tokens: dict[str, str], session: dict[str, Any]):
        self.federation = federation
        self.tokens = tokens
        self.session = session

    def combiner_target(self) -> str:
        combiner = self.federation.api.get_combiner(COMBINER)
        return f"{combiner['address']}:{combiner['port']}"


@pytest.fixture(scope="module")
def secured(e2e_dir: Path) -> Iterator[Secured]:
    started = time.monotonic()
    backend = prepare_backend(e2e_dir)
    tokens = {role: mint(role, f"e2e-{role}", e2e_dir) for role in ("admin", "client", "combiner")}
    federation = Federation(
        backend,
        client_env=CLIENT_ENV,
        env={"FEDN_JWT_SECRET_KEY": SECRET, "FEDPLANE_CONTROL_TOKEN": tokens["admin"]},
        api_token=tokens["admin"],
    )
    try:
        federation.start_controller()
        federation.start_worker()
        # The combiner node reads its own --token for the controller from FEDPLANE_COMBINER_TOKEN.
        federation.start_combiner(COMBINER, extra_env={"FEDPLANE_COMBINER_TOKEN": tokens["combiner"]})
        federation.upload_digits()
        for index, name in enumerate(CLIENTS):
            federation.start_client(name, index, len(CLIENTS), combiner=COMBINER, token=tokens["client"])
        federation.wait_clients_online(len(CLIENTS), timeout=90)
        print(f"\nsecured federation up in {time.monotonic() - started:.1f} s on {backend.description}")
        federation.start_session(SESSION, rounds=1, round_timeout=60, min_clients=2)
        session = federation.wait_session_end(SESSION, timeout=120)
        print(f"secured federation and one round in {time.monotonic() - started:.1f} s")
        yield Secured(federation, tokens, session)
    finally:
        federation.stop()
        backend.close()


def test_session_with_auth_on_finishes_with_both_clients(secured: Secured) -> None:
    federation = secured.federation
    assert secured.session["status"] == "Finished", federation.diagnostics()
    (only_round,) = federation.session_rounds(SESSION)
    assert only_round["status"] == "Finished"
    assert [c["name"] for c in only_round["combiners"]] == [COMBINER]
    assert sorted(only_round["round_data"]["participants_clients"]) == sorted(CLIENTS)
    validations = federation.api.get_validations(session_id=SESSION)["result"]
    assert sorted(v["sender"]["name"] for v in validations) == sorted(CLIENTS)


@pytest.mark.parametrize("role", [None, "admin"])
def test_client_without_a_client_token_exits_with_the_reason(secured: Secured, role: str | None) -> None:
    federation = secured.federation
    name = f"refused-{role or 'tokenless'}"
    federation.start_client(name, 0, 1, token=secured.tokens[role] if role else None)
    process = federation.processes[name]
    federation.wait_for(f"{name} to exit", lambda: not process.alive(), 30, interval=0.2)
    assert process.popen.returncode != 0
    log = process.tail()
    assert "controller refused the token (401): Invalid token" in log, log
    # FEDn's client sends "Bearer None" without a token; ours then says what is missing.
    assert ("give --token (role client)" in log) is (role is None), log


def test_api_client_without_a_token_gets_401_missing_token(secured: Secured) -> None:
    anonymous = APIClient("127.0.0.1", secured.federation.port, timeout=10, token=None)
    try:
        with pytest.raises(APIError) as refused:
            anonymous.get_session(SESSION)
    finally:
        anonymous.close()
    assert refused.value.status_code == 401
    assert refused.value.message == "Missing token"


def control_start(target: str, metadata: tuple[tuple[str, str], ...]) -> grpc.RpcError:
    request = fedn_pb2.ControlRequest(
        command=fedn_pb2.Command.START, parameter=[fedn_pb2.Parameter(key="round_id", value="99")]
    )
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as refused:
        fedn_pb2_grpc.ControlStub(channel).Start(request, metadata=metadata, timeout=10)
    return refused.value


def test_combiner_refuses_control_start_without_token_or_with_a_client_token(secured: Secured) -> None:
    target = secured.combiner_target()
    tokenless = control_start(target, ())
    assert (tokenless.code(), tokenless.details()) == (grpc.StatusCode.UNAUTHENTICATED, "Token is missing")
    as_client = control_start(target, (("authorization", f"Bearer {secured.tokens['client']}"),))
    assert (as_client.code(), as_client.details()) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "Insufficient permissions",
    )


def test_combiner_refuses_tokenless_client_calls(secured: Secured) -> None:
    # What a FEDn 0.9.5 client on a plain channel sends: no token (FEDPLANE_GRPC_ALLOW_TOKENLESS_CLIENTS unset).
    heartbeat = fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name="fedn-095", role=fedn_pb2.Role.WORKER))
    with grpc.insecure_channel(secured.combiner_target()) as channel:
        stub = fedn_pb2_grpc.ConnectorStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.SendHeartbeat(heartbeat, metadata=(("client", "fedn-095"),), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answer = stub.SendHeartbeat(
            heartbeat, metadata=(("authorization", f"Bearer {secured.tokens['client']}"),), timeout=10
        )
    assert answer.response == "Heartbeat received"
