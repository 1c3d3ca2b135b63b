"""`manage.py fedplane_token`: mint (recorded), --revoke, --list, --subject and the lifetime cap."""

import datetime as dt
import io
from typing import Any

import jwt
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from apps.identity.models import IssuedToken
from apps.identity.services import token_issue

from .conftest import SECRET

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("fedplane_token", *args, stdout=out)
    return out.getvalue()


def test_prints_only_a_token_with_exp_and_jti_and_records_it(auth_on: Any) -> None:
    printed = run("--role", "combiner", "--subject", "c1", "--days", "3")
    token = printed.strip()
    assert printed.count("\n") <= 1 and " " not in token
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": ["exp", "jti", "sub"]})
    assert (claims["role"], claims["sub"]) == ("combiner", "c1")
    assert claims["exp"] - claims["iat"] == 3 * 86400
    record = IssuedToken.objects.get(jti=claims["jti"])
    assert (record.role, record.subject) == ("combiner", "c1")
    assert record.issued_by  # the OS user running the command


@pytest.mark.parametrize("role", ["client", "combiner"])
def test_subject_is_required_for_client_and_combiner(auth_on: Any, role: str) -> None:
    with pytest.raises(CommandError, match="give --subject") as error:
        run("--role", role)
    assert error.value.returncode == 1
    assert not IssuedToken.objects.exists()


def test_admin_subject_defaults_to_admin(auth_on: Any) -> None:
    claims = jwt.decode(run("--role", "admin").strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "admin"


def test_longer_than_the_maximum_lifetime_is_refused(auth_on: Any) -> None:
    with pytest.raises(CommandError, match="FEDPLANE_TOKEN_MAX_DAYS=365"):
        run("--role", "admin", "--days", "366")
    auth_on.FEDPLANE_TOKEN_MAX_DAYS = 7.0
    with pytest.raises(CommandError, match="FEDPLANE_TOKEN_MAX_DAYS=7"):
        run("--role", "admin", "--days", "8")
    assert run("--role", "admin", "--days", "7").strip()
    assert IssuedToken.objects.count() == 1


def test_role_is_needed_to_mint(auth_on: Any) -> None:
    with pytest.raises(CommandError, match="give --role"):
        run()


def test_revoke_refuses_the_token_on_rest_at_once(auth_on: Any) -> None:
    token = run("--role", "admin", "--subject", "ops").strip()
    jti = jwt.decode(token, SECRET, algorithms=["HS256"])["jti"]
    api = APIClient()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert api.get("/get_controller_status", **headers).status_code == 200

    printed = run("--revoke", jti, "--reason", "laptop lost")
    assert printed.startswith(f"revoked {jti} (admin ops)")
    record = IssuedToken.objects.get(jti=jti)
    assert record.revoke_reason == "laptop lost" and record.revoked_by and record.revoked_at
    refused = api.get("/get_controller_status", **headers)
    assert refused.status_code == 401
    assert refused.json()["message"] == "Token revoked"


def test_revoking_an_unknown_jti_exits_1(auth_on: Any) -> None:
    with pytest.raises(CommandError, match="no issued token has jti 'deadbeef'") as error:
        run("--revoke", "deadbeef")
    assert error.value.returncode == 1


def test_list_shows_every_token(auth_on: Any) -> None:
    alice = token_issue(role="client", subject="alice", days=1)
    old = token_issue(role="combiner", subject="c1", days=1, now=timezone.now() - dt.timedelta(days=3))
    run("--revoke", alice.jti)
    lines = run("--list").splitlines()
    assert lines[0].split() == ["jti", "role", "subject", "expires", "revoked"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {alice.jti, old.jti}
    assert rows[alice.jti].split()[1:3] == ["client", "alice"]
    assert rows[alice.jti].split()[-1].endswith("Z")  # revoked at
    assert "(expired)" in rows[old.jti] and rows[old.jti].rstrip().endswith("-")
