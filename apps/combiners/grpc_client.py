"""The controller's gRPC client for one combiner (Control and Connector calls).

Pure Python on purpose: it needs neither Django nor the rest of the app (its errors derive from
the domain's, `controlplane.errors`, which is pure Python too), so it can be used from Celery tasks,
services and tests alike. Every call has a deadline. Its mTLS identity comes from
Django's settings when Django is configured (controller, worker), else from the environment.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controlplane.errors import UpstreamError, UpstreamUnavailable
from fedplane.proto import fedn_pb2, fedn_pb2_grpc

T = TypeVar("T")

UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class CombinerCallFailed(UpstreamError):
    """A call to a combiner failed."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class CombinerUnreachable(CombinerCallFailed, UpstreamUnavailable):
    """The combiner could not be reached, or did not answer before the deadline."""


class CombinerRejected(CombinerCallFailed):
    """The combiner answered with an error (bad config, refused credentials, ...)."""


@dataclass(frozen=True)
class ControlTls:
    """PEM file paths: the certificate and key the controller presents to combiners that require
    client certificates, and the CA it checks their certificates against."""

    client_cert: str | None = None
    client_key: str | None = None
    ca: str | None = None

    @classmethod
    def configured(cls) -> ControlTls:
        """FEDPLANE_CONTROL_CLIENT_CERT, _CLIENT_KEY and _CA, from Django's settings when configured."""
        names = ("FEDPLANE_CONTROL_CLIENT_CERT", "FEDPLANE_CONTROL_CLIENT_KEY", "FEDPLANE_CONTROL_CA")
        values: list[str | None] = [os.environ.get(name) or None for name in names]
        try:
            from django.conf import settings
        except ImportError:
            settings = None
        if settings is not None and (settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE")):
            values = [getattr(settings, name, None) or None for name in names]
        return cls(*values)

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(private key, certificate chain, root certificates), read now so a renewed file is used."""
        if bool(self.client_cert) != bool(self.client_key):
            raise CombinerRejected("FEDPLANE_CONTROL_CLIENT_CERT and FEDPLANE_CONTROL_CLIENT_KEY go together")

        def load(path: str | None, what: str) -> bytes | None:
            if not path:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise CombinerRejected(f"cannot read {what} {path}: {exc.strerror or exc}") from exc

        return (
            load(self.client_key, "FEDPLANE_CONTROL_CLIENT_KEY"),
            load(self.client_cert, "FEDPLANE_CONTROL_CLIENT_CERT"),
            load(self.ca, "FEDPLANE_CONTROL_CA"),
        )


def _code_of(exc: grpc.RpcError) -> grpc.StatusCode | None:
    return exc.code() if hasattr(exc, "code") else None


class _Channels:
    """One channel per combiner and credentials, kept by the process and shared by its threads:
    a session's steps call the same combiners round after round, and a new channel costs a TCP
    connection and an HTTP/2 handshake (a TLS one too) before the first call. Keyed by process id,
    so a forked worker never uses its parent's channel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[tuple[Any, ...], grpc.Channel] = {}

    def take(self, key: tuple[Any, ...]) -> tuple[grpc.Channel, bool]:
        """The channel for `key` and whether it was made before this call."""
        with self._lock:
            channel = self._channels.get(key)
            if channel is not None:
                return channel, True
            channel = _new_channel(key)
            self._channels[key] = channel
            return channel, False

    def drop(self, key: tuple[Any, ...], channel: grpc.Channel) -> None:
        """Forget a broken channel; it closes once the calls still holding it are done."""
        with self._lock:
            if self._channels.get(key) is channel:
                del self._channels[key]


def _new_channel(key: tuple[Any, ...]) -> grpc.Channel:
    target, secure = key[1], key[2]
    if not secure:
        return grpc.insecure_channel(target)
    private_key, certificate_chain, root_certificates = key[3:]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root_certificates, private_key=private_key, certificate_chain=certificate_chain
    )
    return grpc.secure_channel(target, credentials)


_channels = _Channels()


def stringify_config(config: Mapping[str, Any]) -> list[fedn_pb2.Parameter]:
    """FEDn sends every value as `str(value)`: True -> "True", dicts and None as Python repr."""
    return [fedn_pb2.Parameter(key=str(key), value=str(value)) for key, value in config.items()]


