"""CombinerClient against a real combiner node on port 0 (no Django involved)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from apps.combiners.grpc_client import (
    CombinerClient,
    CombinerRejected,
    CombinerUnreachable,
    stringify_config,
)
from combiner_node.auth import AuthSettings
from combiner_node.node import CombinerNode, NodeSettings
from combiner_node.server import TlsConfig
from combiner_node.store import DirectoryStore
from controlplane.tokens import TokenSettings, mint_token
from fedplane.proto import fedn_pb2, fedn_pb2_grpc
from tests.ports import free_port

SECRET = "grpc-client-test-secret-of-sufficient-length"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[CombinerNode]:
    combiner = CombinerNode(
        NodeSettings(
            name="c1", store=DirectoryStore(tmp_path / "media"), port=0, workdir=tmp_path / "w", max_clients=2
        )
    )
    combiner.start()
    yield combiner
    combiner.stop(grace=1.0)


def heartbeat(port: int, name: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        fedn_pb2_grpc.ConnectorStub(channel).SendHeartbeat(
            fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name=name)), timeout=5
        )


def test_lists_clients_and_accepting(node: CombinerNode) -> None:
    client = CombinerClient("127.0.0.1", node.port, timeout=5)
    assert client.health() is True
    assert client.list_active_clients() == []
    assert client.accepting_clients() is True
    heartbeat(node.port, "edge-1")
    heartbeat(node.port, "edge-2")
    assert client.list_active_clients() == ["edge-1", "edge-2"]
    assert client.accepting_clients() is False


def test_start_returns_a_job_id_and_stop_and_set_aggregator_work(node: CombinerNode) -> None:
    client = CombinerClient("127.0.0.1", node.port, timeout=5)
    job_id = client.start(
        {"round_id": "1", "model_id": "m1", "task": "training", "validate": True, "aggregator_kwargs": None}
    )
    assert len(job_id) == 36
    client.stop()
    assert client.set_aggregator("fedavg") is True
    assert client.set_aggregator("no-such-aggregator") is False


def test_bad_config_is_rejected_not_unavailable(node: CombinerNode) -> None:
    client = CombinerClient("127.0.0.1", node.port, timeout=5)
    with pytest.raises(CombinerRejected) as error:
        client.start({"round_id": "1", "model_id": "m1", "round_timeout": "soon"})
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "round_timeout" in str(error.value)


def test_stringify_config_matches_fedn() -> None:
    params = stringify_config({"validate": True, "kwargs": {"a": 1}, "none": None, "n": 5})
    assert [(p.key, p.value) for p in params] == [
        ("validate", "True"),
        ("kwargs", "{'a': 1}"),
        ("none", "None"),
        ("n", "5"),
    ]


def test_unreachable_combiner_raises_within_the_deadline() -> None:
    port = free_port()
    client = CombinerClient("127.0.0.1", port, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(CombinerUnreachable, match=f"127.0.0.1:{port}"):
        client.list_active_clients()
    with pytest.raises(CombinerUnreachable):
        client.start({"round_id": "1"})
    assert client.health() is False
    assert time.monotonic() - started < 5


def test_token_is_sent_as_authorization_metadata(tmp_path: Path) -> None:
    combiner = CombinerNode(
        NodeSettings(
            name="c2",
            store=DirectoryStore(tmp_path / "media"),
            port=0,
            workdir=tmp_path / "w",
            auth=AuthSettings(secret=SECRET),
        )
    )
    combiner.start()
    try:
        anonymous = CombinerClient("127.0.0.1", combiner.port, timeout=5)
        with pytest.raises(CombinerRejected) as error:
            anonymous.list_active_clients()
        assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
        token = mint_token(TokenSettings(secret=SECRET), "admin")
        assert CombinerClient("127.0.0.1", combiner.port, token=token, timeout=5).list_active_clients() == []
        assert anonymous.health() is True
    finally:
        combiner.stop(grace=1.0)


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate"
)
def test_tls_with_a_root_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    combiner = CombinerNode(
        NodeSettings(
            name="tls",
            store=DirectoryStore(tmp_path / "media"),
            port=0,
            workdir=tmp_path / "w",
            tls=TlsConfig(cert.read_bytes(), key.read_bytes()),
        )
    )
    combiner.start()
    try:
        secure = CombinerClient(
            "127.0.0.1", combiner.port, secure=True, root_cert=cert.read_bytes(), timeout=5
        )
        assert secure.accepting_clients() is True
        with pytest.raises(CombinerUnreachable):
            CombinerClient("127.0.0.1", combiner.port, timeout=2).list_active_clients()
    finally:
        combiner.stop(grace=1.0)


def test_a_combiner_restarted_on_its_port_is_reached_at_the_first_call_after(tmp_path: Path) -> None:
    """Calls share a kept connection; when its combiner went away and came back on the same
    address, the next call is answered, not failed on the old connection."""

    def start(port: int, name: str) -> CombinerNode:
        node = CombinerNode(
            NodeSettings(
                name=name, store=DirectoryStore(tmp_path / "media"), port=port, workdir=tmp_path / name
            )
        )
        node.start()
        return node

    first = start(0, "first")
    port = first.port
    client = CombinerClient("127.0.0.1", port, timeout=5)
    try:
        assert client.list_active_clients() == []
        heartbeat(port, "edge-1")
        assert client.list_active_clients() == ["edge-1"]
    finally:
        first.stop(grace=1.0)
    second = start(port, "second")
    try:
        assert CombinerClient("127.0.0.1", port, timeout=5).list_active_clients() == []
        assert client.health() is True
    finally:
        second.stop(grace=1.0)
    with pytest.raises(CombinerUnreachable):
        client.list_active_clients()
