"""The REST authentication the settings name: FEDn's token check, and a revoked token refused."""

from typing import Any

from rest_framework import exceptions
from rest_framework.request import Request

from apps.identity.services import token_is_revoked
from controlplane.api.auth import FednJWTAuthentication, TokenIdentity


class RevocableJWTAuthentication(FednJWTAuthentication):
    """A valid token whose `jti` was revoked is refused at once, on every route (401)."""

    def authenticate(self, request: Request) -> tuple[TokenIdentity, dict[str, Any]] | None:
        authenticated = super().authenticate(request)
        if authenticated is not None and token_is_revoked(authenticated[0].jti):
            raise exceptions.AuthenticationFailed("Token revoked")
        return authenticated
