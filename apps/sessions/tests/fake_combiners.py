"""Real gRPC servers on port 0 that answer like a combiner, optionally slowly, and count Start calls."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from apps.combiners.models import Combiner
from apps.combiners.services import combiner_register
from fedplane.proto import fedn_pb2, fedn_pb2_grpc


class FakeCombiner(fedn_pb2_grpc.ConnectorServicer, fedn_pb2_grpc.ControlServicer):
    """Lists `clients` as online and accepts Start, each after `delay` seconds."""

    def __init__(self, clients: list[str], delay: float, released: threading.Event) -> None:
        self.clients = clients
        self.delay = delay
        self.released = released
        self.starts: list[dict[str, str]] = []

    def _pause(self) -> None:
        if self.delay:
            # Ends early when the test is over, so the server stops at once.
            self.released.wait(self.delay)

    def ListActiveClients(self, request: Any, context: Any) -> fedn_pb2.ClientList:
        self._pause()
        return fedn_pb2.ClientList(client=[fedn_pb2.Client(name=name) for name in self.clients])

    def Start(self, request: Any, context: Any) -> fedn_pb2.ControlResponse:
        self._pause()
        self.starts.append({p.key: p.value for p in request.parameter})
        return fedn_pb2.ControlResponse(
            message="Success", parameter=[fedn_pb2.Parameter(key="job_id", value="j")]
        )


@contextmanager
def fake_combiners(specs: dict[str, tuple[list[str], float]]) -> Iterator[dict[str, FakeCombiner]]:
    """name -> (online clients, delay): one registered gRPC server per name, stopped on exit."""
    released = threading.Event()
    servers: list[grpc.Server] = []
    fakes: dict[str, FakeCombiner] = {}
    try:
        for name, (clients, delay) in specs.items():
            server = grpc.server(ThreadPoolExecutor(max_workers=8))
            fake = FakeCombiner(clients, delay, released)
            fedn_pb2_grpc.add_ConnectorServicer_to_server(fake, server)
            fedn_pb2_grpc.add_ControlServicer_to_server(fake, server)
            checker = health.HealthServicer()
            checker.set("", health_pb2.HealthCheckResponse.SERVING)
            health_pb2_grpc.add_HealthServicer_to_server(checker, server)
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            servers.append(server)
            fakes[name] = fake
            combiner_register(name=name, address="127.0.0.1", port=port)
        yield fakes
    finally:
        released.set()
        for server in servers:
            server.stop(grace=None)


def unreachable_combiner(name: str) -> Combiner:
    """A registered combiner nothing listens for (connection refused at once)."""
    return Combiner.objects.create(name=name, address="127.0.0.1", port=1)
