"""The JWT interceptor on a live server: codes and details per method and role."""

from __future__ import annotations

import time
from typing import Any

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from combiner_node.auth import AuthSettings
from fedplane.proto import fedn_pb2, fedn_pb2_grpc

SECRET = "test-secret-key-with-enough-length-for-hs256"


def token(role: str, **claims: Any) -> str:
    return jwt.encode({"role": role, **claims}, SECRET, algorithm="HS256")


def bearer(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {value}"),)


@pytest.fixture
def secured(make_node):
    node = make_node(auth=AuthSettings(secret=SECRET, custom_claim_key="project", custom_claim_value="p1"))
    channel = grpc.insecure_channel(f"127.0.0.1:{node.port}")
    yield node, channel
    channel.close()


def heartbeat(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> fedn_pb2.Response:
    stub = fedn_pb2_grpc.ConnectorStub(channel)
    return stub.SendHeartbeat(
        fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name="c1")), metadata=metadata, timeout=5
    )


def code_and_details(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value.code(), error.value.details()


def test_client_calls_need_a_client_token(secured):
    _, channel = secured
    assert code_and_details(lambda: heartbeat(channel)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "Token is missing",
    )
    assert heartbeat(channel, bearer(token("client", project="p1"))).response == "Heartbeat received"
    assert code_and_details(lambda: heartbeat(channel, bearer(token("admin", project="p1")))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "Insufficient permissions",
    )
    assert code_and_details(lambda: heartbeat(channel, bearer(token("client", project="other")))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "Insufficient permissions",
    )
    assert code_and_details(lambda: heartbeat(channel, bearer("not-a-jwt"))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "Invalid token",
    )
    assert (
        code_and_details(
            lambda: heartbeat(channel, (("authorization", f"Token {token('client', project='p1')}"),))
        )[0]
        == grpc.StatusCode.UNAUTHENTICATED
    )


def test_expired_token_says_so(secured):
    _, channel = secured
    expired = token("client", project="p1", exp=int(time.time()) - 60)
    assert code_and_details(lambda: heartbeat(channel, bearer(expired))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "Token expired",
    )


def test_streaming_calls_are_refused_with_the_same_codes(secured):
    _, channel = secured
    combiner = fedn_pb2_grpc.CombinerStub(channel)
    stream = combiner.TaskStream(
        fedn_pb2.ClientAvailableMessage(sender=fedn_pb2.Client(name="c1")), timeout=5
    )
    assert code_and_details(lambda: next(stream))[0] == grpc.StatusCode.UNAUTHENTICATED
    models = fedn_pb2_grpc.ModelServiceStub(channel)
    upload = iter([fedn_pb2.ModelRequest(id="m", status=fedn_pb2.OK)])
    assert code_and_details(lambda: models.Upload(upload, timeout=5))[0] == grpc.StatusCode.UNAUTHENTICATED


def test_control_calls_need_admin_or_combiner_role(secured):
    _, channel = secured
    control = fedn_pb2_grpc.ControlStub(channel)
    request = fedn_pb2.ControlRequest(parameter=[fedn_pb2.Parameter(key="aggregator", value="fedavg")])
    assert (
        code_and_details(lambda: control.SetAggregator(request, timeout=5))[0]
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        code_and_details(
            lambda: control.SetAggregator(request, metadata=bearer(token("client", project="p1")), timeout=5)
        )[0]
        == grpc.StatusCode.PERMISSION_DENIED
    )
    for role in ("admin", "combiner"):
        answer = control.SetAggregator(request, metadata=bearer(token(role, project="p1")), timeout=5)
        assert answer.message == "Success"
    connector = fedn_pb2_grpc.ConnectorStub(channel)
    assert (
        code_and_details(lambda: connector.ListActiveClients(fedn_pb2.ListClientsRequest(), timeout=5))[0]
        == grpc.StatusCode.UNAUTHENTICATED
    )


def test_health_check_is_open(secured):
    _, channel = secured
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_tokenless_clients_allowed_only_for_client_calls(make_node):
    node = make_node(auth=AuthSettings(secret=SECRET, allow_tokenless_clients=True))
    with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        assert heartbeat(channel).response == "Heartbeat received"
        connector = fedn_pb2_grpc.ConnectorStub(channel)
        assert (
            code_and_details(lambda: connector.AcceptingClients(fedn_pb2.ConnectionRequest(), timeout=5))[0]
            == grpc.StatusCode.UNAUTHENTICATED
        )


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
