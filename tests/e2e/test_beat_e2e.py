"""Two Celery beats against one database: each due firing is sent once.

Real processes: a worker and two `celery beat` processes, on PostgreSQL + Redis (the services) and
on the embedded defaults (SQLite + filesystem broker). A schedule fires every two seconds; the
worker runs each firing, which records a skipped scheduled start (there is nothing to train).
One beat leads and the other stands by; the leader is SIGKILLed right after a firing, the other
takes over and firing goes on; the killed beat, restarted, stands by. Firings are read from the
beats' logs and the recorded starts, and no two are closer than the interval allows.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Federation, Process, prepare_backend

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SCHEDULE = "beat-e2e"
INTERVAL = 2
# How long each beat is watched firing.
WINDOW = 10.0
# A beat standing by tries for the lock every second; the server drops a dead holder's lock at once.
TAKEOVER_DEADLINE = 15.0
LEADS = " leads: "
STANDS_BY = " stands by: "
SENT = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/\w+\] Scheduler: Sending due task "
    + re.escape(SCHEDULE)
    + r" ",
    re.MULTILINE,
)
RECEIVED = re.compile(r"Task fl_sessions\.start_scheduled_session\[[\w-]+\] received$", re.MULTILINE)

CREATE_SCHEDULE = f"""
from django_celery_beat.models import IntervalSchedule, PeriodicTask
every, _ = IntervalSchedule.objects.get_or_create(every={INTERVAL}, period=IntervalSchedule.SECONDS)
PeriodicTask.objects.create(name={SCHEDULE!r}, task="fl_sessions.start_scheduled_session", interval=every)
"""
COUNT_RUNS = f"""
from apps.sessions.models import ScheduledStart
print(ScheduledStart.objects.filter(schedule_name={SCHEDULE!r}).count())
"""


@pytest.fixture(params=["services", "embedded"])
def federation(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Federation]:
    """Storage of its own, migrated, with the schedule under test; no process runs yet."""
    if request.param == "services":
        if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
            pytest.skip("DATABASE_URL names no PostgreSQL (see scripts/services.sh env)")
        environ = dict(os.environ)
    else:
        environ = {}
    # prepare_backend claims a Redis database no other running federation uses: no other worker
    # runs these firings, and no other test's tasks reach these beats' worker.
    backend = prepare_backend(tmp_path / "var", environ)
    federation = Federation(backend)
    try:
        for command in (("migrate", "-v0"), ("shell", "-c", CREATE_SCHEDULE)):
            done = federation.manage(*command)
            assert done.returncode == 0, done.stderr
        print(f"\nbackend: {backend.description}")
        yield federation
    finally:
        federation.stop()
        backend.close()


def sends(process: Process) -> list[dt.datetime]:
    """When `process` sent the schedule under test, by its log."""
    return [
        dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") for stamp in SENT.findall(process.tail(10**7))
    ]


def sends_after(process: Process, marker: str) -> bool:
    """Whether every send in the log of `process` comes after the line naming `marker`."""
    text = process.tail(10**7)
    first_send = SENT.search(text)
    return first_send is None or (marker in text and text.index(marker) < first_send.start())


def received(federation: Federation) -> int:
    return len(RECEIVED.findall(federation.processes["worker"].tail(10**7)))


def stop(federation: Federation, name: str) -> None:
    federation.signal(name, signal.SIGTERM)
    federation.processes[name].popen.wait(timeout=20)


def test_two_beats_send_each_firing_once_and_the_second_takes_over(federation: Federation) -> None:
    federation.start_worker(beat=False)
    first = federation.start_beat("beat-1")
    federation.wait_log("beat-1", LEADS, timeout=60)
    second = federation.start_beat("beat-2")
    federation.wait_log("beat-2", STANDS_BY, timeout=60)
    # The beat standing by names the leader (host:pid).
    assert f":{first.popen.pid} leads;" in second.tail(10**7)

    time.sleep(WINDOW)
    federation.check_alive("worker", "beat-1", "beat-2")
    assert sends(second) == [], "the beat standing by sent a firing"
    led = len(sends(first))
    assert led >= 2, f"beat-1 led for {WINDOW} s and sent {led} firings"

    # Kill the leader right after one of its firings reached the worker: the moment at which a
    # successor that did not know of that firing would send it again.
    federation.wait_for(
        "a firing of beat-1 to reach the worker",
        lambda: len(sends(first)) > led and received(federation) >= len(sends(first)),
        timeout=4 * INTERVAL + 10,
        interval=0.02,
    )
    federation.kill("beat-1")
    killed = time.monotonic()
    federation.wait_log("beat-2", LEADS, timeout=TAKEOVER_DEADLINE)
    print(f"beat-2 took the lead {time.monotonic() - killed:.1f} s after beat-1 was killed")

    # The case: the killed beat comes back while the other runs. It must stand by.
    federation.restart("beat-1")
    restarted = federation.processes["beat-1"]
    federation.wait_log("beat-1", STANDS_BY, timeout=60)
    time.sleep(WINDOW)
    federation.check_alive("worker", "beat-1", "beat-2")
    # The one standing by first: stopping the leader first would hand it the lead.
    stop(federation, "beat-1")
    stop(federation, "beat-2")

    assert sends(restarted) == [], "the restarted beat sent a firing while the other led"
    assert sends_after(second, LEADS), "beat-2 sent a firing before it took the lead"
    taken_over = len(sends(second))
    assert taken_over >= 2, f"beat-2 led for {WINDOW} s and sent {taken_over} firings"
    times = sorted(sends(first) + sends(second))
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    print(
        f"firings: {len(sends(first))} by beat-1, {taken_over} by beat-2; "
        f"gaps between firings {min(gaps):.2f}..{max(gaps):.2f} s (interval {INTERVAL} s)"
    )
    # A firing sent twice (by both beats, or again after the takeover) is a gap far below the interval.
    assert min(gaps) >= 0.75 * INTERVAL, gaps

    # Every firing sent reached the worker once and ran once.
    federation.wait_for("the worker to receive every firing", lambda: received(federation) >= len(times), 60)

    def runs() -> int:
        done = federation.manage("shell", "-v", "0", "-c", COUNT_RUNS)
        assert done.returncode == 0, done.stderr
        return int(done.stdout.strip())

    federation.wait_for("every firing to run", lambda: runs() >= len(times), 60, interval=1)
    assert received(federation) == len(times)
    assert runs() == len(times)
