"""The controller's gRPC client for one combiner (Control and Connector calls).

Pure Python on purpose: it imports neither Django nor the rest of the app, so it can be used from
Celery tasks, services and tests alike. Every call has a deadline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedplane.proto import fedn_pb2, fedn_pb2_grpc

T = TypeVar("T")

UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class CombinerError(Exception):
    """A call to a combiner failed."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class CombinerUnavailable(CombinerError):
    """The combiner could not be reached, or did not answer before the deadline."""


class CombinerRejected(CombinerError):
    """The combiner answered with an error (bad config, refused credentials, ...)."""


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
    ) -> None:
        self.address = address
        self.port = port
        self.target = f"{address}:{port}"
        self.secure = secure or root_cert is not None
        self.root_cert = root_cert
        self.timeout = timeout
        scheme = auth_scheme or os.environ.get("FEDN_AUTH_SCHEME", "Bearer")
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"{scheme} {token}"),) if token else ()
        )

    def __repr__(self) -> str:
        return f"CombinerClient({self.target!r}, secure={self.secure})"

    @contextmanager
    def _channel(self) -> Iterator[grpc.Channel]:
        if self.secure:
            credentials = grpc.ssl_channel_credentials(root_certificates=self.root_cert)
            channel = grpc.secure_channel(self.target, credentials)
        else:
            channel = grpc.insecure_channel(self.target)
        try:
            yield channel
        finally:
            channel.close()

    def _call(self, what: str, call: Callable[[grpc.Channel], T]) -> T:
        try:
            with self._channel() as channel:
                return call(channel)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code in UNREACHABLE_CODES:
                raise CombinerUnavailable(
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
        except CombinerError:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING
