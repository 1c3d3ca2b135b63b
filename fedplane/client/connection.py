"""The gRPC link to the assigned combiner: channel, credentials, metadata and stubs."""

from __future__ import annotations

import base64
import logging
import os
import socket
import ssl
import threading
from dataclasses import dataclass

import grpc

from fedplane.client.config import ClientConfig
from fedplane.client.controller import Assignment
from fedplane.client.logs import log_event
from fedplane.proto import fedn_pb2_grpc

logger = logging.getLogger(__name__)


class _TokenAuth(grpc.AuthMetadataPlugin):
    """Adds `authorization: <scheme> <token>` to every call, as FEDn's GrpcAuth does."""

    def __init__(self, scheme: str, token: str):
        self._value = f"{scheme} {token}"

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback((("authorization", self._value),), None)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    tls: bool
    root_certificates: bytes | None  # None with tls: the system trust store


def resolve_target(assignment: Assignment, config: ClientConfig) -> Target:
    """Where to connect and how, in FEDn 0.9.5's order of precedence, after our own --ca."""
    host, port = assignment.host, assignment.port
    if assignment.fqdn is not None:
        # As in 0.9.5: a non-null fqdn means a TLS-terminating ingress on 443.
        host, port = assignment.fqdn, 443
    ca = config.ca_certificates()
    if ca is not None:
        # The operator named the CA to trust: it wins over what the assignment or FEDn's variable say.
        return Target(host, port, True, ca)
    if assignment.certificate:
        try:
            pem = base64.b64decode(assignment.certificate, validate=True)
        except ValueError as exc:
            raise ValueError("assignment carries a certificate that is not base64") from exc
        return Target(host, port, True, pem)
    root_path = os.environ.get("FEDN_GRPC_ROOT_CERT_PATH")
    if root_path:
        with open(root_path, "rb") as fh:
            return Target(host, port, True, fh.read())
    if config.tls_required:
        if config.verify:
            return Target(host, port, True, None)
        # Trust on first use, like 0.9.5: pin whatever certificate the server presents now.
        return Target(host, port, True, fetch_server_certificate(host, port, config))
    if port == 443:
        port = 80
    return Target(host, port, False, None)


def fetch_server_certificate(host: str, port: int, config: ClientConfig) -> bytes:
    """The server's certificate as PEM, unverified; presents our certificate when we have one, since
    a combiner that requires client certificates may end the handshake before we see its own."""
    if config.client_cert is None or config.client_key is None:
        return ssl.get_server_certificate((host, port), timeout=config.request_timeout).encode()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(config.client_cert, config.client_key)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=config.request_timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise OSError(f"{host}:{port} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode()


def channel_options(config: ClientConfig) -> list[tuple[str, int]]:
    # gRPC's own reconnect backoff goes up to 120 s by default; keep it within ours.
    cap_ms = int(config.backoff_max * 1000)
    return [
        ("grpc.initial_reconnect_backoff_ms", min(1000, cap_ms)),
        ("grpc.min_reconnect_backoff_ms", min(1000, cap_ms)),
        ("grpc.max_reconnect_backoff_ms", cap_ms),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ]


class CombinerLink:
    """One channel to one combiner. `lost` is set when the client should give up on it."""

    def __init__(self, assignment: Assignment, config: ClientConfig, *, token: str | None = None):
        self.assignment = assignment
        self.target = resolve_target(assignment, config)
        # 0.9.5 sends grpc-server (the assigned host) and client (our name) on every call.
        self.metadata: tuple[tuple[str, str], ...] = (
            ("grpc-server", assignment.host),
            ("client", config.name),
        )
        if token and not self.target.tls:
            # Unlike 0.9.5 (which sends it on TLS only), the token travels on plain channels too,
            # so a combiner with auth on can tell clients apart. Call credentials need TLS.
            self.metadata += (("authorization", f"{config.auth_scheme} {token}"),)
        address = f"{self.target.host}:{self.target.port}"
        options = channel_options(config)
        if self.target.tls:
            identity = config.client_identity()
            credentials = grpc.ssl_channel_credentials(
                root_certificates=self.target.root_certificates,
                private_key=identity[0] if identity else None,
                certificate_chain=identity[1] if identity else None,
            )
            if token:
                credentials = grpc.composite_channel_credentials(
                    credentials, grpc.metadata_call_credentials(_TokenAuth(config.auth_scheme, token))
                )
            self.channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self.connector = fedn_pb2_grpc.ConnectorStub(self.channel)
        self.combiner = fedn_pb2_grpc.CombinerStub(self.channel)
        self.models = fedn_pb2_grpc.ModelServiceStub(self.channel)
        self.lost = threading.Event()
        self.closed = threading.Event()
        self._active_calls: set[grpc.Future] = set()
        self._lock = threading.Lock()
        log_event(
            logger,
            logging.INFO,
            "combiner_link_open",
            address=address,
            tls=self.target.tls,
            client_cert=self.target.tls and config.client_cert is not None,
            host=assignment.host,
        )

    @property
    def address(self) -> str:
        return f"{self.target.host}:{self.target.port}"

    def track(self, call: grpc.Future) -> None:
        """Remember a streaming call so `mark_lost`/`close` can cancel it."""
        with self._lock:
            if self.closed.is_set() or self.lost.is_set():
                call.cancel()
            self._active_calls.add(call)

    def untrack(self, call: grpc.Future) -> None:
        with self._lock:
            self._active_calls.discard(call)

    def _cancel_calls(self) -> None:
        with self._lock:
            calls = list(self._active_calls)
        for call in calls:
            call.cancel()

    def mark_lost(self, reason: str) -> None:
        if not self.lost.is_set():
            log_event(logger, logging.WARNING, "combiner_lost", address=self.address, reason=reason)
        self.lost.set()
        self._cancel_calls()

    def close(self) -> None:
        self.closed.set()
        self.lost.set()
        self._cancel_calls()
        self.channel.close()
