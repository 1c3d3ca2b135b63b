"""`manage.py fedplane_token`: the tokens it prints pass the REST auth for their role, and only it."""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from controlplane.tokens import TokenError, TokenSettings, mint_token

ROOT = Path(__file__).resolve().parents[2]
SECRET = "token-test-secret-of-at-least-thirty-two-bytes"
# One route per role that answers without any network built first.
ROLE_ROUTES: dict[str, tuple[str, str, Any]] = {
    "admin": ("get", "/get_controller_status", None),
    "client": ("get", "/get_package_checksum", None),
    "combiner": ("post", "/api/v1/statuses/", []),
}


@pytest.fixture
def auth_on(settings: Any) -> Any:
    settings.FEDN_JWT_SECRET_KEY = SECRET
    settings.FEDN_JWT_ALGORITHM = "HS256"
    settings.FEDN_AUTH_SCHEME = "Bearer"
    settings.FEDN_JWT_CUSTOM_CLAIM_KEY = ""
    settings.FEDN_JWT_CUSTOM_CLAIM_VALUE = ""
    settings.FEDN_AUTH_WHITELIST_URL_PREFIX = ""
    return settings


def printed_token(*args: str) -> str:
    out = io.StringIO()
    call_command("fedplane_token", *args, stdout=out)
    return out.getvalue().strip()


def call_route(role_of_route: str, token: str) -> Any:
    method, url, body = ROLE_ROUTES[role_of_route]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    api = APIClient()
    if method == "get":
        return api.get(url, **headers)
    return api.post(url, body, format="json", **headers)


@pytest.mark.django_db
@pytest.mark.parametrize("role", sorted(ROLE_ROUTES))
def test_printed_token_opens_its_roles_routes_only(auth_on: Any, role: str) -> None:
    token = printed_token("--role", role, "--subject", f"{role}-1")
    accepted = call_route(role, token)
    assert accepted.status_code != 401, accepted.content
    for other in sorted(set(ROLE_ROUTES) - {role}):
        refused = call_route(other, token)
        assert refused.status_code == 401, (other, refused.content)
        assert refused.json()["message"] == "Invalid token"


@pytest.mark.django_db
def test_claims_lifetime_and_subject(auth_on: Any) -> None:
    token = printed_token("--role", "client", "--days", "2.5", "--subject", "hospital-7")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["role"] == "client"
    assert claims["sub"] == "hospital-7"
    assert claims["exp"] - claims["iat"] == int(2.5 * 86400)
    assert abs(claims["iat"] - dt.datetime.now(dt.UTC).timestamp()) < 60
    assert set(claims) == {"role", "sub", "jti", "iat", "exp"}
    assert len(claims["jti"]) == 32 and int(claims["jti"], 16) >= 0


@pytest.mark.django_db
def test_expired_token_is_refused_as_expired(auth_on: Any) -> None:
    issued = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    expired = mint_token(TokenSettings.from_django(), "admin", days=1, now=issued)
    response = call_route("admin", expired)
    assert response.status_code == 401
    assert response.json()["message"] == "Token expired"
    # The same token minted an hour ago is still good.
    fresh = mint_token(
        TokenSettings.from_django(), "admin", days=1, now=issued + dt.timedelta(days=1, hours=23)
    )
    assert call_route("admin", fresh).status_code == 200


@pytest.mark.django_db
def test_custom_claim_is_added_when_configured(auth_on: Any) -> None:
    auth_on.FEDN_JWT_CUSTOM_CLAIM_KEY = "project"
    auth_on.FEDN_JWT_CUSTOM_CLAIM_VALUE = "p1"
    token = printed_token("--role", "admin")
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["project"] == "p1"
    assert call_route("admin", token).status_code == 200
    without_claim = mint_token(TokenSettings(secret=SECRET), "admin")
    assert call_route("admin", without_claim).json()["message"] == "Invalid token"


def test_unset_secret_is_a_clear_error(settings: Any) -> None:
    settings.FEDN_JWT_SECRET_KEY = ""
    with pytest.raises(CommandError, match="FEDN_JWT_SECRET_KEY is not set"):
        printed_token("--role", "admin")


def test_unset_secret_exits_with_code_1() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FEDN_", "DJANGO_"))}
    env["DJANGO_SETTINGS_MODULE"] = "controlplane.settings.test"
    done = subprocess.run(
        [sys.executable, "manage.py", "fedplane_token", "--role", "client"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert "FEDN_JWT_SECRET_KEY is not set" in done.stderr


@pytest.mark.parametrize(
    ("settings_", "role", "days", "message"),
    [
        (TokenSettings(secret=SECRET), "operator", 1.0, "unknown role"),
        (TokenSettings(secret=SECRET), "admin", 0.0, "must be positive"),
        (TokenSettings(secret=SECRET), "admin", 1e12, "too far"),
        (TokenSettings(secret=SECRET, algorithm="RS256"), "admin", 1.0, "RS256"),
        (
            TokenSettings(secret=SECRET, custom_claim_key="role", custom_claim_value="x"),
            "admin",
            1.0,
            "'role'",
        ),
    ],
)
def test_unmintable_tokens_say_why(settings_: TokenSettings, role: str, days: float, message: str) -> None:
    with pytest.raises(TokenError, match=message):
        mint_token(settings_, role, days=days)


def test_days_must_be_positive_on_the_command_line(settings: Any) -> None:
    settings.FEDN_JWT_SECRET_KEY = SECRET
    with pytest.raises(CommandError, match="must be positive"):
        printed_token("--role", "admin", "--days", "0")
