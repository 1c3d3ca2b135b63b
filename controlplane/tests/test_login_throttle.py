"""Admin login throttling (django-axes): N failures lock one username from one address for a cool-off."""

import datetime as dt
import io
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db

LIMIT = 3
COOLOFF = dt.timedelta(minutes=15)
PASSWORD = "the-right-password"
HOME = "10.0.0.1"
ELSEWHERE = "10.0.0.2"


@pytest.fixture(autouse=True)
def throttling(settings: Any) -> None:
    # Fixed here, so a FEDPLANE_LOGIN_* variable in the environment cannot change what is tested.
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = COOLOFF


@pytest.fixture
def operator() -> User:
    return User.objects.create_user("operator", password=PASSWORD, is_staff=True)


def log_in(username: str = "operator", password: str = PASSWORD, address: str = HOME, **headers: str) -> Any:
    """One POST of the admin login form from a fresh browser at `address`."""
    return HttpClient(REMOTE_ADDR=address).post(
        reverse("admin:login"),
        {"username": username, "password": password, "next": "/admin/"},
        **headers,
    )


def fail(times: int, username: str = "operator", address: str = HOME) -> list[int]:
    return [log_in(username, "wrong", address).status_code for _ in range(times)]


def assert_logged_in(response: Any) -> None:
    assert response.status_code == 302, response.content.decode()[:500]
    assert response["Location"] == "/admin/"


def assert_locked_out(response: Any) -> None:
    assert response.status_code == 429
    assert "Login locked after 3 failed attempts" in response.content.decode()
    assert "sessionid" not in response.cookies


def test_failures_below_the_limit_still_allow_a_login(operator: User) -> None:
    assert fail(LIMIT - 1) == [200] * (LIMIT - 1)  # the form again, with its error
    assert AccessAttempt.objects.get(username="operator").failures_since_start == LIMIT - 1

    assert_logged_in(log_in())
    # A success forgets the failures: the next typo does not lock.
    assert not AccessAttempt.objects.exists()
    assert fail(1) == [200]


def test_the_limit_locks_the_username_from_that_address(operator: User) -> None:
    assert fail(LIMIT) == [200] * (LIMIT - 1) + [429]

    response = log_in()
    assert_locked_out(response)
    assert "Try again in 15 minutes" in response.content.decode()
    assert 14 * 60 < int(response["Retry-After"]) <= 15 * 60
    assert "fedplane control plane" in response.content.decode()  # the admin's page, not a bare text


def test_a_client_asking_for_json_gets_json(operator: User) -> None:
    fail(LIMIT)
    response = log_in(HTTP_ACCEPT="application/json")
    assert response.status_code == 429
    body = response.json()
    assert body["success"] is False
    assert body["message"].startswith("Login locked after 3 failed attempts")


def test_another_address_or_another_username_is_not_locked(operator: User) -> None:
    User.objects.create_user("colleague", password=PASSWORD, is_staff=True)
    fail(LIMIT)
    assert_locked_out(log_in())

    assert_logged_in(log_in(address=ELSEWHERE))
    assert_logged_in(log_in("colleague"))


def test_the_lock_ends_after_the_cool_off(operator: User) -> None:
    fail(LIMIT)
    # Attempts while locked do not extend the lock.
    fail(2)
    assert_locked_out(log_in())

    AccessAttempt.objects.update(attempt_time=timezone.now() - COOLOFF + dt.timedelta(seconds=30))
    response = log_in()
    assert_locked_out(response)
    assert "Try again in 1 minute," in response.content.decode()

    AccessAttempt.objects.update(attempt_time=timezone.now() - COOLOFF - dt.timedelta(seconds=1))
    assert_logged_in(log_in())


def test_without_a_cool_off_the_lock_waits_for_an_operator(settings: Any, operator: User) -> None:
    settings.AXES_COOLOFF_TIME = None
    fail(LIMIT)
    AccessAttempt.objects.update(attempt_time=timezone.now() - dt.timedelta(days=30))

    response = log_in()
    assert_locked_out(response)
    assert "An operator has to remove the lock" in response.content.decode()
    assert "Retry-After" not in response


def test_the_lock_shows_in_the_admin_and_an_operator_removes_it(
    admin_client: HttpClient, operator: User
) -> None:
    fail(LIMIT)
    changelist = reverse("admin:axes_accessattempt_changelist")
    assert changelist in admin_client.get(reverse("admin:index")).content.decode()

    body = admin_client.get(changelist, {"locked_out": "yes"}).content.decode()
    assert "operator" in body and HOME in body and "Locked Out" in body

    attempt = AccessAttempt.objects.get(username="operator")
    response = admin_client.post(
        reverse("admin:axes_accessattempt_delete", args=[attempt.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert_logged_in(log_in())


def test_axes_reset_removes_the_lock(operator: User) -> None:
    fail(LIMIT)
    assert_locked_out(log_in())

    call_command("axes_reset", stdout=io.StringIO())
    assert not AccessAttempt.objects.exists()
    assert_logged_in(log_in())
