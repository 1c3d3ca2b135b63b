"""The gRPC server factory: message-size and keepalive options, health service, optional (m)TLS."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from combiner_node.servicers import add_model_service
from fedplane.proto import fedn_pb2_grpc

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVICE_NAMES = ("fedn.Connector", "fedn.Combiner", "fedn.ModelService", "fedn.Control", "fedn.Reducer")

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    # Clients ping while their task stream idles; do not answer that with GOAWAY.
    ("grpc.http2.max_ping_strikes", 0),
]


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


def create_server(
    address: str,
    servicers: Servicers,
    *,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    tls: TlsConfig | None = None,
    max_workers: int = 350,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Build (not start) the server bound to `address` ("host:port", port 0 = any free port).

    Every connected client holds one worker thread for its task stream, hence the large pool.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=list(interceptors),
        options=SERVER_OPTIONS,
    )
    fedn_pb2_grpc.add_ConnectorServicer_to_server(servicers.connector, server)
    fedn_pb2_grpc.add_CombinerServicer_to_server(servicers.combiner, server)
    add_model_service(servicers.model_service, server)
    fedn_pb2_grpc.add_ControlServicer_to_server(servicers.control, server)
    fedn_pb2_grpc.add_ReducerServicer_to_server(servicers.reducer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", *SERVICE_NAMES):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls.private_key_pem, tls.certificate_pem)],
            root_certificates=tls.client_ca_pem,
            require_client_auth=tls.client_ca_pem is not None,
        )
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"could not bind the gRPC server to {address}")
    return server, port, health_servicer
