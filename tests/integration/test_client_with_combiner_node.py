"""Two edge clients run a training round and a validation round on a real, in-process combiner
node with the digits package; the controller is the FakeController (the combiner reports to it)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedplane.client.tests.fakes import FakeController, package_from_dir, wait_until
from fedplane.client.tests.test_client_integration import REPO, RunningClient, _config
from fedplane.proto import fedn_pb2, fedn_pb2_grpc

node_module = pytest.importorskip("combiner_node.node")
store_module = pytest.importorskip("combiner_node.store")

DIGITS = REPO / "examples" / "digits"


@pytest.fixture
def network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[object, FakeController, object]]:
    monkeypatch.setenv("FEDPLANE_NUM_CLIENTS", "2")  # read by the digits package's entry points
    store = store_module.DirectoryStore(tmp_path / "media")
    controller = FakeController(package=package_from_dir(DIGITS / "client")).start()
    node = node_module.CombinerNode(
        node_module.NodeSettings(
            name="combiner-1",
            store=store,
            port=0,
            controller_url=controller.url,
            workdir=tmp_path / "combiner",
        )
    )
    node.start()
    controller.combiner_port = node.port
    clients = [
        RunningClient(_config(controller.url, tmp_path / name, name=name))
        for name in ("client-1", "client-2")
    ]
    try:
        yield node, controller, store
    finally:
        for client in clients:
            client.stop()
        node.stop(grace=1.0)
        controller.stop()


def _start(port: int, **config: object) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = fedn_pb2.ControlRequest(
            command=fedn_pb2.START,
            parameter=[fedn_pb2.Parameter(key=key, value=str(value)) for key, value in config.items()],
        )
        fedn_pb2_grpc.ControlStub(channel).Start(request, timeout=10)


def _round_config(model_id: str, round_id: str, task: str) -> dict[str, object]:
    return {
        "session_id": "session-1",
        "round_id": round_id,
        "model_id": model_id,
        "task": task,
        "aggregator": "fedavg",
        "aggregator_kwargs": {},
        "round_timeout": 60,
        "buffer_size": -1,
        "clients_required": 2,
        "clients_requested": 8,
        "delete_models_storage": True,
        "helper_type": "numpyhelper",
        "validate": True,
    }


def test_training_and_validation_rounds_on_a_real_combiner(network: tuple, tmp_path: Path) -> None:
    node, controller, store = network
    online = "/api/v1/combiners/combiner-1/clients"
    wait_until(
        lambda: (
            {
                c["name"]
                for body in controller.posted(online)
                for c in body["clients"]
                if c["status"] == "online"
            }
            >= {"client-1", "client-2"}
        ),
        20,
        "both clients online at the combiner",
    )
    seed = tmp_path / "seed.npz"
    subprocess.run(
        [sys.executable, str(DIGITS / "client" / "model.py"), "build", str(seed)], check=True, timeout=60
    )
    seed_id = str(uuid.uuid4())
    store.write(f"models/{seed_id}.npz", io.BytesIO(seed.read_bytes()))

    _start(node.port, **_round_config(seed_id, "1", "training"))
    wait_until(lambda: controller.posted("/api/v1/rounds/1/reports"), 90, "round report")
    report = controller.posted("/api/v1/rounds/1/reports")[0]
    assert report["status"] == "Success", report
    assert sorted(report["participants"]) == ["client-1", "client-2"]
    assert report["num_examples"] == 1438  # the two halves of the training split
    combined = tmp_path / "combined.npz"
    with store.open_read(f"models/{report['model_id']}.npz") as source:
        combined.write_bytes(source.read())
    with np.load(combined, allow_pickle=False) as weights:
        assert weights.files == ["0", "1", "2", "3"]

    _start(node.port, **_round_config(report["model_id"], "2", "validation"))
    wait_until(lambda: len(controller.posted("/api/v1/validations/")) == 2, 60, "two validations")
    validations = controller.posted("/api/v1/validations/")
    assert {v["sender"]["name"] for v in validations} == {"client-1", "client-2"}
    for validation in validations:
        metrics = json.loads(validation["data"])
        assert metrics["test_accuracy"] > 0.8
    statuses = {s["status"] for s in controller.posted("/api/v1/statuses/")}
    assert {"Model update completed.", "Model validation completed."} <= statuses


def test_a_client_whose_token_is_revoked_leaves_the_combiner_and_exits(tmp_path: Path) -> None:
    import time

    import jwt

    auth_module = pytest.importorskip("combiner_node.auth")
    secret = "integration-secret-of-at-least-thirty-two-bytes"
    jti = uuid.uuid4().hex
    token = jwt.encode(
        {"role": "client", "sub": "client-1", "jti": jti, "exp": int(time.time()) + 600},
        secret,
        algorithm="HS256",
    )
    controller = FakeController(package=package_from_dir(DIGITS / "client")).start()
    node = node_module.CombinerNode(
        node_module.NodeSettings(
            name="combiner-1",
            store=store_module.DirectoryStore(tmp_path / "media"),
            port=0,
            controller_url=controller.url,
            workdir=tmp_path / "combiner",
            auth=auth_module.AuthSettings(secret=secret),
        )
    )
    node.start()
    controller.combiner_port = node.port
    client = RunningClient(
        _config(controller.url, tmp_path / "client-1", token=token, heartbeat_interval=0.5)
    )
    try:
        wait_until(lambda: node.registry.online_names() == ["client-1"], 30, "client-1 online")
        # The operator revokes the token: the combiner learns it, the controller refuses it.
        controller.scripted_assign = [(401, {"message": "Token revoked"})]
        revoked_at = time.monotonic()
        node.revoked.replace([jti])
        client.thread.join(timeout=15)
        assert not client.thread.is_alive(), "the client kept going with a revoked token"
        assert client.exit_code == 1
        assert time.monotonic() - revoked_at < 10
        wait_until(lambda: node.registry.online_names() == [], 5, "client-1 offline at the combiner")
        assert controller.assign_requests[-1]["authorization"] == f"Bearer {token}"
    finally:
        client.stop()
        node.stop(grace=1.0)
        controller.stop()
