"""GET /api/v1/tokens/revoked/: the revocation list combiners fetch (a contract with combiner_node)."""

import datetime as dt
import time
import uuid
from typing import Any

import jwt
import pytest
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIClient

from apps.identity.services import token_issue, token_revoke
from controlplane.api.auth import _prepared_hmac_key, decode_token

from .conftest import SECRET

pytestmark = pytest.mark.django_db

URL = "/api/v1/tokens/revoked/"


def bearer(role: str, **claims: Any) -> dict[str, str]:
    payload = {"role": role, "sub": f"{role}-1", "jti": uuid.uuid4().hex, "exp": int(time.time()) + 60}
    return {"HTTP_AUTHORIZATION": f"Bearer {jwt.encode({**payload, **claims}, SECRET, 'HS256')}"}


def test_lists_revoked_tokens_that_have_not_expired(auth_on: Any) -> None:
    live = token_issue(role="client", subject="alice", days=1)
    old = token_issue(role="client", subject="bob", days=1, now=timezone.now() - dt.timedelta(days=2))
    token_issue(role="client", subject="carol", days=1)
    token_revoke(jti=live.jti, by="ops")
    token_revoke(jti=old.jti, by="ops")
    for role in ("combiner", "admin"):
        response = APIClient().get(URL, **bearer(role))
        assert response.status_code == 200
        assert response.json() == {"jti": [live.jti]}
    # Without the trailing slash too, as every other route.
    assert APIClient().get(URL.rstrip("/"), **bearer("combiner")).json() == {"jti": [live.jti]}


def test_empty_list(auth_on: Any) -> None:
    assert APIClient().get(URL, **bearer("combiner")).json() == {"jti": []}


def test_refusals(auth_on: Any) -> None:
    api = APIClient()
    assert api.get(URL).status_code == 401
    assert api.get(URL).json()["message"] == "Missing token"
    refused = api.get(URL, **bearer("client"))
    assert (refused.status_code, refused.json()["message"]) == (401, "Invalid token")
    revoked = token_issue(role="combiner", subject="c1", days=1)
    token_revoke(jti=revoked.jti, by="ops")
    answer = api.get(URL, HTTP_AUTHORIZATION=f"Bearer {revoked.token}")
    assert (answer.status_code, answer.json()["message"]) == (401, "Token revoked")


def test_open_with_auth_off(settings: Any) -> None:
    settings.FEDN_JWT_SECRET_KEY = ""
    assert APIClient().get(URL).json() == {"jti": []}


def test_the_revocation_check_is_one_query(auth_on: Any, django_assert_num_queries: Any) -> None:
    # /health reads no table, so the one query is the revocation lookup of the token's jti.
    with django_assert_num_queries(1):
        assert APIClient().get("/health", **bearer("admin")).status_code == 200


def test_a_token_works_until_the_request_after_its_revocation(auth_on: Any) -> None:
    api = APIClient()
    token = token_issue(role="admin", subject="ops", days=1)
    assert api.get("/health", HTTP_AUTHORIZATION=f"Bearer {token.token}").status_code == 200
    token_revoke(jti=token.jti, by="ops")
    answer = api.get("/health", HTTP_AUTHORIZATION=f"Bearer {token.token}")
    assert (answer.status_code, answer.json()["message"]) == (401, "Token revoked")


def test_the_secret_is_prepared_once_not_per_token(auth_on: Any) -> None:
    tokens = [token_issue(role="admin", subject=f"ops{n}", days=1).token for n in range(3)]
    _prepared_hmac_key.cache_clear()
    for token in tokens * 2:
        decode_token(token)
    assert _prepared_hmac_key.cache_info().misses == 1
    with pytest.raises(AuthenticationFailed, match="Invalid token"):
        decode_token(
            jwt.encode({"role": "admin", "jti": "x", "exp": 2**40}, "another-secret-of-32-bytes-at-least")
        )


def raw_token(**claims: Any) -> str:
    payload = {"role": "admin", "sub": "ops", "jti": uuid.uuid4().hex, "exp": int(time.time()) + 60}
    return jwt.encode({**payload, **claims}, SECRET, "HS256")


def test_a_token_verified_before_is_refused_once_it_expires(auth_on: Any) -> None:
    expires = time.time() + 1.5
    token = raw_token(exp=expires)
    assert APIClient().get("/health", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    answer = APIClient().get("/health", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert (answer.status_code, answer.json()["message"]) == (401, "Token expired")


def test_a_token_verified_before_is_judged_again_under_other_settings(auth_on: Any) -> None:
    token = raw_token(team="blue")
    assert decode_token(token)["team"] == "blue"
    auth_on.FEDN_JWT_SECRET_KEY = "another-secret-of-at-least-32-bytes-long"
    with pytest.raises(AuthenticationFailed, match="Invalid token"):
        decode_token(token)
    auth_on.FEDN_JWT_SECRET_KEY = SECRET
    auth_on.FEDN_JWT_CUSTOM_CLAIM_KEY, auth_on.FEDN_JWT_CUSTOM_CLAIM_VALUE = "team", "red"
    with pytest.raises(AuthenticationFailed, match="Invalid token"):
        decode_token(token)
    auth_on.FEDN_JWT_CUSTOM_CLAIM_VALUE = "blue"
    assert decode_token(token)["sub"] == "ops"


def test_tampered_copies_of_a_verified_token_are_refused(auth_on: Any) -> None:
    token = raw_token()
    decode_token(token)
    header, payload, signature = token.split(".")
    for forged in (f"{header}.{payload}.{signature[:-2]}AA", f"{header}.{payload}x.{signature}", token + " "):
        with pytest.raises(AuthenticationFailed):
            decode_token(forged)
