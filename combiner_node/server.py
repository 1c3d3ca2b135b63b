"""The gRPC server: grpc.aio on a loop thread of its own, message-size and keepalive options,
health service, optional (m)TLS.

Client task streams and the small calls (heartbeats, statuses, control) are coroutines on the
loop, so an open stream costs a coroutine, not a thread, and thousands of idle streams never starve
a control call. The calls that move model bytes or fold an update (Upload, Download,
SendModelUpdate) stay plain functions, which grpc.aio runs on its migration thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from combiner_node.servicers import add_model_service
from fedplane.proto import fedn_pb2_grpc

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVICE_NAMES = ("fedn.Connector", "fedn.Combiner", "fedn.ModelService", "fedn.Control", "fedn.Reducer")
# Threads for the calls that block on the disk: uploads, downloads and update folds at once.
BLOCKING_CALL_WORKERS = 32

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    # Clients ping while their task stream idles; do not answer that with GOAWAY.
    ("grpc.http2.max_ping_strikes", 0),
    # A second combiner on a taken port must fail to start, not silently share the connections.
    ("grpc.so_reuseport", 0),
]

# Calls that arrived while the event loop was busy wait in gRPC's queue until the loop takes them,
# one at a time. Past gRPC's own limits (1,000, rejecting all at 3,000) it turns calls away with
# CANCELLED at random: 5,000 clients' heartbeats and a round's task going out to all of them outrun
# those limits in a moment's stall. A late answer is better than a refused heartbeat, so the queue is
# sized by the clients the combiner takes: each may have a heartbeat and another call waiting, and
# the controller's calls come on top.
PENDING_CALLS_PER_CLIENT = 2
PENDING_CALLS_MARGIN = 1_000


def pending_call_options(max_clients: int) -> list[tuple[str, int]]:
    """gRPC's limits on calls waiting for the server to take them, for `max_clients` clients."""
    soft = PENDING_CALLS_PER_CLIENT * max_clients + PENDING_CALLS_MARGIN
    return [
        ("grpc.server.max_pending_requests", soft),
        ("grpc.server.max_pending_requests_hard_limit", 2 * soft),
    ]


T = TypeVar("T")


class PortInUse(OSError):
    pass


@dataclass(frozen=True)
class TlsConfig:
    certificate_pem: bytes
    private_key_pem: bytes
    # When set, every caller must present a certificate this CA bundle signed (mTLS); the health
    # service included, since the handshake comes before any rpc.
    client_ca_pem: bytes | None = None


@dataclass(frozen=True)
class Servicers:
    connector: fedn_pb2_grpc.ConnectorServicer
    combiner: fedn_pb2_grpc.CombinerServicer
    model_service: fedn_pb2_grpc.ModelServiceServicer
    control: fedn_pb2_grpc.ControlServicer
    reducer: fedn_pb2_grpc.ReducerServicer


class LoopServer:
    """A grpc.aio server bound at construction, served from its own event-loop thread.

    The methods are called from ordinary threads; they run their work on the loop and wait for it.
    """

    def __init__(
        self,
        address: str,
        servicers: Servicers,
        *,
        max_clients: int,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        tls: TlsConfig | None = None,
        blocking_workers: int = BLOCKING_CALL_WORKERS,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="grpc-loop", daemon=True)
        self._thread.start()
        self._blocking_pool = futures.ThreadPoolExecutor(
            max_workers=blocking_workers, thread_name_prefix="grpc"
        )
        try:
            self.server, self.port, self.health = self.run(
                self._build(address, servicers, list(interceptors), tls, max_clients), timeout=30
            )
        except BaseException:
            self._close_loop()
            raise

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coroutine` on the loop and wait (at most `timeout` s) for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Schedule `callback` on the loop from any thread; a no-op once the loop has closed."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(callback)

    async def _build(
        self,
        address: str,
        servicers: Servicers,
        interceptors: list[grpc.aio.ServerInterceptor],
        tls: TlsConfig | None,
        max_clients: int,
    ) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
        server = grpc.aio.server(
            migration_thread_pool=self._blocking_pool,
            interceptors=interceptors,
            options=SERVER_OPTIONS + pending_call_options(max_clients),
        )
        fedn_pb2_grpc.add_ConnectorServicer_to_server(servicers.connector, server)
        fedn_pb2_grpc.add_CombinerServicer_to_server(servicers.combiner, server)
        add_model_service(servicers.model_service, server)
        fedn_pb2_grpc.add_ControlServicer_to_server(servicers.control, server)
        fedn_pb2_grpc.add_ReducerServicer_to_server(servicers.reducer, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for service in ("", *SERVICE_NAMES):
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        try:
            if tls is None:
                port = server.add_insecure_port(address)
            else:
                credentials = grpc.ssl_server_credentials(
                    [(tls.private_key_pem, tls.certificate_pem)],
                    root_certificates=tls.client_ca_pem,
                    require_client_auth=tls.client_ca_pem is not None,
                )
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise PortInUse(f"could not bind the gRPC server to {address} (in use?): {exc}") from exc
        if port == 0:
            raise PortInUse(f"could not bind the gRPC server to {address} (in use?)")
        return server, port, health_servicer

    def start(self) -> None:
        self.run(self.server.start(), timeout=30)

    def enter_graceful_shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.health.enter_graceful_shutdown(), timeout=5)

    def stop(self, grace: float) -> None:
        """End every call (those still running get `grace` seconds), then close the loop."""
        try:
            self.run(self.server.stop(grace), timeout=grace + 5)
        except Exception:
            logger.exception("grpc server did not stop cleanly")
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        if self.loop.is_closed():
            return
        self.call_soon(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()
        self._blocking_pool.shutdown(wait=False, cancel_futures=True)
