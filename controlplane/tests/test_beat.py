"""The beat lock and LeaderScheduler: of two beats on one database only the holder fires, and the
beat that takes over goes on from the last firing instead of sending it again.

The schedulers run in this process on the test database, their due task applied eagerly; the
same with real beat processes is tests/e2e/test_beat_e2e.py.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from controlplane.beat import AdvisoryLock, FileLock, LeaderScheduler, beat_lock
from controlplane.celery import app

PROBE = "controlplane.tests.beat_probe"
SCHEDULE = "beat-probe"
fired: list[str] = []


@app.task(name=PROBE)
def beat_probe() -> None:
    fired.append("fired")


def on_postgresql() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


def test_file_lock_is_held_by_one_and_names_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3-beat.lock"
    first, second = FileLock(path, "host:1"), FileLock(path, "host:2")
    try:
        assert first.acquire() and first.held()
        assert not second.acquire() and not second.held()
        assert second.holder() == "host:1"
        first.release()
        assert second.acquire()
        assert first.holder() == "host:2"
        assert not first.acquire()
    finally:
        first.release()
        second.release()


@pytest.mark.django_db
@pytest.mark.skipif(not on_postgresql(), reason="DATABASE_URL names no PostgreSQL (scripts/services.sh env)")
def test_advisory_lock_is_held_by_one_session_and_lost_with_it() -> None:
    first, second = AdvisoryLock("host:1"), AdvisoryLock("host:2")
    try:
        assert first.acquire() and first.held()
        assert not second.acquire() and not second.held()
        assert second.holder() == "host:1"
        # The holder's session ends (a dead process, a restarted server): the lock goes with it,
        # the holder sees it has lost it, and the other takes it.
        with connection.cursor() as cursor:
            cursor.execute(
                # This database only: other test databases on the server may hold a "host:1" too.
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = current_database()",
                ["fedplane-beat host:1"],
            )
        assert not first.held()
        first.release()
        assert second.acquire() and second.held()
        assert not first.acquire()
    finally:
        first.release()
        second.release()


@pytest.mark.django_db
@pytest.mark.skipif(not on_postgresql(), reason="DATABASE_URL names no PostgreSQL (scripts/services.sh env)")
def test_a_lock_released_while_its_session_is_mid_query_does_not_wait_for_it() -> None:
    """Beat's SIGTERM handler closes the scheduler, whose lock may be asking the database at that
    moment: psycopg's connection lock is then held by the interrupted query. The release closes the
    session instead of asking it to unlock, and the server frees the lock with the session."""
    first, second = AdvisoryLock("host:1"), AdvisoryLock("host:2")
    try:
        assert first.acquire()
        session = first._connection().connection
        first._connection().inc_thread_sharing()  # released from a thread, so this one can wait
        released = threading.Event()
        session.lock.acquire()  # as the interrupted query holds it
        try:
            threading.Thread(target=lambda: (first.release(), released.set()), daemon=True).start()
            assert released.wait(5), "the release waited for the query it interrupted"
        finally:
            session.lock.release()
        assert session.closed
        deadline = time.monotonic() + 10
        while not second.acquire():
            assert time.monotonic() < deadline, "the closed session's lock was not freed"
            time.sleep(0.05)
    finally:
        first.release()
        second.release()


@pytest.mark.django_db
def test_the_lock_fits_the_database() -> None:
    lock = beat_lock("host:1")
    assert isinstance(lock, AdvisoryLock if connection.vendor == "postgresql" else FileLock)


def make_due() -> None:
    """As an operator would: the schedule last ran over an interval ago (a change beat notices)."""
    PeriodicTask.objects.filter(name=SCHEDULE).update(
        last_run_at=timezone.now() - dt.timedelta(minutes=61), total_run_count=0
    )
    PeriodicTasks.update_changed()


def tick(scheduler: LeaderScheduler, times: int = 4) -> None:
    for _ in range(times):
        scheduler.tick()


@pytest.fixture
def beats() -> Iterator[tuple[LeaderScheduler, LeaderScheduler]]:
    """Two beats on the test database; only the hourly schedule under test is enabled, and due."""
    every, _ = IntervalSchedule.objects.get_or_create(every=60, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name=SCHEDULE, task=PROBE, interval=every)
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    fired.clear()
    started: list[LeaderScheduler] = []
    try:
        started.append(LeaderScheduler(app=app))
        started.append(LeaderScheduler(app=app))
        PeriodicTask.objects.exclude(name=SCHEDULE).update(enabled=False)
        make_due()
        yield started[0], started[1]
    finally:
        for scheduler in started:
            # Now, while this test's database is still there (beat also syncs at exit).
            scheduler.close()
            scheduler._finalize.cancel()
        app.conf.task_always_eager = previous


@pytest.mark.django_db(transaction=True)
def test_only_the_beat_holding_the_lock_fires(beats: tuple[LeaderScheduler, LeaderScheduler]) -> None:
    first, second = beats
    tick(first)
    tick(second)
    assert fired == ["fired"]
    assert (first.leading, second.leading) == (True, False)


@pytest.mark.django_db(transaction=True)
def test_the_beat_taking_over_goes_on_from_the_last_firing(
    beats: tuple[LeaderScheduler, LeaderScheduler],
) -> None:
    first, second = beats
    # The second beat read the schedule while it was due; then the first leads and fires.
    assert second.schedule[SCHEDULE].is_due().is_due
    tick(first)
    tick(second)
    assert fired == ["fired"]
    assert (first.leading, second.leading) == (True, False)
    # The leader dies without syncing: its lock goes, nothing else happens.
    first.lock.release()
    tick(second)
    assert second.leading
    # It read the firing from the database instead of firing what it loaded as due.
    assert fired == ["fired"]
    assert PeriodicTask.objects.get(name=SCHEDULE).total_run_count == 1

    make_due()
    tick(second)
    assert fired == ["fired", "fired"]


@pytest.mark.django_db(transaction=True)
def test_a_rebuilt_heap_does_not_fire_an_entry_again(beats: tuple[LeaderScheduler, LeaderScheduler]) -> None:
    first, _ = beats
    tick(first)
    assert fired == ["fired"]
    # What DatabaseScheduler does when the schedule changes twice within one tick.
    first._heap = None
    tick(first)
    assert fired == ["fired"]
