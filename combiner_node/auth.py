"""Who is calling the combiner, and may they make this call.

Tokens are FEDn's HS256 JWTs, with stricter rules: only the gRPC health service is open; every
token needs `exp` and `jti`, and a revoked `jti` is refused; client rpcs need a `client` token whose
`sub` is the sender named in the message; the other rpcs need an `admin` token, or the `combiner`
token of this very combiner. With mutual TLS, a client certificate's common name binds the same way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
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
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REQUIRED_CLAIMS = ("exp", "jti")
# Verified tokens remembered (by their exact header), so a repeated one costs a dict lookup.
VERIFIED_TOKENS_KEPT = 20_000
NO_SUBJECT = "Token has no subject (sub): mint it with --subject naming the client or combiner"


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


@dataclass(frozen=True)
class Caller:
    """What a call proves about its sender; all None with auth off or for a tokenless client."""

    role: str | None = None
    subject: str | None = None
    jti: str | None = None
    expires_at: float | None = None
    common_name: str | None = None

    @property
    def name(self) -> str | None:
        """The client this call speaks for, when a token or certificate says so."""
        if self.role == "client" and self.subject:
            return self.subject
        return self.common_name


class RevocationList:
    """The `jti`s the controller has revoked; replaced whole by each successful fetch."""

    def __init__(self, revoked: Iterable[str] = (), on_added: Callable[[], None] | None = None) -> None:
        self._revoked = frozenset(revoked)
        self._lock = threading.Lock()
        # Called when a fetch adds a `jti`: open task streams look at their token again at once.
        self._on_added = on_added

    def replace(self, revoked: Iterable[str]) -> None:
        revoked = frozenset(revoked)
        with self._lock:
            added = revoked - self._revoked
            self._revoked = revoked
        if added:
            logger.info("revoked tokens updated added=%d total=%d", len(added), len(revoked))
            if self._on_added is not None:
                self._on_added()

    def __contains__(self, jti: object) -> bool:
        with self._lock:
            return jti in self._revoked


def _decode(settings: AuthSettings, header: str) -> dict[str, Any]:
    prefix = f"{settings.scheme} "
    if not header.startswith(prefix):
        raise AuthDenied(grpc.StatusCode.UNAUTHENTICATED, f"Invalid token scheme, expected {settings.scheme}")
    try:
        return jwt.decode(
            header[len(prefix) :].strip(),
            settings.secret,
            algorithms=[settings.algorithm],
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthDenied(grpc.StatusCode.UNAUTHENTICATED, "Token expired") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise AuthDenied(grpc.StatusCode.UNAUTHENTICATED, f"Token has no {exc.claim!r} claim") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthDenied(grpc.StatusCode.UNAUTHENTICATED, "Invalid token") from exc


class IdentityGuard:
    """Checks each call (from the interceptor) and binds message sender names (from the servicers)."""

    def __init__(
        self,
        settings: AuthSettings | None,
        *,
        combiner_name: str,
        revoked: RevocationList | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.combiner_name = combiner_name
        self.revoked = revoked if revoked is not None else RevocationList()
        self._clock = clock
        self._verified: dict[str, dict[str, Any]] = {}

    def check_call(self, method: str, metadata: Mapping[str, str]) -> Caller:
        """The caller of `method`; raises AuthDenied when the call may not proceed."""
        settings = self.settings
        if settings is None or method.startswith(HEALTH_PREFIX):
            return Caller()
        header = metadata.get("authorization")
        if header is None:
            if method in CLIENT_METHODS and settings.allow_tokenless_clients:
                # FEDn 0.9.5 clients never send their token on insecure channels.
                return Caller()
            raise AuthDenied(grpc.StatusCode.UNAUTHENTICATED, "Token is missing")
        claims = self._claims(header)
        jti = str(claims["jti"])
        if jti in self.revoked:
            raise AuthDenied(grpc.StatusCode.UNAUTHENTICATED, "Token revoked")
        claim_key, claim_value = settings.custom_claim_key, settings.custom_claim_value
        if claim_key and claim_value is not None and claims.get(claim_key) != claim_value:
            raise AuthDenied(grpc.StatusCode.PERMISSION_DENIED, "Insufficient permissions")
        caller = _caller_from(claims)
        role, subject = caller.role, caller.subject
        if method in CLIENT_METHODS:
            if role != "client":
                raise AuthDenied(grpc.StatusCode.PERMISSION_DENIED, "Insufficient permissions")
            if subject is None:
                raise AuthDenied(grpc.StatusCode.UNAUTHENTICATED, NO_SUBJECT)
            return caller
        # Everything else drives or inspects this combiner: the controller's admin token, or
        # this combiner's own token, never another combiner's.
        if role == "admin":
            return caller
        if role != "combiner":
            raise AuthDenied(grpc.StatusCode.PERMISSION_DENIED, "Insufficient permissions")
        if subject is None:
            raise AuthDenied(grpc.StatusCode.UNAUTHENTICATED, NO_SUBJECT)
        if subject != self.combiner_name:
            raise AuthDenied(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Token speaks for combiner {subject!r}, not {self.combiner_name!r}",
            )
        return caller

    def caller(self, context: grpc.ServicerContext | grpc.aio.ServicerContext) -> Caller:
        """The caller of a call the interceptor already let in, with its certificate's name.

        Raises AuthDenied; the servicer turns that into the call's status.
        """
        common_names = context.auth_context().get("x509_common_name") or []
        common_name = common_names[0].decode("utf-8", "replace") if common_names else None
        settings = self.settings
        header = None
        if settings is not None:
            metadata = {key.lower(): value for key, value in context.invocation_metadata() or ()}
            header = metadata.get("authorization")
        if settings is None or not isinstance(header, str):
            return Caller(common_name=common_name)
        return _caller_from(self._claims(header), common_name)

    def require_sender(self, context: grpc.ServicerContext | grpc.aio.ServicerContext, sender: str) -> Caller:
        """The caller, once its token and certificate are shown to name `sender` (else AuthDenied)."""
        caller = self.caller(context)
        if caller.role == "client" and caller.subject is not None and caller.subject != sender:
            raise _denied(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Token speaks for client {caller.subject!r}, not {sender!r}",
            )
        if caller.common_name is not None and caller.common_name != sender:
            raise _denied(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Certificate speaks for {caller.common_name!r}, not {sender!r}",
            )
        return caller

    def _claims(self, header: str) -> dict[str, Any]:
        """The verified claims of `header`; a token seen before is not verified again, only its `exp`.

        A heartbeat every few seconds from thousands of clients would otherwise spend a signature
        check per call, twice (interceptor and servicer).
        """
        settings = self.settings
        assert settings is not None
        claims = self._verified.get(header)
        if claims is None:
            claims = _decode(settings, header)
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._verified.clear()
            self._verified[header] = claims
        elif float(claims["exp"]) <= self._clock():
            self._verified.pop(header, None)
            raise AuthDenied(grpc.StatusCode.UNAUTHENTICATED, "Token expired")
        return claims

    def still_valid(self, caller: Caller) -> AuthDenied | None:
        """Why a long-lived call's token no longer holds (revoked or expired since it began)."""
        if caller.jti is not None and caller.jti in self.revoked:
            return AuthDenied(grpc.StatusCode.UNAUTHENTICATED, "Token revoked")
        if caller.expires_at is not None and caller.expires_at <= self._clock():
            return AuthDenied(grpc.StatusCode.UNAUTHENTICATED, "Token expired")
        return None


