"""Scheduled sessions: a django-celery-beat PeriodicTask, set up as an operator does in the admin,
fired by beat's real DatabaseScheduler; its task runs in-process as a worker would run it."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.models.services import model_create_seed
from apps.packages.services import package_create
from apps.sessions.choices import SessionStatus
from apps.sessions.models import ScheduledStart, Session
from tests.api.factories import package_bytes

# Beat closes and reopens database connections and commits between ticks, as it does in production;
# that needs real transactions, not a test wrapped in one.
pytestmark = pytest.mark.django_db(transaction=True)

SCHEDULE = "nightly-digits"
SESSION_CONFIG = {"rounds": 2, "round_timeout": 60, "min_clients": 1, "requested_clients": 4}


@pytest.fixture
def scheduler(monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabaseScheduler]:
    """Beat's database scheduler; fired tasks run eagerly in this process instead of via a broker.

    Started sessions are only recorded: their steps are not run here (no combiners to run them on).
    """
    from apps.sessions import steps, tasks
    from controlplane.celery import app

    monkeypatch.setattr(steps.session_advance, "delay", lambda *args, **kwargs: None)

    # Beat runs a registered task through apply_async (eager here); the worker imports it the same way.
    assert tasks.start_scheduled_session.name in app.tasks
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    beat = DatabaseScheduler(app=app)
    # Only the schedule under test fires here (the watchdog has its own tests).
    PeriodicTask.objects.exclude(name=SCHEDULE).update(enabled=False)
    yield beat
    # Beat syncs its entries at exit; do it now, while this test's database is still there.
    beat.sync()
    beat._finalize.cancel()
    app.conf.task_always_eager = previous


@pytest.fixture
def ready_network(fs_storage: Any) -> None:
    """A package, a seed model and an online client: what a session needs to start."""
    package_create(upload=SimpleUploadedFile("package.tgz", package_bytes()), helper="numpyhelper")
    seed = io.BytesIO()
    np.savez(seed, **{"0": np.zeros((2, 2))})
    model_create_seed(upload=SimpleUploadedFile("seed.npz", seed.getvalue()))
    Client.objects.create(name="c1", status=ClientStatus.ONLINE, last_seen=timezone.now())


def operator_schedule(every_minutes: int = 60) -> PeriodicTask:
    """What an operator saves in the admin: an interval, the task, and the session's config as kwargs."""
    interval, _ = IntervalSchedule.objects.get_or_create(every=every_minutes, period=IntervalSchedule.MINUTES)
    return PeriodicTask.objects.create(
        name=SCHEDULE,
        task="fl_sessions.start_scheduled_session",
        interval=interval,
        kwargs=json.dumps(SESSION_CONFIG),
        # As if it last ran one interval ago, so it is due now.
        last_run_at=timezone.now() - dt.timedelta(minutes=every_minutes, seconds=1),
    )


def make_due(task: PeriodicTask) -> None:
    task.refresh_from_db()
    task.last_run_at = timezone.now() - dt.timedelta(minutes=task.interval.every, seconds=1)
    task.save()


def test_a_due_schedule_starts_a_session_with_its_config(
    scheduler: DatabaseScheduler, ready_network: None
) -> None:
    task = operator_schedule()
    scheduler.tick()

    (fired,) = ScheduledStart.objects.all()
    assert fired.schedule_name == SCHEDULE
    assert fired.outcome == "started" and fired.reason == ""
    session = fired.session
    assert session is not None and session.session_id.startswith(f"{SCHEDULE}-")
    assert session.status == SessionStatus.INITIALIZED
    assert (session.rounds, session.round_timeout, session.clients_required, session.clients_requested) == (
        2,
        60,
        1,
        4,
    )
    task.refresh_from_db()
    assert task.total_run_count == 1

    # Not due again until the interval has passed.
    scheduler.tick()
    assert ScheduledStart.objects.count() == 1


def test_a_firing_while_a_session_runs_is_skipped_with_the_reason(
    scheduler: DatabaseScheduler, ready_network: None
) -> None:
    task = operator_schedule()
    scheduler.tick()
    running = ScheduledStart.objects.get().session
    Session.objects.filter(pk=running.pk).update(status=SessionStatus.STARTED)

    make_due(task)
    scheduler.tick()

    latest = ScheduledStart.objects.order_by("-id").first()
    assert latest.schedule_name == SCHEDULE
    assert latest.outcome == "skipped"
    assert latest.reason == "A session is already running."
    assert latest.session is None
    assert Session.objects.count() == 1


def test_a_firing_without_a_seed_model_is_skipped_with_the_reason(
    scheduler: DatabaseScheduler, fs_storage: Any
) -> None:
    package_create(upload=SimpleUploadedFile("package.tgz", package_bytes()), helper="numpyhelper")
    operator_schedule()
    scheduler.tick()

    (fired,) = ScheduledStart.objects.all()
    assert fired.outcome == "skipped"
    assert fired.reason.startswith("No initial model set.")
    assert not Session.objects.exists()
