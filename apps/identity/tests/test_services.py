"""token_issue records what it mints; token_revoke and the revocation list."""

import datetime as dt
from typing import Any

import jwt
import pytest
from django.utils import timezone

from apps.identity.models import IssuedToken
from apps.identity.services import (
    IdentityError,
    TokenNotFound,
    token_is_revoked,
    token_issue,
    token_revoke,
    tokens_revoked,
)

from .conftest import SECRET

pytestmark = pytest.mark.django_db


def test_issue_records_the_claims_but_not_the_token(auth_on: Any) -> None:
    minted = token_issue(role="client", subject="alice", days=2, issued_by="ops")
    claims = jwt.decode(minted.token, SECRET, algorithms=["HS256"])
    record = IssuedToken.objects.get()
    assert (record.jti, record.role, record.subject, record.issued_by) == (
        claims["jti"],
        "client",
        "alice",
        "ops",
    )
    assert record.issued_at == dt.datetime.fromtimestamp(claims["iat"], dt.UTC)
    assert record.expires_at == dt.datetime.fromtimestamp(claims["exp"], dt.UTC)
    assert record.expires_at - record.issued_at == dt.timedelta(days=2)
    assert minted.token not in str(list(IssuedToken.objects.values()))
    assert record.revoked_at is None and not record.is_revoked


@pytest.mark.parametrize("role", ["client", "combiner"])
def test_client_and_combiner_tokens_need_a_subject(auth_on: Any, role: str) -> None:
    with pytest.raises(IdentityError, match=f"a {role} token speaks for one {role}: give --subject"):
        token_issue(role=role)
    assert not IssuedToken.objects.exists()


def test_admin_subject_defaults_to_the_role(auth_on: Any) -> None:
    assert token_issue(role="admin").subject == "admin"
    assert token_issue(role="admin", subject="operator").subject == "operator"


def test_lifetime_is_capped_by_the_setting(auth_on: Any) -> None:
    auth_on.FEDPLANE_TOKEN_MAX_DAYS = 10.0
    with pytest.raises(IdentityError, match="longer than the maximum lifetime, FEDPLANE_TOKEN_MAX_DAYS=10"):
        token_issue(role="admin", days=10.5)
    assert not IssuedToken.objects.exists()
    token_issue(role="admin", days=10)
    assert IssuedToken.objects.count() == 1


def test_unset_secret_is_refused_first(settings: Any) -> None:
    settings.FEDN_JWT_SECRET_KEY = ""
    with pytest.raises(IdentityError, match="FEDN_JWT_SECRET_KEY is not set"):
        token_issue(role="client")


def test_revoke_keeps_the_first_revocation(auth_on: Any) -> None:
    minted = token_issue(role="combiner", subject="c1")
    assert not token_is_revoked(minted.jti)
    first = token_revoke(jti=minted.jti, by="alice", reason="leaked")
    assert token_is_revoked(minted.jti)
    again = token_revoke(jti=minted.jti, by="bob", reason="twice")
    assert (again.revoked_at, again.revoked_by, again.revoke_reason) == (first.revoked_at, "alice", "leaked")


def test_unknown_jti_cannot_be_revoked(auth_on: Any) -> None:
    with pytest.raises(TokenNotFound, match="no issued token has jti 'nope'"):
        token_revoke(jti="nope", by="alice")


def test_revocation_list_holds_revoked_tokens_until_they_expire(auth_on: Any) -> None:
    now = timezone.now()
    live = token_issue(role="client", subject="a", days=1)
    expired = token_issue(role="client", subject="b", days=1, now=now - dt.timedelta(days=2))
    kept = token_issue(role="client", subject="c", days=1)
    token_revoke(jti=live.jti, by="ops")
    token_revoke(jti=expired.jti, by="ops")
    assert tokens_revoked() == [live.jti]
    assert kept.jti not in tokens_revoked()
    assert tokens_revoked(now=now + dt.timedelta(days=3)) == []