def _caller_from(claims: dict[str, Any], common_name: str | None = None) -> Caller:
    """The Caller a decoded token (with its `exp` and `jti` required) describes."""
    subject = claims.get("sub")
    return Caller(
        role=claims.get("role"),
        subject=subject if isinstance(subject, str) and subject else None,
        jti=str(claims["jti"]),
        expires_at=float(claims["exp"]),
        common_name=common_name,
    )


def _denied(code: grpc.StatusCode, details: str) -> AuthDenied:
    logger.info("grpc call refused code=%s reason=%s", code.name, details)
    return AuthDenied(code, details)


def _abort_handler(handler: grpc.RpcMethodHandler | None, denied: AuthDenied) -> grpc.RpcMethodHandler:
    async def abort(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(denied.code, denied.details)

    # The refusal must have the same streaming shape as the method it replaces.
    if handler is None or (not handler.request_streaming and not handler.response_streaming):
        return grpc.unary_unary_rpc_method_handler(abort)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    return grpc.unary_stream_rpc_method_handler(abort)


class JWTInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, guard: IdentityGuard) -> None:
        self.guard = guard

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        metadata = {key.lower(): value for key, value in (handler_call_details.invocation_metadata or ())}
        try:
            self.guard.check_call(method, metadata)
        except AuthDenied as denied:
            logger.info(
                "grpc call refused method=%s code=%s reason=%s", method, denied.code.name, denied.details
            )
            return _abort_handler(await continuation(handler_call_details), denied)
        return await continuation(handler_call_details)
