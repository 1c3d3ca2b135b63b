"""FEDn-compatible authentication: HS256 JWTs whose `role` claim must match the route's role.

Stricter than FEDn: every token needs `exp` and `jti`, and a client or combiner token needs `sub`,
the one name it speaks for (`require_speaks_for`). Revocation is checked by the authentication class
in apps.identity, which the settings point at. Off while FEDN_JWT_SECRET_KEY is unset, as in FEDn.
Django staff users logged in to the admin may use every route from the browsable API.
"""

import functools
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import jwt
from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from jwt.algorithms import HMACAlgorithm
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from controlplane.tokens import BOUND_ROLES

REQUIRED_CLAIMS = ("exp", "jti")
NO_SUBJECT = "Token has no subject (sub): mint it with --subject naming the client or combiner"


@dataclass(frozen=True)
class TokenIdentity:
    """The bearer of a valid token; DRF's request.user for token-authenticated calls."""

    role: str
    claims: dict[str, Any]
    # The `sub` claim: for client and combiner tokens, the one name the token speaks for.
    subject: str = ""
    jti: str = ""

    is_authenticated = True
    is_staff = False
    is_active = True
    pk = None

    def __str__(self) -> str:
        return f"token:{self.role}:{self.subject}"


def auth_enabled() -> bool:
    return bool(settings.FEDN_JWT_SECRET_KEY)


class _PreparedKeyHMAC(HMACAlgorithm):
    """HMAC whose key is checked and prepared once per secret, not on every token.

    PyJWT's HMACAlgorithm.prepare_key refuses secrets shaped like PEM, SSH or DER keys and
    certificates, and tries to parse the secret as each of them on every call; the configured secret
    does not change between requests, so its answer (the key bytes, or the refusal) is kept.
    """

    def prepare_key(self, key: str | bytes) -> bytes:
        return _prepared_hmac_key(self.hash_alg, key)


@functools.lru_cache(maxsize=16)
def _prepared_hmac_key(hash_alg: Any, key: str | bytes) -> bytes:
    return HMACAlgorithm(hash_alg).prepare_key(key)


def _token_decoder() -> jwt.PyJWT:
    decoder = jwt.PyJWT()
    for name, hash_alg in (
        ("HS256", HMACAlgorithm.SHA256),
        ("HS384", HMACAlgorithm.SHA384),
        ("HS512", HMACAlgorithm.SHA512),
    ):
        decoder._jws.unregister_algorithm(name)
        decoder._jws.register_algorithm(name, _PreparedKeyHMAC(hash_alg))
    return decoder


# jwt.decode's checks (signature, algorithms, exp, required claims), with the secret prepared once.
TOKEN_DECODER = _token_decoder()


def decode_token(token: str) -> dict[str, Any]:
    claims = _verified_claims(
        token,
        settings.FEDN_JWT_SECRET_KEY,
        settings.FEDN_JWT_ALGORITHM,
        settings.FEDN_JWT_CUSTOM_CLAIM_KEY or "",
        settings.FEDN_JWT_CUSTOM_CLAIM_VALUE or "",
    )
    # A kept verdict outlives the token's expiry: `exp` is checked again on every use.
    if time.time() >= claims["exp"]:
        raise exceptions.AuthenticationFailed("Token expired")
    return claims


