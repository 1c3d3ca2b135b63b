"""Client table, heartbeats, batched online/offline reports, model transfer, graceful shutdown."""

from __future__ import annotations

import asyncio
import io
import time
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest

from combiner_node.clients import ClientRegistry, ClientTransition
from combiner_node.modelfiles import CHUNK_BYTES
from combiner_node.tests.conftest import control_stub, save_model, start_request, wait_for
from fedplane.proto import fedn_pb2, fedn_pb2_grpc


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_registry_reports_each_transition_once() -> None:
    clock = ManualClock()
    registry = ClientRegistry(online_window=10, clock=clock)
    registry.touch("a")
    registry.touch("b")
    assert [(t.name, t.status) for t in registry.transitions()] == [("a", "online"), ("b", "online")]
    assert registry.transitions() == []
    clock.now += 5
    registry.touch("b")
    clock.now += 6
    assert registry.online_names() == ["b"]
    assert [(t.name, t.status) for t in registry.transitions()] == [("a", "offline")]
    registry.touch("a")
    assert [(t.name, t.status) for t in registry.transitions()] == [("a", "online")]


def test_task_queue_discards_finished_round_tasks() -> None:
    registry = ClientRegistry(online_window=10)
    tasks = registry.tasks_of("a")
    tasks.put(fedn_pb2.TaskRequest(correlation_id="old"))
    tasks.put(fedn_pb2.TaskRequest(correlation_id="new"))
    assert registry.discard_tasks({"old"}) == 1
    first = asyncio.run(tasks.next_task(timeout=0.1))
    assert first is not None and first.correlation_id == "new"
    assert asyncio.run(tasks.next_task(timeout=0.05)) is None


def test_heartbeats_make_clients_online_and_silence_makes_them_offline(node, make_client, controller):
    clients = [make_client(f"hb-{i}", online=False) for i in range(5)]
    for _ in range(3):
        for client in clients:
            assert client.heartbeat().response == "Heartbeat received"
    channel = grpc.insecure_channel(f"127.0.0.1:{node.port}")
    connector = fedn_pb2_grpc.ConnectorStub(channel)
    listed = connector.ListActiveClients(fedn_pb2.ListClientsRequest(channel=fedn_pb2.TASK_QUEUE), timeout=5)
    assert sorted(c.name for c in listed.client) == [f"hb-{i}" for i in range(5)]
    assert {c.role for c in listed.client} == {fedn_pb2.WORKER}

    def reported(status: str) -> set[str]:
        return {
            entry["name"]
            for body in controller.bodies("/api/v1/combiners/combiner-1/clients")
            for entry in body["clients"]
            if entry["status"] == status
        }

    wait_for(lambda: reported("online") == {f"hb-{i}" for i in range(5)})
    # 15 heartbeats became at most a couple of batched reports.
    assert len(controller.bodies("/api/v1/combiners/combiner-1/clients")) <= 2
    # The online window is 1 s: silent clients go offline and are reported in a batch.
    wait_for(lambda: reported("offline") == {f"hb-{i}" for i in range(5)}, timeout=5)
    listed = connector.ListActiveClients(fedn_pb2.ListClientsRequest(), timeout=5)
    assert list(listed.client) == []
    channel.close()


def test_open_task_stream_keeps_a_client_online_and_is_announced(node, make_client, controller):
    make_client("streamer")  # one heartbeat, then an open task stream and no more heartbeats
    heartbeat_lapses = datetime.now(UTC) + timedelta(seconds=node.registry.online_window)

    def renewed_after_the_heartbeat_lapsed() -> list[ClientTransition]:
        return [
            e for e in node.registry.snapshot() if e.name == "streamer" and e.last_seen > heartbeat_lapses
        ]

    # Alone, the heartbeat would have made the client offline by now; the stream kept it online.
    (entry,) = wait_for(renewed_after_the_heartbeat_lapsed)
    assert entry.status == "online"
    assert node.registry.online_names() == ["streamer"]
    statuses = wait_for(
        lambda: [s for s in controller.items("/api/v1/statuses/") if "TaskStream" in s["status"]]
    )
    assert statuses[0]["status"] == "Client streamer connecting to TaskStream."
    assert statuses[0]["sender"] == {"name": "combiner-1", "role": "COMBINER"}


def test_accepting_clients_follows_max_clients(make_node, controller):
    node = make_node(max_clients=2)
    channel = grpc.insecure_channel(f"127.0.0.1:{node.port}")
    connector = fedn_pb2_grpc.ConnectorStub(channel)

    def accepting() -> int:
        return connector.AcceptingClients(fedn_pb2.ConnectionRequest(), timeout=5).status

    assert accepting() == fedn_pb2.ACCEPTING
    for name in ("a", "b"):
        connector.SendHeartbeat(fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name=name)), timeout=5)
    assert accepting() == fedn_pb2.NOT_ACCEPTING
    channel.close()