class CombinerClient:
    def __init__(
        self,
        address: str,
        port: int,
        *,
        token: str | None = None,
        secure: bool = False,
        root_cert: bytes | None = None,
        timeout: float = 10.0,
        auth_scheme: str | None = None,
        tls: ControlTls | None = None,
    ) -> None:
        """`tls` None: the configured ControlTls. It applies to secure channels only."""
        self.address = address
        self.port = port
        self.target = f"{address}:{port}"
        self.secure = secure or root_cert is not None
        self.root_cert = root_cert
        self.tls = tls if tls is not None else ControlTls.configured()
        self.timeout = timeout
        scheme = auth_scheme or os.environ.get("FEDN_AUTH_SCHEME", "Bearer")
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"{scheme} {token}"),) if token else ()
        )

    def __repr__(self) -> str:
        return f"CombinerClient({self.target!r}, secure={self.secure})"

    def _channel_key(self) -> tuple[Any, ...]:
        """What a channel is made of; the files are read now, so a renewed certificate makes a new one."""
        if not self.secure:
            return (os.getpid(), self.target, False)
        private_key, certificate_chain, ca = self.tls.read()
        # A configured CA is the operator's choice and wins over what the combiner registered.
        return (os.getpid(), self.target, True, private_key, certificate_chain, ca or self.root_cert)

    def _call(self, what: str, call: Callable[[grpc.Channel], T]) -> T:
        key = self._channel_key()
        channel, reused = _channels.take(key)
        try:
            try:
                return call(channel)
            except grpc.RpcError as exc:
                if not reused or _code_of(exc) != grpc.StatusCode.UNAVAILABLE:
                    raise
                # The kept connection was to a combiner that went away (it may be back by now, and a
                # broken channel waits out its reconnect backoff): once more on a new connection.
                _channels.drop(key, channel)
                channel, _ = _channels.take(key)
                return call(channel)
        except grpc.RpcError as exc:
            if _code_of(exc) == grpc.StatusCode.UNAVAILABLE:
                _channels.drop(key, channel)
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code in UNREACHABLE_CODES:
                raise CombinerUnreachable(
                    f"combiner at {self.target} is unavailable ({what}: "
                    f"{code.name if code else 'error'} after at most {self.timeout:g} s: {details})",
                    code,
                ) from exc
            raise CombinerRejected(
                f"combiner at {self.target} refused {what}: {code.name if code else 'error'}: {details}", code
            ) from exc

    def start(self, config: Mapping[str, Any]) -> str:
        """Control.Start with FEDn's stringified round config; returns the combiner's job id."""
        request = fedn_pb2.ControlRequest(command=fedn_pb2.START, parameter=stringify_config(config))
        response = self._call(
            "Start",
            lambda channel: fedn_pb2_grpc.ControlStub(channel).Start(
                request, metadata=self._metadata, timeout=self.timeout
            ),
        )
        return {parameter.key: parameter.value for parameter in response.parameter}.get("job_id", "")

    def stop(self) -> None:
        request = fedn_pb2.ControlRequest(command=fedn_pb2.STOP)
        self._call(
            "Stop",
            lambda channel: fedn_pb2_grpc.ControlStub(channel).Stop(
                request, metadata=self._metadata, timeout=self.timeout
            ),
        )

    def set_aggregator(self, name: str) -> bool:
        request = fedn_pb2.ControlRequest(parameter=[fedn_pb2.Parameter(key="aggregator", value=name)])
        response = self._call(
            "SetAggregator",
            lambda channel: fedn_pb2_grpc.ControlStub(channel).SetAggregator(
                request, metadata=self._metadata, timeout=self.timeout
            ),
        )
        return response.message == "Success"

    def list_active_clients(self) -> list[str]:
        request = fedn_pb2.ListClientsRequest(channel=fedn_pb2.TASK_QUEUE)
        response = self._call(
            "ListActiveClients",
            lambda channel: fedn_pb2_grpc.ConnectorStub(channel).ListActiveClients(
                request, metadata=self._metadata, timeout=self.timeout
            ),
        )
        return [client.name for client in response.client]

    def accepting_clients(self) -> bool:
        response = self._call(
            "AcceptingClients",
            lambda channel: fedn_pb2_grpc.ConnectorStub(channel).AcceptingClients(
                fedn_pb2.ConnectionRequest(), metadata=self._metadata, timeout=self.timeout
            ),
        )
        return response.status == fedn_pb2.ACCEPTING

    def health(self) -> bool:
        """True when the combiner's health service says SERVING; never raises."""
        try:
            response = self._call(
                "Health.Check",
                lambda channel: health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=self.timeout
                ),
            )
        except CombinerCallFailed:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING
