"""Minting the HS256 tokens that FEDn-compatible auth checks (FEDn itself issues none).

A token carries `role` (the one role a route or rpc accepts), `sub`, `jti` (a uuid4 hex that names
the token, so it can be recorded and revoked), `iat`, `exp` and, when the deployment sets
FEDN_JWT_CUSTOM_CLAIM_KEY/VALUE, that claim too, so the same checks that `controlplane.api.auth`
and `combiner_node.auth` apply accept it. Only `TokenSettings.from_django` touches Django, so the
combiner side may import this module too.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from controlplane.errors import DomainError

ROLES = ("admin", "client", "combiner")
# Roles whose token speaks for one named client or combiner: its `sub` is that name.
BOUND_ROLES = frozenset({"client", "combiner"})
RESERVED_CLAIMS = frozenset({"role", "sub", "jti", "iat", "exp"})
# Only shared-secret algorithms: FEDN_JWT_SECRET_KEY is the one key that both signs and verifies.
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
DEFAULT_DAYS = 30.0


class TokenError(DomainError):
    """A token that cannot be minted with the given settings; the message says why."""


@dataclass(frozen=True)
class TokenSettings:
    secret: str
    algorithm: str = "HS256"
    custom_claim_key: str | None = None
    custom_claim_value: str | None = None

    @classmethod
    def from_django(cls) -> TokenSettings:
        """The controller's own auth settings; TokenError when auth is off."""
        from django.conf import settings

        if not settings.FEDN_JWT_SECRET_KEY:
            raise TokenError(
                "FEDN_JWT_SECRET_KEY is not set: auth is off, so there is nothing to sign tokens with. "
                "Set it to the same secret the controller, worker and combiners use."
            )
        return cls(
            secret=settings.FEDN_JWT_SECRET_KEY,
            algorithm=settings.FEDN_JWT_ALGORITHM or "HS256",
            custom_claim_key=settings.FEDN_JWT_CUSTOM_CLAIM_KEY or None,
            custom_claim_value=settings.FEDN_JWT_CUSTOM_CLAIM_VALUE or None,
        )


@dataclass(frozen=True)
class MintedToken:
    """A signed token and the claims a registry of issued tokens records."""

    token: str
    jti: str
    role: str
    subject: str
    issued_at: dt.datetime
    expires_at: dt.datetime


def mint(
    settings: TokenSettings,
    role: str,
    *,
    days: float = DEFAULT_DAYS,
    subject: str | None = None,
    now: dt.datetime | None = None,
) -> MintedToken:
    """A signed token for `role`, valid for `days` from `now` (default: the current time)."""
    if role not in ROLES:
        raise TokenError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if not days > 0:
        raise TokenError(f"--days must be positive, got {days}")
    if settings.algorithm not in HMAC_ALGORITHMS:
        raise TokenError(
            f"FEDN_JWT_ALGORITHM is {settings.algorithm!r}; tokens can only be minted with "
            f"{', '.join(sorted(HMAC_ALGORITHMS))}"
        )
    issued = now or dt.datetime.now(dt.UTC)
    try:
        expires = issued + dt.timedelta(days=days)
    except OverflowError as exc:
        raise TokenError(f"--days {days} is too far in the future") from exc
    jti = uuid.uuid4().hex
    claims: dict[str, Any] = {
        "role": role,
        "sub": subject or role,
        "jti": jti,
        "iat": int(issued.timestamp()),
        "exp": int(expires.timestamp()),
    }
    key, value = settings.custom_claim_key, settings.custom_claim_value
    if key and value:
        if key in RESERVED_CLAIMS:
            raise TokenError(f"FEDN_JWT_CUSTOM_CLAIM_KEY may not be {key!r}, a claim the token already sets")
        claims[key] = value
    return MintedToken(
        token=jwt.encode(claims, settings.secret, algorithm=settings.algorithm),
        jti=jti,
        role=role,
        subject=claims["sub"],
        issued_at=dt.datetime.fromtimestamp(claims["iat"], dt.UTC),
        expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.UTC),
    )


def mint_token(
    settings: TokenSettings,
    role: str,
    *,
    days: float = DEFAULT_DAYS,
    subject: str | None = None,
    now: dt.datetime | None = None,
) -> str:
    """A signed token for `role`, valid for `days` from `now` (default: the current time)."""
    return mint(settings, role, days=days, subject=subject, now=now).token