def test_status_messages_are_forwarded_in_camel_case(node, make_client, controller):
    client = make_client("reporter", online=False)
    status = fedn_pb2.Status(
        sender=client.identity,
        status="Model update completed.",
        log_level=fedn_pb2.Status.AUDIT,
        type=fedn_pb2.MODEL_UPDATE,
        correlation_id="c-1",
        session_id="s-1",
    )
    status.timestamp.GetCurrentTime()
    client.connector.SendStatus(status, metadata=client.metadata, timeout=5)
    forwarded = wait_for(
        lambda: [s for s in controller.items("/api/v1/statuses/") if s["status"].startswith("Model")]
    )
    item = forwarded[0]
    assert item["logLevel"] == "AUDIT" and item["type"] == "MODEL_UPDATE"
    assert item["correlationId"] == "c-1" and item["sessionId"] == "s-1"
    assert item["sender"] == {"name": "reporter", "role": "WORKER"} and item["extra"] == ""


def test_bad_client_name_is_invalid_argument(node):
    channel = grpc.insecure_channel(f"127.0.0.1:{node.port}")
    connector = fedn_pb2_grpc.ConnectorStub(channel)
    with pytest.raises(grpc.RpcError) as error:
        connector.SendHeartbeat(fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name="../x")), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()


def test_download_streams_one_mebibyte_chunks(node, make_client, tmp_path):
    path = tmp_path / "big.npz"
    save_model(path, [np.arange(400_000, dtype=np.float64)])  # about 3.2 MB
    with path.open("rb") as source:
        node.files.stage("big-model", source)
    client = make_client("downloader", online=False)
    payload, responses = client.download("big-model")
    assert payload == path.read_bytes()
    assert [r.status for r in responses[:-1]] == [fedn_pb2.IN_PROGRESS] * (len(responses) - 1)
    assert responses[-1].status == fedn_pb2.OK and responses[-1].data == b""
    assert max(len(r.data) for r in responses) == CHUNK_BYTES
    assert len(responses) == 1 + -(-len(payload) // CHUNK_BYTES)

    missing, responses = client.download("unknown-model")
    assert missing == b"" and [r.status for r in responses] == [fedn_pb2.FAILED]


def test_upload_writes_the_file_and_refuses_bad_uploads(make_node, make_client, store, tmp_path):
    node = make_node(max_upload_bytes=3 * CHUNK_BYTES)
    client = make_client("uploader", port=node.port)
    with pytest.raises(grpc.RpcError) as idle:
        client.upload_bytes("update-0", b"x")
    assert idle.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # no round, no task to upload for
    seed = tmp_path / "seed.npz"
    save_model(seed, [np.zeros(3)])
    store.write("models/seed.npz", io.BytesIO(seed.read_bytes()))
    channel, control = control_stub(node.port)
    with channel:
        control.Start(
            start_request(model_id="seed", round_id="1", task="training", round_timeout=30), timeout=10
        )
    client.next_task()
    payload = bytes(range(256)) * 9000  # about 2.2 MiB, three chunks
    response = client.upload_bytes("update-1", payload)
    assert (response.id, response.status, response.message) == (
        "update-1",
        fedn_pb2.OK,
        "Got model successfully.",
    )
    assert node.files.update_path("update-1").read_bytes() == payload

    with pytest.raises(grpc.RpcError) as again:
        client.upload_bytes("update-1", b"x")
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as too_big:
        client.upload_bytes("update-2", b"x" * (3 * CHUNK_BYTES + 1))
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as escape:
        client.upload_bytes("../escape", b"x")
    assert escape.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    unterminated = iter([fedn_pb2.ModelRequest(id="update-3", data=b"abc", status=fedn_pb2.IN_PROGRESS)])
    with pytest.raises(grpc.RpcError) as cut:
        client.models.Upload(unterminated, timeout=5)
    assert cut.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(p.name for p in node.files.updates_dir.iterdir()) == ["update-1"]


def test_unimplemented_rpcs(node):
    channel = grpc.insecure_channel(f"127.0.0.1:{node.port}")
    with pytest.raises(grpc.RpcError) as error:
        fedn_pb2_grpc.ReducerStub(channel).GetGlobalModel(fedn_pb2.GetGlobalModelRequest(), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as error:
        fedn_pb2_grpc.ConnectorStub(channel).ReassignClient(fedn_pb2.ReassignRequest(), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    channel.close()


def test_graceful_shutdown_reports_the_running_round_and_ends_streams(
    make_node, make_client, controller, store, tmp_path
):
    node = make_node()
    path = tmp_path / "seed.npz"
    save_model(path, [np.zeros(3)])
    store.write("models/seed.npz", io.BytesIO(path.read_bytes()))
    client = make_client("worker", port=node.port)
    channel, control = control_stub(node.port)
    with channel:
        control.Start(
            start_request(round_id="5", model_id="seed", task="training", round_timeout=60), timeout=5
        )
    client.next_task()
    started = time.monotonic()
    node.stop(grace=2.0)
    assert time.monotonic() - started < 5
    # The report was delivered before stop() returned.
    reports = controller.bodies("/api/v1/rounds/5/reports")
    assert reports and reports[0]["status"] == "Failed" and reports[0]["reason"] == "combiner shutting down"
    # Its clients are reported offline, so the controller stops assigning work through it.
    last_batch = controller.bodies("/api/v1/combiners/combiner-1/clients")[-1]["clients"]
    assert [(c["name"], c["status"]) for c in last_batch] == [("worker", "offline")]
    client._thread.join(timeout=5)
    assert not client._thread.is_alive()
