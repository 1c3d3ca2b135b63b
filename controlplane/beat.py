"""One Celery beat fires the schedules, however many run against the same database.

`LeaderScheduler` is django-celery-beat's DatabaseScheduler behind a lock: the beat that holds it
fires the schedules; any other stands by, tries again every second and takes over when the holder
dies. The lock lives as long as its holder, so no lease has to be renewed:

- PostgreSQL: a session advisory lock on a connection of its own. The server drops it with the
  connection: at once when the process dies, within about 15 s (TCP keepalive) when its host
  vanishes. It needs a direct connection or session pooling, not transaction pooling.
- SQLite: an exclusive `flock` on a file beside the database. Only processes on one machine can
  share a SQLite file, and the kernel drops the lock with the process.

Each firing is written to the database before its message is sent, and a beat that takes the
lead reads the schedule afresh, so it goes on from the last firing instead of repeating it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import IO, Any, Protocol

from celery.utils.log import get_logger
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import Error, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

logger = get_logger(__name__)

# The two int4 keys of the advisory lock ("fpl", 1); pg_locks shows them as classid and objid.
ADVISORY_KEY = (0x66706C, 1)
# Client side: a check on a dead link fails within seconds instead of hanging. Server side: the
# server notices a vanished host and drops its lock within ~15 s, not the kernel's two hours.
PG_KEEPALIVE_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
PG_SERVER_KEEPALIVE = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"


class BeatLock(Protocol):
    def acquire(self) -> bool: ...

    def held(self) -> bool: ...

    def holder(self) -> str: ...

    def release(self) -> None: ...


def _mid_query(session: Any) -> bool:
    """Whether a psycopg connection is running a query (its lock is taken for each one)."""
    lock = getattr(session, "lock", None)
    return lock is not None and lock.locked()


class AdvisoryLock:
    """A PostgreSQL session advisory lock held on a connection that only this lock uses."""

    def __init__(self, identity: str, alias: str = "default") -> None:
        self.identity = identity
        self.alias = alias
        self._db: BaseDatabaseWrapper | None = None

    def _connection(self) -> BaseDatabaseWrapper:
        if self._db is None:
            # Not Django's connection for the alias: the scheduler closes and reopens that one.
            base = connections[self.alias]
            options = dict(base.settings_dict.get("OPTIONS", {}))
            options.update(PG_KEEPALIVE_OPTIONS)
            options["options"] = f"{options.get('options', '')} {PG_SERVER_KEEPALIVE}".strip()
            options["application_name"] = f"fedplane-beat {self.identity}"[:63]
            self._db = type(base)({**base.settings_dict, "OPTIONS": options}, alias=f"{self.alias}-beat-lock")
        return self._db

    def _ask(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with self._connection().cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        return row[0] if row else None

    def acquire(self) -> bool:
        try:
            return bool(self._ask("SELECT pg_try_advisory_lock(%s, %s)", ADVISORY_KEY))
        except Error as exc:
            logger.warning("beat: cannot ask the database for the beat lock: %s", exc)
            self.release()
            return False

    def held(self) -> bool:
        # Asked of pg_locks rather than assumed: a pooler that swapped the server session shows here.
        try:
            return bool(
                self._ask(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = pg_backend_pid() AND classid = %s AND objid = %s AND objsubid = 2)",
                    ADVISORY_KEY,
                )
            )
        except Error:
            return False

    def holder(self) -> str:
        try:
            name = self._ask(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s"
                " AND l.objsubid = 2"
                " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                ADVISORY_KEY,
            )
        except Error:
            name = None
        return str(name).removeprefix("fedplane-beat ") if name else "another beat"

    def release(self) -> None:
        # Closing the session is what releases a session-level advisory lock, but only once the
        # server has read the goodbye, a moment after close() returns: a beat asking at once could
        # still find the lock taken. An open session unlocks first, which the server does at once.
        # Not a session in the middle of a query, though: beat's SIGTERM handler closes the
        # scheduler, and a signal landing while the lock was being asked for leaves that query
        # below on the stack, holding psycopg's connection lock; asking again would wait forever.
        if self._db is not None:
            if self._db.connection is not None and not _mid_query(self._db.connection):
                with contextlib.suppress(Error):
                    self._ask("SELECT pg_advisory_unlock(%s, %s)", ADVISORY_KEY)
            with contextlib.suppress(Error):
                self._db.close()
            self._db = None


class FileLock:
    """An exclusive `flock` on a file; the file names its holder for the others' logs."""

    def __init__(self, path: Path, identity: str) -> None:
        self.path = path
        self.identity = identity
        self._file: IO[str] | None = None
        self._locked = False

    def acquire(self) -> bool:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._file.seek(0)
        self._file.truncate()
        self._file.write(self.identity)
        self._file.flush()
        self._locked = True
        return True

    def held(self) -> bool:
        return self._locked

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another beat"
        except OSError:
            return "another beat"

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._locked = False


def beat_lock(identity: str, alias: str = "default") -> BeatLock:
    """The lock that fits the database the schedules live in."""
    database = settings.DATABASES[alias]
    vendor = connections[alias].vendor
    if vendor == "postgresql":
        return AdvisoryLock(identity, alias)
    if vendor == "sqlite":
        name = str(database["NAME"])
        if name and name != ":memory:" and not name.startswith("file:"):
            return FileLock(Path(f"{name}-beat.lock"), identity)
        return FileLock(Path(settings.VAR_DIR) / "beat.lock", identity)
    raise NotImplementedError(f"no beat lock for a {vendor} database")


class LeaderScheduler(DatabaseScheduler):
    """DatabaseScheduler that fires only while this beat holds the beat lock."""

    #: Seconds between a standing-by beat's tries to take the lead.
    standby_interval = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.lock = beat_lock(self.identity)
        self.leading = False
        self._told_standby = False
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._lead():
            return self.standby_interval
        try:
            return super().tick(*args, **kwargs)
        except (Error, ObjectDoesNotExist) as exc:
            # reserve() could not record the firing, so nothing was sent; it is tried again.
            logger.error("beat: could not record a firing, sent nothing (%r); retrying", exc)
            self._heap = None
            return self.standby_interval

    def _lead(self) -> bool:
        if self.leading:
            if self.lock.held():
                return True
            logger.error("beat: %s lost the beat lock; it fires nothing until it leads again", self.identity)
            self.leading = False
            self.lock.release()
        if not self.lock.acquire():
            if not self._told_standby:
                logger.warning(
                    "beat: %s stands by: %s leads; taking over when it stops",
                    self.identity,
                    self.lock.holder(),
                )
                self._told_standby = True
            return False
        logger.warning("beat: %s leads: it holds the beat lock and fires the schedules", self.identity)
        self.leading = True
        self._told_standby = False
        # What ran while another beat led is in the database: read the schedule afresh.
        self._initial_read = True
        self._heap = None
        return True

    def reserve(self, entry: ModelEntry) -> ModelEntry:
        new_entry = super().reserve(entry)
        # Written before the message is sent: a beat that dies between the two loses this one
        # firing, rather than the beat taking over sending it a second time.
        new_entry.save()
        self._dirty.discard(new_entry.name)
        # DatabaseScheduler keeps the pre-firing entry in its schedule; a heap rebuilt from it
        # (after two schedule changes in one tick) would find it due and send it again.
        if self._schedule is not None and new_entry.name in self._schedule:
            self._schedule[new_entry.name] = new_entry
        return new_entry

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.lock.release()
