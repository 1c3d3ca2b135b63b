"""A running session holds the federation: the package and model apps refuse changes while it does,
and the hold follows the session's life, including changes made behind the services' back."""

import pytest

from apps.models.services import ModelError, refuse_change_while_held
from apps.packages.services import package_change_refused
from apps.sessions.choices import SessionStatus
from apps.sessions.models import Session
from apps.sessions.records import federation_holds_sync
from apps.sessions.services import session_stop
from apps.sessions.steps import sessions_watchdog
from controlplane.federation import federation_holder

pytestmark = pytest.mark.django_db

REFUSAL = "A session is running (nightly); wait until it has ended or stop it."


def test_an_active_session_holds_and_both_apps_refuse_with_its_name() -> None:
    Session.objects.create(session_id="nightly", status=SessionStatus.STARTED)
    federation_holds_sync()
    assert federation_holder() == "nightly"
    assert package_change_refused() == REFUSAL
    with pytest.raises(ModelError, match=r"A session is running \(nightly\)"):
        refuse_change_while_held()


def test_created_and_ended_sessions_hold_nothing() -> None:
    for session_id, status in [("new", SessionStatus.CREATED), ("done", SessionStatus.FINISHED)]:
        Session.objects.create(session_id=session_id, status=status)
    federation_holds_sync()
    assert federation_holder() is None
    assert package_change_refused() is None
    refuse_change_while_held()


def test_stopping_a_session_that_had_not_started_releases_the_hold() -> None:
    session = Session.objects.create(session_id="nightly", status=SessionStatus.INITIALIZED)
    federation_holds_sync()
    assert federation_holder() == "nightly"
    session_stop(session=session)
    assert Session.objects.get(pk=session.pk).status == SessionStatus.STOPPED
    assert federation_holder() is None


def test_the_watchdog_releases_the_hold_of_a_session_deleted_behind_the_services_back() -> None:
    session = Session.objects.create(session_id="nightly", status=SessionStatus.STOPPING)
    federation_holds_sync()
    assert federation_holder() == "nightly"
    session.delete()
    assert federation_holder() == "nightly"  # nothing has noticed yet
    sessions_watchdog()
    assert federation_holder() is None


def test_the_watchdog_takes_the_hold_of_a_session_made_active_by_a_bare_update() -> None:
    Session.objects.create(session_id="nightly", status=SessionStatus.CREATED)
    Session.objects.filter(session_id="nightly").update(status=SessionStatus.STARTED)
    assert federation_holder() is None
    sessions_watchdog()
    assert federation_holder() == "nightly"