# Tokens already verified, with their claims: a client sends the same token with every request, and
# decoding it (base64, JSON, HMAC, the claim checks) was a tenth of an API list's CPU. Keyed by the
# token and everything its verdict depends on; a refused token raises and so is not kept.
@functools.lru_cache(maxsize=1024)
def _verified_claims(
    token: str, secret: str, algorithm: str, claim_key: str, claim_value: str
) -> dict[str, Any]:
    try:
        claims = TOKEN_DECODER.decode(
            token, secret, algorithms=[algorithm], options={"require": list(REQUIRED_CLAIMS)}
        )
    except jwt.ExpiredSignatureError as exc:
        raise exceptions.AuthenticationFailed("Token expired") from exc
    except jwt.MissingRequiredClaimError as exc:
        # A token that never expires, or that cannot be revoked, is refused.
        raise exceptions.AuthenticationFailed(f"Token has no {exc.claim!r} claim") from exc
    except jwt.InvalidTokenError as exc:
        raise exceptions.AuthenticationFailed("Invalid token") from exc
    if claim_key and claim_value and claims.get(claim_key) != claim_value:
        raise exceptions.AuthenticationFailed("Invalid token")
    subject = claims.get("sub")
    if claims.get("role") in BOUND_ROLES and not (isinstance(subject, str) and subject):
        raise exceptions.AuthenticationFailed(NO_SUBJECT)
    return claims


class FednJWTAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[TokenIdentity, dict[str, Any]] | None:
        if not auth_enabled():
            return None
        header = request.headers.get("Authorization")
        if not header:
            return None
        scheme = settings.FEDN_AUTH_SCHEME
        parts = header.split(" ")
        if parts[0] != scheme or len(parts) < 2:
            raise exceptions.AuthenticationFailed(f"Invalid token scheme, expected {scheme}")
        claims = decode_token(parts[1])
        identity = TokenIdentity(
            role=str(claims.get("role", "")),
            claims=claims,
            subject=str(claims.get("sub") or ""),
            jti=str(claims["jti"]),
        )
        return identity, claims

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) when credentials are missing or wrong.
        return settings.FEDN_AUTH_SCHEME


class RolePermission(BasePermission):
    """Allows a call when auth is off, or the caller's token carries one of `roles`."""

    roles: ClassVar[frozenset[str]] = frozenset({"admin"})

    def has_permission(self, request: Request, view: Any) -> bool:
        if not auth_enabled():
            return True
        prefix = settings.FEDN_AUTH_WHITELIST_URL_PREFIX
        if prefix and request.path.startswith(prefix):
            return True
        user = request.user
        if getattr(user, "is_staff", False) and getattr(user, "is_active", False):
            return True
        if isinstance(user, TokenIdentity):
            if user.role in self.roles:
                return True
            raise exceptions.AuthenticationFailed("Invalid token")
        raise exceptions.NotAuthenticated("Missing token")


class IsAdminRole(RolePermission):
    roles = frozenset({"admin"})


class IsClientRole(RolePermission):
    roles = frozenset({"client"})


class IsCombinerRole(RolePermission):
    roles = frozenset({"combiner"})


class IsCombinerOrAdminRole(RolePermission):
    roles = frozenset({"combiner", "admin"})


class IdentityMismatch(exceptions.PermissionDenied):
    """A client or combiner token naming someone else in the request."""

    def __init__(self, subject: str, name: object) -> None:
        super().__init__(f"This token speaks for {subject}, not {name}")


def bound_subject(request: Request) -> str | None:
    """The one name the caller may act as: the `sub` of a client or combiner token.

    None when the caller may name anyone: auth off, a staff user, an admin token, or a whitelisted
    path called without a token.
    """
    user = getattr(request, "user", None)
    if not auth_enabled() or not isinstance(user, TokenIdentity) or user.role not in BOUND_ROLES:
        return None
    return user.subject


def require_speaks_for(request: Request, name: object) -> None:
    """403 unless the caller's token may act as `name` (see `bound_subject`)."""
    subject = bound_subject(request)
    if subject is not None and name != subject:
        raise IdentityMismatch(subject, name)


class FednJWTScheme(OpenApiAuthenticationExtension):
    """Documents the token scheme in the OpenAPI schema."""

    target_class = FednJWTAuthentication
    # The configured class is apps.identity's subclass, which adds the revocation check.
    match_subclasses = True
    name = "fednJWT"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "HS256 token whose `role` claim is admin, client or combiner, with `exp` and `jti`; "
                "a client or combiner token also needs `sub`, the name it speaks for."
            ),
        }
