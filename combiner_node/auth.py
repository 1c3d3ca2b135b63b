"""JWT checks on incoming gRPC calls, as FEDn's interceptor does, with two changes:
control calls need an `admin` or `combiner` token, and an expired token says so."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import jwt

logger = logging.getLogger(__name__)

CLIENT_METHODS = frozenset(
    {
        "/fedn.Combiner/TaskStream",
        "/fedn.Combiner/SendModelUpdate",
        "/fedn.Combiner/SendModelValidation",
        "/fedn.Connector/SendHeartbeat",
        "/fedn.Connector/SendStatus",
        "/fedn.ModelService/Download",
        "/fedn.ModelService/Upload",
    }
)
CONTROL_METHODS = frozenset(
    {
        "/fedn.Control/Start",
        "/fedn.Control/Stop",
        "/fedn.Control/FlushAggregationQueue",
        "/fedn.Control/SetAggregator",
        "/fedn.Connector/AcceptingClients",
        "/fedn.Connector/ListActiveClients",
    }
)
CONTROL_ROLES = frozenset({"admin", "combiner"})
HEALTH_PREFIX = "/grpc.health.v1.Health/"


@dataclass(frozen=True)
class AuthSettings:
    secret: str
    algorithm: str = "HS256"
    scheme: str = "Bearer"
    custom_claim_key: str | None = None
    custom_claim_value: str | None = None
    allow_tokenless_clients: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthSettings | None:
        """None when FEDN_JWT_SECRET_KEY is unset: auth is off, as in FEDn."""
        env = os.environ if environ is None else environ
        secret = env.get("FEDN_JWT_SECRET_KEY")
        if not secret:
            return None
        return cls(
            secret=secret,
            algorithm=env.get("FEDN_JWT_ALGORITHM", "HS256"),
            scheme=env.get("FEDN_AUTH_SCHEME", "Bearer"),
            custom_claim_key=env.get("FEDN_JWT_CUSTOM_CLAIM_KEY") or None,
            custom_claim_value=env.get("FEDN_JWT_CUSTOM_CLAIM_VALUE") or None,
            allow_tokenless_clients=env.get("FEDPLANE_GRPC_ALLOW_TOKENLESS_CLIENTS", "").lower()
            in ("1", "true", "yes"),
        )


class AuthDenied(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def check_call(settings: AuthSettings, method: str, metadata: Mapping[str, str]) -> None:
    """Raises AuthDenied when the call may not proceed."""
    if method.startswith(HEALTH_PREFIX) or metadata.get("user-agent", "").startswith("grpc_health_probe"):
        return
    header = metadata.get("authorization")
    if header is None:
        if method in CLIENT_METHODS and settings.allow_tokenless_clients:
            # 0.9.5 clients never send their token on insecure channels.
            return
        raise AuthDenied(grpc.StatusCode.UNAUTHENTICATED, "Token is missing")
    prefix = f"{settings.scheme} "
    if not header.startswith(prefix):
        raise AuthDenied(grpc.StatusCode.UNAUTHENTICATED, f"Invalid token scheme, expected {settings.scheme}")
    try:
        payload = jwt.decode(header[len(prefix) :].strip(), settings.secret, algorithms=[settings.algorithm])
    except jwt.ExpiredSignatureError as exc:
        raise AuthDenied(grpc.StatusCode.UNAUTHENTICATED, "Token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthDenied(grpc.StatusCode.UNAUTHENTICATED, "Invalid token") from exc
    role = payload.get("role")
    if method in CLIENT_METHODS and role != "client":
        raise AuthDenied(grpc.StatusCode.PERMISSION_DENIED, "Insufficient permissions")
    if method in CONTROL_METHODS and role not in CONTROL_ROLES:
        raise AuthDenied(grpc.StatusCode.PERMISSION_DENIED, "Insufficient permissions")
    claim_key, claim_value = settings.custom_claim_key, settings.custom_claim_value
    if claim_key and claim_value is not None and payload.get(claim_key) != claim_value:
        raise AuthDenied(grpc.StatusCode.PERMISSION_DENIED, "Insufficient permissions")


def _abort_handler(handler: grpc.RpcMethodHandler | None, denied: AuthDenied) -> grpc.RpcMethodHandler:
    def abort(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(denied.code, denied.details)

    # The refusal must have the same streaming shape as the method it replaces.
    if handler is None or (not handler.request_streaming and not handler.response_streaming):
        return grpc.unary_unary_rpc_method_handler(abort)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    return grpc.unary_stream_rpc_method_handler(abort)


class JWTInterceptor(grpc.ServerInterceptor):
    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        metadata = {key.lower(): value for key, value in (handler_call_details.invocation_metadata or ())}
        try:
            check_call(self.settings, method, metadata)
        except AuthDenied as denied:
            logger.info(
                "grpc call refused method=%s code=%s reason=%s", method, denied.code.name, denied.details
            )
            return _abort_handler(continuation(handler_call_details), denied)
        return continuation(handler_call_details)
