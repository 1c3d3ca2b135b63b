"""FEDn-compatible authentication: HS256 JWTs whose `role` claim must match the route's role.

Off while FEDN_JWT_SECRET_KEY is unset, as in FEDn. Django staff users logged in to the admin
may use every route from the browsable API.
"""

from dataclasses import dataclass
from typing import Any

import jwt
from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request


@dataclass(frozen=True)
class TokenIdentity:
    """The bearer of a valid token; DRF's request.user for token-authenticated calls."""

    role: str
    claims: dict[str, Any]

    is_authenticated = True
    is_staff = False
    is_active = True
    pk = None

    def __str__(self) -> str:
        return f"token:{self.role}"


def auth_enabled() -> bool:
    return bool(settings.FEDN_JWT_SECRET_KEY)


def decode_token(token: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(token, settings.FEDN_JWT_SECRET_KEY, algorithms=[settings.FEDN_JWT_ALGORITHM])
    except jwt.ExpiredSignatureError as exc:
        raise exceptions.AuthenticationFailed("Token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise exceptions.AuthenticationFailed("Invalid token") from exc
    key, value = settings.FEDN_JWT_CUSTOM_CLAIM_KEY, settings.FEDN_JWT_CUSTOM_CLAIM_VALUE
    if key and value and claims.get(key) != value:
        raise exceptions.AuthenticationFailed("Invalid token")
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
        return TokenIdentity(role=str(claims.get("role", "")), claims=claims), claims

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) when credentials are missing or wrong.
        return settings.FEDN_AUTH_SCHEME


class RolePermission(BasePermission):
    """Allows a call when auth is off, or the caller's token carries exactly `role`."""

    role = "admin"

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
            if user.role == self.role:
                return True
            raise exceptions.AuthenticationFailed("Invalid token")
        raise exceptions.NotAuthenticated("Missing token")


class IsAdminRole(RolePermission):
    role = "admin"


class IsClientRole(RolePermission):
    role = "client"


class IsCombinerRole(RolePermission):
    role = "combiner"


class FednJWTScheme(OpenApiAuthenticationExtension):
    """Documents the token scheme in the OpenAPI schema."""

    target_class = FednJWTAuthentication
    name = "fednJWT"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "HS256 token whose `role` claim is admin, client or combiner.",
        }
