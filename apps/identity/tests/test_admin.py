"""The issued-token admin: list, filters, search, the revoke action and minting a token once."""

import datetime as dt
from typing import Any

import jwt
import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from apps.identity.models import IssuedToken
from apps.identity.services import token_issue, token_revoke

from .conftest import SECRET

pytestmark = pytest.mark.django_db


@pytest.fixture
def tokens(auth_on: Any) -> dict[str, IssuedToken]:
    alice = token_issue(role="client", subject="alice", days=5, issued_by="ops")
    north = token_issue(role="combiner", subject="north", days=5, issued_by="ops")
    admin = token_issue(role="admin", subject="operator", days=5, issued_by="root")
    token_revoke(jti=north.jti, by="ops", reason="moved")
    return {m.subject: IssuedToken.objects.get(jti=m.jti) for m in (alice, north, admin)}


def changelist() -> str:
    return reverse("admin:identity_issuedtoken_changelist")


def test_changelist_shows_each_token(admin_client: HttpClient, tokens: dict[str, IssuedToken]) -> None:
    body = admin_client.get(changelist()).content.decode()
    for token in tokens.values():
        assert token.jti in body and token.subject in body
    assert "revoked " in body  # north's revocation badge
    assert "root" in body  # issued by


def test_filters_and_search(admin_client: HttpClient, tokens: dict[str, IssuedToken]) -> None:
    body = admin_client.get(changelist(), {"role": "client"}).content.decode()
    assert tokens["alice"].jti in body and tokens["north"].jti not in body
    body = admin_client.get(changelist(), {"revoked": "yes"}).content.decode()
    assert tokens["north"].jti in body and tokens["alice"].jti not in body
    body = admin_client.get(changelist(), {"revoked": "no"}).content.decode()
    assert tokens["alice"].jti in body and tokens["north"].jti not in body
    body = admin_client.get(changelist(), {"q": "alice"}).content.decode()
    assert tokens["alice"].jti in body and tokens["operator"].jti not in body
    body = admin_client.get(changelist(), {"q": tokens["operator"].jti}).content.decode()
    assert tokens["operator"].jti in body and tokens["alice"].jti not in body


def test_revoke_action_uses_the_service(admin_client: HttpClient, tokens: dict[str, IssuedToken]) -> None:
    picked = [tokens["alice"].pk, tokens["north"].pk]
    response = admin_client.post(
        changelist(), {"action": "revoke_tokens", "_selected_action": picked}, follow=True
    )
    assert "Revoked 1 token (1 already revoked)." in response.content.decode()
    alice = IssuedToken.objects.get(pk=tokens["alice"].pk)
    assert alice.revoked_by == "admin" and alice.revoke_reason == "revoked in the admin console"
    north = IssuedToken.objects.get(pk=tokens["north"].pk)
    assert (north.revoked_by, north.revoke_reason) == ("ops", "moved")
    assert IssuedToken.objects.get(pk=tokens["operator"].pk).revoked_at is None


def test_records_are_read_only_and_never_deleted(
    admin_client: HttpClient, tokens: dict[str, IssuedToken]
) -> None:
    alice = tokens["alice"]
    url = reverse("admin:identity_issuedtoken_change", args=[alice.pk])
    assert admin_client.get(url).status_code == 200
    admin_client.post(url, {"subject": "mallory", "revoked_at": "2020-01-01"})
    assert IssuedToken.objects.get(pk=alice.pk).subject == "alice"
    delete = reverse("admin:identity_issuedtoken_delete", args=[alice.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert IssuedToken.objects.filter(pk=alice.pk).exists()


def test_minting_shows_the_token_once(admin_client: HttpClient, auth_on: Any) -> None:
    add = reverse("admin:identity_issuedtoken_add")
    response = admin_client.post(add, {"token_role": "combiner", "token_subject": "south", "days": "2"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    token = response.context["minted"].token
    assert token in response.content.decode()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    record = IssuedToken.objects.get(jti=claims["jti"])
    assert (record.role, record.subject, record.issued_by) == ("combiner", "south", "admin")
    assert record.expires_at - record.issued_at == dt.timedelta(days=2)
    # The record's page never shows it again.
    page = admin_client.get(reverse("admin:identity_issuedtoken_change", args=[record.pk])).content.decode()
    assert token not in page and record.jti in page


def test_minting_refuses_what_the_command_refuses(admin_client: HttpClient, auth_on: Any) -> None:
    add = reverse("admin:identity_issuedtoken_add")
    response = admin_client.post(add, {"token_role": "client", "token_subject": "", "days": "1"})
    assert response.status_code == 200
    assert "give --subject" in response.content.decode()
    response = admin_client.post(add, {"token_role": "admin", "days": "400"})
    assert "FEDPLANE_TOKEN_MAX_DAYS" in response.content.decode()
    assert not IssuedToken.objects.exists()


def test_staff_without_permissions_cannot_mint_or_revoke(client: HttpClient, tokens: dict[str, Any]) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_issuedtoken"))
    client.force_login(viewer)
    assert client.get(reverse("admin:identity_issuedtoken_add")).status_code == 403
    body = client.get(changelist()).content.decode()
    assert "revoke_tokens" not in body
    client.post(changelist(), {"action": "revoke_tokens", "_selected_action": [tokens["alice"].pk]})
    assert IssuedToken.objects.get(pk=tokens["alice"].pk).revoked_at is None
