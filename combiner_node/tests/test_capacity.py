"""A combiner's capacity: a taken port, a full combiner, and hundreds of open task streams."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from combiner_node.node import CombinerNode
from combiner_node.server import PortInUse
from combiner_node.tests.conftest import DEADLINE, TestClient, wait_for
from combiner_node.tests.test_cli import run_combiner
from combiner_node.tests.test_rounds import round_config, seed_model, start
from fedplane.proto import fedn_pb2, fedn_pb2_grpc

# More streams than the synchronous server had threads (350), where every client used to stall.
MANY_CLIENTS = 400


def accepting(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        connector = fedn_pb2_grpc.ConnectorStub(channel)
        return connector.AcceptingClients(fedn_pb2.ConnectionRequest(), timeout=DEADLINE).status


def test_a_second_combiner_on_a_taken_port_does_not_start(node: CombinerNode, tmp_path: Path) -> None:
    process = run_combiner(
        "--name", "second", "--port", str(node.port), "--no-register", "--store", str(tmp_path)
    )
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert f"could not bind the gRPC server to 0.0.0.0:{node.port}" in stderr or "in use" in stderr


def test_a_taken_port_raises_port_in_use(node: CombinerNode, make_node: Callable[..., CombinerNode]) -> None:
    with pytest.raises(PortInUse):
        make_node(name="combiner-2", port=node.port)
    # The first combiner still serves.
    assert accepting(node.port) == fedn_pb2.ACCEPTING


def test_a_full_combiner_refuses_new_streams_and_says_where_to_go(
    make_node: Callable[..., CombinerNode],
) -> None:
    node = make_node(max_clients=2)
    first = TestClient(node.port, "first")
    second = TestClient(node.port, "second")
    late = TestClient(node.port, "late")
    try:
        for client in (first, second):
            client.open_stream()
        wait_for(lambda: node.registry.streaming_count() == 2)
        assert accepting(node.port) == fedn_pb2.NOT_ACCEPTING

        stream = late.combiner.TaskStream(
            fedn_pb2.ClientAvailableMessage(sender=late.identity), metadata=late.metadata, timeout=DEADLINE
        )
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(stream))
        # The code FEDn 0.9.5's client backs off from (5 s) instead of asking again at once.
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "is full" in refused.value.details() and "/add_client" in refused.value.details()

        # A connected client that reconnects keeps its place.
        again = TestClient(node.port, "first")
        again.open_stream()
        assert wait_for(lambda: node.registry.streaming_count() == 2)
        again.close()

        # A client that leaves frees its place for the next one.
        second.close()
        wait_for(lambda: accepting(node.port) == fedn_pb2.ACCEPTING)
        late.open_stream()
        wait_for(lambda: "late" in node.registry.online_names())
    finally:
        for client in (first, second, late):
            client.close()


async def _stream_tasks(
    port: int, names: list[str], started: asyncio.Event
) -> dict[str, fedn_pb2.TaskRequest]:
    """Open one channel and task stream per name; return the first task each stream receives."""
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in names]
    streams = []
    for channel, name in zip(channels, names, strict=True):
        stub = fedn_pb2_grpc.CombinerStub(channel)
        sender = fedn_pb2.Client(name=name, role=fedn_pb2.WORKER)
        streams.append(
            stub.TaskStream(
                fedn_pb2.ClientAvailableMessage(sender=sender), metadata=(("client", name),), timeout=60
            )
        )
    started.set()

    async def first_task(stream: grpc.aio.UnaryStreamCall) -> fedn_pb2.TaskRequest:
        async for task in stream:
            return task
        raise AssertionError("stream ended without a task")

    try:
        tasks = await asyncio.gather(*(first_task(stream) for stream in streams))
        return dict(zip(names, tasks, strict=True))
    finally:
        for stream in streams:
            stream.cancel()
        await asyncio.gather(*(channel.close() for channel in channels))


async def _heartbeats(port: int, names: list[str]) -> list[float]:
    """Every client heartbeats at once, each on its own channel; the latency of each, in seconds."""
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in names]

    async def beat(channel: grpc.aio.Channel, name: str) -> float:
        stub = fedn_pb2_grpc.ConnectorStub(channel)
        sent = time.monotonic()
        response = await stub.SendHeartbeat(
            fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name=name)),
            metadata=(("client", name),),
            timeout=DEADLINE,
        )
        assert response.response == "Heartbeat received"
        return time.monotonic() - sent

    try:
        return await asyncio.gather(
            *(beat(channel, name) for channel, name in zip(channels, names, strict=True))
        )
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


def test_hundreds_of_open_streams_all_get_the_round_and_heartbeats_answer(
    make_node: Callable[..., CombinerNode], store, tmp_path: Path
) -> None:
    node = make_node(max_clients=MANY_CLIENTS + 10)
    names = [f"client-{index}" for index in range(MANY_CLIENTS)]
    loop = asyncio.new_event_loop()
    try:
        opened = asyncio.Event()
        receiving = loop.create_task(_stream_tasks(node.port, names, opened))
        loop.run_until_complete(asyncio.wait_for(opened.wait(), DEADLINE))

        def all_streaming() -> bool:
            loop.run_until_complete(asyncio.sleep(0.05))
            return node.registry.streaming_count() == MANY_CLIENTS

        wait_for(all_streaming, timeout=60)

        # Heartbeats and control calls answer while every stream is open.
        latencies = loop.run_until_complete(_heartbeats(node.port, names))
        assert len(latencies) == MANY_CLIENTS
        with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
            connector = fedn_pb2_grpc.ConnectorStub(channel)
            listed = connector.ListActiveClients(fedn_pb2.ListClientsRequest(), timeout=DEADLINE)
        assert len(listed.client) == MANY_CLIENTS

        model_id = seed_model(store, tmp_path)
        start(
            node.port,
            **round_config(model_id, task="validation", round_id="7", clients_requested=MANY_CLIENTS),
        )
        tasks = loop.run_until_complete(asyncio.wait_for(receiving, 60))
        assert set(tasks) == set(names)
        assert {task.type for task in tasks.values()} == {fedn_pb2.MODEL_VALIDATION}
        assert {task.model_id for task in tasks.values()} == {model_id}
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


# More calls at once than gRPC lets wait for a busy server by default (it starts refusing at 1,000).
BURST_CALLS = 2_500
BURST_CHANNELS = 25
# How long the combiner's loop is held once every call has gone out.
BURST_STALL_SECONDS = 1.5


async def _burst_of_heartbeats(port: int, names: list[str], issued: threading.Event) -> list[str]:
    """A heartbeat of every name at once over a few channels; the status code of each ("OK" or why not)."""
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(BURST_CHANNELS)]

    async def beat(index: int, name: str) -> str:
        stub = fedn_pb2_grpc.ConnectorStub(channels[index % BURST_CHANNELS])
        try:
            await stub.SendHeartbeat(
                fedn_pb2.Heartbeat(sender=fedn_pb2.Client(name=name)),
                metadata=(("client", name),),
                timeout=60,
            )
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return "OK"

    try:
        calls = [asyncio.ensure_future(beat(index, name)) for index, name in enumerate(names)]
        # One turn of this loop sends every call; then the server's loop may come back.
        await asyncio.sleep(0.05)
        issued.set()
        return await asyncio.gather(*calls)
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


def test_a_burst_of_calls_while_the_loop_is_busy_is_answered_not_refused(
    make_node: Callable[..., CombinerNode],
) -> None:
    # An online window longer than the burst takes on a loaded machine: every client that got its
    # heartbeat answered is still online when they are counted.
    node = make_node(max_clients=BURST_CALLS + 10, online_window=120.0)
    names = [f"client-{index}" for index in range(BURST_CALLS)]
    issued = threading.Event()

    def busy_loop() -> None:
        # The combiner's event loop stalls (as under a full collection or a round going out to
        # thousands of streams) while the heartbeats arrive and wait in gRPC's queue: nothing can
        # end the stall early, since no heartbeat is answered until it is over.
        issued.wait(timeout=DEADLINE)
        time.sleep(BURST_STALL_SECONDS)

    node.server.call_soon(busy_loop)
    codes = asyncio.run(_burst_of_heartbeats(node.port, names, issued))
    assert collections.Counter(codes) == {"OK": BURST_CALLS}
    assert len(node.registry.online_names()) == BURST_CALLS
