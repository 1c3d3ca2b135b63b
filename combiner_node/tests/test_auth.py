"""Identity on the combiner's gRPC surface, on a live server with auth on.

The matrix calls every rpc of every service in fedn.proto with every kind of credential and checks
the status code; the scenarios below it check what a token may speak for: its own client name, its
own tasks and uploads, and nothing once revoked.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from combiner_node.auth import AuthSettings
from combiner_node.node import CombinerNode
from combiner_node.store import DirectoryStore, model_key
from combiner_node.tests.conftest import FakeController, TestClient, save_model, wait_for
from fedplane.proto import fedn_pb2, fedn_pb2_grpc

SECRET = "test-secret-key-with-enough-length-for-hs256"
COMBINER = "combiner-1"
Metadata = tuple[tuple[str, str], ...]


def token(role: str | None, secret: str = SECRET, **claims: Any) -> str:
    body: dict[str, Any] = {"exp": int(time.time()) + 3600, "jti": uuid.uuid4().hex, **claims}
    if role is not None:
        body["role"] = role
    return jwt.encode(
        {key: value for key, value in body.items() if value is not None}, secret, algorithm="HS256"
    )


def bearer(value: str) -> Metadata:
    return (("authorization", f"Bearer {value}"),)


def client_token(name: str, **claims: Any) -> str:
    return token("client", sub=name, **claims)


# The matrix -------------------------------------------------------------------------------------

SENDER_INPUTS = {"Heartbeat", "Status", "ClientAvailableMessage", "ModelUpdate", "ModelValidation"}
EVERY_RPC = [
    (service.name, method)
    for service in fedn_pb2.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
CLIENT_RPCS = {
    "Combiner/TaskStream",
    "Combiner/SendModelUpdate",
    "Combiner/SendModelValidation",
    "Connector/SendHeartbeat",
    "Connector/SendStatus",
    "ModelService/Download",
    "ModelService/Upload",
}
# What a call with the right credentials gets from the servicer itself, given the request below.
RIGHT_ANSWER = {
    "Combiner/TaskStream": grpc.StatusCode.DEADLINE_EXCEEDED,  # stays open until the deadline
    "ModelService/Download": grpc.StatusCode.OK,  # the model of the caller's task
    "ModelService/Upload": grpc.StatusCode.OK,  # the caller has an outstanding task
    "Control/Start": grpc.StatusCode.INVALID_ARGUMENT,  # empty round config
    "Connector/AllianceStatusStream": grpc.StatusCode.UNIMPLEMENTED,
    "Connector/ReassignClient": grpc.StatusCode.UNIMPLEMENTED,
    "Connector/ReconnectClient": grpc.StatusCode.UNIMPLEMENTED,
    "Reducer/GetGlobalModel": grpc.StatusCode.UNIMPLEMENTED,
}
CREDENTIALS = [
    "none",
    "health_probe",
    "malformed",
    "wrong_secret",
    "expired",
    "revoked",
    "no_sub",
    "no_exp",
    "no_jti",
    "wrong_role",
    "other_identity",
    "right",
]


def expected_code(rpc: str, credential: str) -> grpc.StatusCode:
    if credential in ("none", "health_probe", "malformed", "wrong_secret", "expired", "revoked"):
        return grpc.StatusCode.UNAUTHENTICATED
    if credential in ("no_sub", "no_exp", "no_jti"):
        return grpc.StatusCode.UNAUTHENTICATED
    if credential == "other_identity" and rpc == "ModelService/Upload":
        return grpc.StatusCode.FAILED_PRECONDITION  # bob has no task waiting for an update
    if credential in ("wrong_role", "other_identity"):
        return grpc.StatusCode.PERMISSION_DENIED
    return RIGHT_ANSWER.get(rpc, grpc.StatusCode.OK)


class Federation:
    """A combiner with auth on, one round running, and alice holding its only task."""

    def __init__(self, node: CombinerNode, tmp_path: Path) -> None:
        self.node = node
        self.tmp_path = tmp_path
        self.alice = TestClient(node.port, "alice", bearer(client_token("alice")))
        self.alice.heartbeat()
        self.alice.open_stream()
        self.control_channel = grpc.insecure_channel(f"127.0.0.1:{node.port}")
        control = fedn_pb2_grpc.ControlStub(self.control_channel)
        request = fedn_pb2.ControlRequest(
            command=fedn_pb2.START,
            parameter=[
                fedn_pb2.Parameter(key=key, value=str(value))
                for key, value in {
                    "model_id": "seed",
                    "round_id": "1",
                    "session_id": "s",
                    "task": "training",
                    "clients_required": 1,
                    "clients_requested": 1,
                    "round_timeout": 120,
                }.items()
            ],
        )
        control.Start(request, metadata=bearer(token("admin", sub="operator")), timeout=10)
        self.task = self.alice.next_task()

    def close(self) -> None:
        self.alice.close()
        self.control_channel.close()


@pytest.fixture
def secured_node(make_node: Callable[..., CombinerNode], store: DirectoryStore) -> CombinerNode:
    seed = store.root / model_key("seed")
    seed.parent.mkdir(parents=True, exist_ok=True)
    save_model(seed, [np.ones((3,), dtype=np.float32)])
    return make_node(name=COMBINER, auth=AuthSettings(secret=SECRET), revocation_poll_seconds=0.2)


@pytest.fixture
def federation(secured_node: CombinerNode, tmp_path: Path) -> Iterator[Federation]:
    federation = Federation(secured_node, tmp_path)
    yield federation
    federation.close()


def credentials_for(
    rpc: str, credential: str, federation: Federation
) -> tuple[Metadata, list[tuple[str, Any]]]:
    """(metadata, channel options) for one cell of the matrix."""
    client_rpc = rpc in CLIENT_RPCS
    role = "client" if client_rpc else "admin"
    own = {"sub": "alice"} if client_rpc else {"sub": "operator"}
    if credential == "none":
        return (), []
    if credential == "health_probe":
        return (), [("grpc.primary_user_agent", "grpc_health_probe")]
    if credential == "malformed":
        return (("authorization", "Bearer not-a-jwt"),), []
    if credential == "wrong_secret":
        return bearer(token(role, secret="another-secret-of-enough-length-for-hs256", **own)), []
    if credential == "expired":
        return bearer(token(role, exp=int(time.time()) - 60, **own)), []
    if credential == "revoked":
        jti = uuid.uuid4().hex
        federation.node.revoked.replace([jti])
        return bearer(token(role, jti=jti, **own)), []
    if credential == "no_sub":
        # Client rpcs need the client's name; control rpcs a combiner token naming this combiner.
        return bearer(token("client" if client_rpc else "combiner")), []
    if credential == "no_exp":
        return bearer(token(role, exp=None, **own)), []
    if credential == "no_jti":
        return bearer(token(role, jti=None, **own)), []
    if credential == "wrong_role":
        return bearer(token("admin" if client_rpc else "client", sub="alice")), []
    if credential == "other_identity":
        if client_rpc:
            return bearer(client_token("bob")), []
        return bearer(token("combiner", sub="combiner-2")), []
    return bearer(token(role, **own)), []


def request_for(rpc: str, federation: Federation) -> Any:
    service, method_name = rpc.split("/")
    method = fedn_pb2.DESCRIPTOR.services_by_name[service].methods_by_name[method_name]
    message = getattr(fedn_pb2, method.input_type.name)()
    if method.input_type.name in SENDER_INPUTS:
        message.sender.name = "alice"
        message.sender.role = fedn_pb2.WORKER
    if rpc == "ModelService/Download":
        message.id = federation.task.model_id
    if rpc == "Combiner/SendModelUpdate":
        message.model_update_id = str(uuid.uuid4())
        message.correlation_id = "not-a-task"
        message.meta = '{"training_metadata": {"num_examples": 1}}'
    if rpc == "Control/SetAggregator":
        message.parameter.add(key="aggregator", value="fedavg")
    return message


def call(
    rpc: str, federation: Federation, metadata: Metadata, options: list[tuple[str, Any]]
) -> grpc.StatusCode:
    service, method_name = rpc.split("/")
    method = fedn_pb2.DESCRIPTOR.services_by_name[service].methods_by_name[method_name]
    request = request_for(rpc, federation)
    response_class = getattr(fedn_pb2, method.output_type.name)
    path = f"/fedn.{service}/{method_name}"
    kwargs = {
        "request_serializer": type(request).SerializeToString,
        "response_deserializer": response_class.FromString,
    }
    with grpc.insecure_channel(f"127.0.0.1:{federation.node.port}", options=options) as channel:
        try:
            if method.client_streaming:
                if method.server_streaming:
                    raise AssertionError(f"{rpc}: no bidirectional rpc is expected in fedn.proto")
                request.id = request.id or str(uuid.uuid4())
                request.status = fedn_pb2.OK
                channel.stream_unary(path, **kwargs)(iter([request]), metadata=metadata, timeout=3)
            elif method.server_streaming:
                list(channel.unary_stream(path, **kwargs)(request, metadata=metadata, timeout=1.5))
            else:
                channel.unary_unary(path, **kwargs)(request, metadata=metadata, timeout=3)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_the_matrix_covers_every_rpc_of_fedn_proto():
    rpcs = {f"{service}/{method.name}" for service, method in EVERY_RPC}
    assert rpcs >= CLIENT_RPCS
    assert len(rpcs) == sum(len(service.methods) for service in fedn_pb2.DESCRIPTOR.services_by_name.values())
    assert len(rpcs) >= 17


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_every_rpc_answers_each_credential_with_its_status(federation: Federation, credential: str):
    wrong: dict[str, tuple[str, str]] = {}
    for service, method in EVERY_RPC:
        rpc = f"{service}/{method.name}"
        metadata, options = credentials_for(rpc, credential, federation)
        code = call(rpc, federation, metadata, options)
        expected = expected_code(rpc, credential)
        if code != expected:
            wrong[rpc] = (code.name, expected.name)
    assert not wrong, f"{credential}: got/expected per rpc: {wrong}"


def test_health_service_is_the_only_open_door(federation: Federation):
    with grpc.insecure_channel(f"127.0.0.1:{federation.node.port}") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_refusals_say_why(federation: Federation):
    def details(metadata: Metadata) -> tuple[grpc.StatusCode, str]:
        with grpc.insecure_channel(f"127.0.0.1:{federation.node.port}") as channel:
            stub = fedn_pb2_grpc.ConnectorStub(channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.SendHeartbeat(
                    fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name="alice")), metadata=metadata, timeout=5
                )
        return error.value.code(), error.value.details()

    assert details(()) == (grpc.StatusCode.UNAUTHENTICATED, "Token is missing")
    assert details(bearer(token("client", exp=int(time.time()) - 5, sub="alice"))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "Token expired",
    )
    code, text = details(bearer(token("client")))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "--subject" in text
    assert details(bearer(client_token("bob"))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "Token speaks for client 'bob', not 'alice'",
    )
    assert details((("authorization", f"Token {client_token('alice')}"),)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "Invalid token scheme, expected Bearer",
    )


def test_custom_claim_is_required_when_configured(make_node: Callable[..., CombinerNode]):
    node = make_node(auth=AuthSettings(secret=SECRET, custom_claim_key="project", custom_claim_value="p1"))
    alice = TestClient(node.port, "alice", bearer(client_token("alice", project="p1")))
    assert alice.heartbeat().response == "Heartbeat received"
    other = TestClient(node.port, "alice", bearer(client_token("alice", project="p2")))
    with pytest.raises(grpc.RpcError) as error:
        other.heartbeat()
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    alice.close()
    other.close()


# What a token may speak for ------------------------------------------------------------------------


def test_one_token_cannot_make_up_clients(secured_node: CombinerNode):
    mallory = TestClient(secured_node.port, "mallory", bearer(client_token("mallory")))
    mallory.heartbeat()
    refused = 0
    for index in range(30):
        fake = fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name=f"sybil-{index}", role=fedn_pb2.WORKER))
        with pytest.raises(grpc.RpcError) as error:
            mallory.connector.SendHeartbeat(fake, metadata=mallory.metadata, timeout=5)
        refused += error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused == 30
    assert secured_node.registry.online_names() == ["mallory"]
    mallory.close()


def test_another_client_cannot_take_or_answer_a_task(federation: Federation):
    bob_token = bearer(client_token("bob"))
    # Subscribing to alice's tasks with bob's token is refused.
    impostor = TestClient(federation.node.port, "alice", bob_token)
    stream = impostor.combiner.TaskStream(
        fedn_pb2.ClientAvailableMessage(sender=impostor.identity), metadata=impostor.metadata, timeout=5
    )
    with pytest.raises(grpc.RpcError) as error:
        next(stream)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Answering alice's task in alice's name is refused; in bob's own name it is not bob's task.
    with pytest.raises(grpc.RpcError) as error:
        impostor.send_update(
            federation.task, [np.full((3,), 1e6, dtype=np.float32)], 10**9, federation.tmp_path
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # bob has no task to upload for
    bob = TestClient(federation.node.port, "bob", bob_token)
    bob.heartbeat()
    with pytest.raises(grpc.RpcError) as error:
        bob.download(federation.task.model_id)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    update = fedn_pb2.ModelUpdate(
        sender=bob.identity,
        model_id=federation.task.model_id,
        model_update_id=str(uuid.uuid4()),
        correlation_id=federation.task.correlation_id,
        meta='{"training_metadata": {"num_examples": 1000000000}}',
    )
    answer = bob.combiner.SendModelUpdate(update, metadata=bob.metadata, timeout=5)
    assert "refused" in answer.response and "'alice'" in answer.response
    # The honest answer still counts.
    accepted = federation.alice.send_update(
        federation.task, [np.full((3,), 2.0, dtype=np.float32)], 5, federation.tmp_path
    )
    assert accepted.response == "Model update accepted."
    impostor.close()
    bob.close()


def test_an_update_must_use_the_callers_own_upload(secured_node: CombinerNode, tmp_path: Path):
    federation = Federation(secured_node, tmp_path)  # alice, and a round for her only
    carol = TestClient(secured_node.port, "carol", bearer(client_token("carol")))
    try:
        layers = [np.full((3,), 7.0, dtype=np.float32)]
        alice_upload = str(uuid.uuid4())
        path = tmp_path / "alice.npz"
        save_model(path, layers)
        federation.alice.upload_bytes(alice_upload, path.read_bytes())
        stolen = fedn_pb2.ModelUpdate(
            sender=carol.identity,
            model_id=federation.task.model_id,
            model_update_id=alice_upload,
            correlation_id=federation.task.correlation_id,
            meta='{"training_metadata": {"num_examples": 3}}',
        )
        with pytest.raises(grpc.RpcError) as error:
            carol.combiner.SendModelUpdate(stolen, metadata=carol.metadata, timeout=5)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert secured_node.files.upload_owner(alice_upload) == "alice"  # still hers to claim
    finally:
        federation.close()
        carol.close()


def test_uploads_are_bounded_by_the_callers_tasks(federation: Federation):
    files = federation.node.files
    for _ in range(5):
        federation.alice.upload_bytes(str(uuid.uuid4()), b"x" * 1024)
    # One outstanding task: only the newest upload stays on disk.
    assert files.pending_uploads("alice") == 1
    assert len(list(files.updates_dir.iterdir())) == 1


def test_revoked_token_is_refused_and_its_stream_closed(federation: Federation):
    alice = federation.alice
    stream_done = alice._thread
    federation.node.revoked.replace(
        [jwt.decode(alice.metadata[1][1].split()[1], options={"verify_signature": False})["jti"]]
    )
    assert stream_done is not None
    stream_done.join(timeout=5)
    assert not stream_done.is_alive()
    with pytest.raises(grpc.RpcError) as error:
        alice.heartbeat()
    assert (error.value.code(), error.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, "Token revoked")
    assert "alice" not in federation.node.registry.online_names()


def test_combiner_follows_the_controllers_revocation_list(
    make_node: Callable[..., CombinerNode], controller: FakeController
):
    doomed = client_token("alice")
    doomed_jti = jwt.decode(doomed, options={"verify_signature": False})["jti"]
    node = make_node(
        auth=AuthSettings(secret=SECRET), token=token("combiner", sub=COMBINER), revocation_poll_seconds=0.1
    )
    alice = TestClient(node.port, "alice", bearer(doomed))
    assert alice.heartbeat().response == "Heartbeat received"
    controller.script("/api/v1/tokens/revoked/", (200, {"jti": [doomed_jti]}))
    wait_for(lambda: doomed_jti in node.revoked, timeout=5)
    with pytest.raises(grpc.RpcError) as error:
        alice.heartbeat()
    assert error.value.details() == "Token revoked"
    # The controller is unreachable now: the last list still holds.
    controller.responses["/api/v1/tokens/revoked/"] = [(503, {"message": "down"})]
    time.sleep(0.5)
    with pytest.raises(grpc.RpcError) as error:
        alice.heartbeat()
    assert error.value.details() == "Token revoked"
    # It asks with its own token.
    polls = [headers for path, _, headers in controller.requests if path == "/api/v1/tokens/revoked/"]
    assert polls and all(headers.get("Authorization", "").startswith("Bearer ") for headers in polls)
    alice.close()


def test_uploads_need_a_running_round_even_with_auth_off(node: CombinerNode):
    anonymous = TestClient(node.port, "anyone")
    with pytest.raises(grpc.RpcError) as error:
        anonymous.upload_bytes(str(uuid.uuid4()), b"x" * 1024)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert list(node.files.updates_dir.iterdir()) == []
    anonymous.close()


def test_tokenless_clients_allowed_only_for_client_calls(make_node: Callable[..., CombinerNode]):
    node = make_node(auth=AuthSettings(secret=SECRET, allow_tokenless_clients=True))
    anonymous = TestClient(node.port, "legacy")
    assert anonymous.heartbeat().response == "Heartbeat received"
    with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        connector = fedn_pb2_grpc.ConnectorStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            connector.AcceptingClients(fedn_pb2.ConnectionRequest(), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A token that is sent is still checked, and still binds the name.
    impostor = TestClient(node.port, "legacy", bearer(client_token("bob")))
    with pytest.raises(grpc.RpcError) as error:
        impostor.heartbeat()
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    anonymous.close()
    impostor.close()


def test_settings_from_env():
    assert AuthSettings.from_env({}) is None
    settings = AuthSettings.from_env(
        {
            "FEDN_JWT_SECRET_KEY": "s",
            "FEDN_AUTH_SCHEME": "Token",
            "FEDPLANE_GRPC_ALLOW_TOKENLESS_CLIENTS": "true",
        }
    )
    assert settings is not None and settings.scheme == "Token" and settings.allow_tokenless_clients
