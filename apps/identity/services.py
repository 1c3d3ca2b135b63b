"""Tokens the controller mints: issue (mint and record), revoke, and the revocation list."""

import datetime as dt
import functools

from django.conf import settings
from django.db import connections, router, transaction
from django.utils import timezone

from apps.identity.models import IssuedToken
from controlplane.errors import DomainError, NotFoundError
from controlplane.tokens import BOUND_ROLES, DEFAULT_DAYS, MintedToken, TokenError, TokenSettings, mint

SUBJECT_MAX_LENGTH = IssuedToken._meta.get_field("subject").max_length or 128
USER_MAX_LENGTH = IssuedToken._meta.get_field("issued_by").max_length or 150


class IdentityError(DomainError):
    """A token the controller will not issue or revoke; the message says why."""


class TokenNotFound(IdentityError, NotFoundError):
    """No issued token has this jti."""


def token_issue(
    *,
    role: str,
    subject: str | None = None,
    days: float = DEFAULT_DAYS,
    issued_by: str = "",
    now: dt.datetime | None = None,
) -> MintedToken:
    """Mint a token and record it; the token itself is returned once and never stored."""
    minted = token_mint(role=role, subject=subject, days=days, now=now)
    token_record(minted=minted, issued_by=issued_by)
    return minted


def token_mint(
    *, role: str, subject: str | None = None, days: float = DEFAULT_DAYS, now: dt.datetime | None = None
) -> MintedToken:
    """Check and sign a token without recording it (a form validates with this; token_record saves)."""
    try:
        token_settings = TokenSettings.from_django()
    except TokenError as exc:
        raise IdentityError(str(exc)) from exc
    subject = subject or None
    if role in BOUND_ROLES and subject is None:
        raise IdentityError(
            f"a {role} token speaks for one {role}: give --subject, the {role}'s name "
            f"(the name it registers with)"
        )
    if subject is not None and len(subject) > SUBJECT_MAX_LENGTH:
        raise IdentityError(f"--subject is longer than {SUBJECT_MAX_LENGTH} characters")
    max_days = settings.FEDPLANE_TOKEN_MAX_DAYS
    if days > max_days:
        raise IdentityError(
            f"--days {days:g} is longer than the maximum lifetime, FEDPLANE_TOKEN_MAX_DAYS={max_days:g}"
        )
    try:
        return mint(token_settings, role, days=days, subject=subject, now=now)
    except TokenError as exc:
        raise IdentityError(str(exc)) from exc


def token_record(*, minted: MintedToken, issued_by: str = "") -> IssuedToken:
    """Keep what a minted token is (never the token itself) so it can be listed and revoked."""
    return IssuedToken.objects.create(
        jti=minted.jti,
        role=minted.role,
        subject=minted.subject,
        issued_at=minted.issued_at,
        expires_at=minted.expires_at,
        issued_by=issued_by[:USER_MAX_LENGTH],
    )


@transaction.atomic
def token_revoke(*, jti: str, by: str, reason: str = "") -> IssuedToken:
    """Revoke a token from now on; revoking it again keeps the first revocation."""
    token = IssuedToken.objects.select_for_update().filter(jti=jti).first()
    if token is None:
        raise TokenNotFound(f"no issued token has jti {jti!r}; `fedplane_token --list` shows them")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.revoked_by = by[:USER_MAX_LENGTH]
        token.revoke_reason = reason
        token.save(update_fields=["revoked_at", "revoked_by", "revoke_reason"])
    return token


@functools.cache
def _revoked_sql() -> str:
    meta = IssuedToken._meta
    quote = connections[router.db_for_read(IssuedToken)].ops.quote_name
    table, jti, revoked_at = (
        quote(meta.db_table),
        quote(meta.get_field("jti").column),
        quote(meta.get_field("revoked_at").column),
    )
    return f"SELECT 1 FROM {table} WHERE {jti} = %s AND {revoked_at} IS NOT NULL LIMIT 1"


def token_is_revoked(jti: str) -> bool:
    """One lookup on the unique jti index, made for every authenticated request.

    Asked of the database each time, so a revocation (by any process) holds from the next request
    on; written as the SQL the ORM would build for `filter(jti=..., revoked_at__isnull=False)
    .exists()`, without building it per request.
    """
    with connections[router.db_for_read(IssuedToken)].cursor() as cursor:
        cursor.execute(_revoked_sql(), [jti])
        return cursor.fetchone() is not None


def tokens_revoked(*, now: dt.datetime | None = None) -> list[str]:
    """The jti of every revoked token that has not expired yet (an expired one is refused anyway)."""
    return list(
        IssuedToken.objects.filter(revoked_at__isnull=False, expires_at__gt=now or timezone.now())
        .order_by("revoked_at", "pk")
        .values_list("jti", flat=True)
    )
