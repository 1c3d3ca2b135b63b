"""Claiming a session for one step, and fencing that step's writes with the claim.

Fencing. Every database write of a step happens inside `fenced()`: one transaction that ends with a
conditional UPDATE on the session row (`lease_token = <ours>`), which also renews the lease. Zero
rows means another worker claimed the session meanwhile: `LeaseLost` rolls the whole step back
(round rows, status changes, events, a committed model), the step logs it and does nothing else,
and the holder carries on. On PostgreSQL that UPDATE holds the row lock until commit, so a claim
racing with it waits and then sees the renewed lease; SQLite serialises writers anyway.
"""

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.sessions.choices import ACTIVE_SESSION_STATUSES
from apps.sessions.models import Session

# A step finishes well within this; a dead worker's claim lapses after it.
LEASE = dt.timedelta(seconds=30)
# Reducing large models may take longer than a normal step; the reduce task's limits fit inside it.
REDUCE_LEASE = dt.timedelta(minutes=10)


class LeaseLost(Exception):
    """Another worker claimed the session while this step ran; the step's writes are rolled back."""


def claim(session_pk: int, lease: dt.timedelta = LEASE, wake: str | None = None) -> str | None:
    """Take the session for one step; None when another worker holds it, it is not running, or
    `wake` (the token the task was enqueued with) is no longer the session's: a stale duplicate."""
    token = uuid.uuid4().hex
    now = timezone.now()
    running = Session.objects.filter(pk=session_pk, status__in=ACTIVE_SESSION_STATUSES)
    if wake is not None:
        running = running.filter(wake_token=wake)
    claimed = running.filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now)).update(
        lease_token=token, lease_until=now + lease
    )
    return token if claimed else None


def extend_lease(session_pk: int, token: str, lease: dt.timedelta) -> None:
    """Renew the lease while it is still ours; LeaseLost when another worker has claimed the session."""
    renewed = Session.objects.filter(pk=session_pk, lease_token=token).update(
        lease_until=timezone.now() + lease
    )
    if not renewed:
        raise LeaseLost(f"session {session_pk} is no longer held by lease {token}")


@contextlib.contextmanager
def fenced(session_pk: int, token: str, lease: dt.timedelta = LEASE) -> Iterator[None]:
    """The writes of a step: one transaction that commits only if the step still holds its lease."""
    with transaction.atomic():
        yield
        # Last statement of the transaction: on PostgreSQL it holds the row lock until commit.
        extend_lease(session_pk, token, lease)


def release(session_pk: int, token: str, delay: float | None) -> float | None:
    """Give the session back; the answer is when its next step runs (0.0 when it was woken meanwhile).

    Each release starts a new chain token (`wake_token`), so only the task enqueued after it runs.
    """
    now = timezone.now()
    ours = Session.objects.filter(pk=session_pk, lease_token=token)
    free = {"lease_token": "", "lease_until": None, "wake_token": uuid.uuid4().hex}
    if delay is not None and ours.filter(wake_pending=True).update(
        **free, wake_pending=False, next_run_at=now
    ):
        return 0.0
    next_run = now + dt.timedelta(seconds=delay) if delay is not None else None
    ours.update(**free, next_run_at=next_run)
    return delay


def wake(session_pk: int) -> str | None:
    """What the session's step waits for has happened: run it now rather than at its next poll.

    Answers a new chain token for a task to run the step with, or None when a step holds the lease
    (that step's release then runs the next one at once) or the session is not running.
    """
    token = uuid.uuid4().hex
    now = timezone.now()
    running = Session.objects.filter(pk=session_pk, status__in=ACTIVE_SESSION_STATUSES)
    woken = running.filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now)).update(
        wake_token=token, next_run_at=now
    )
    if woken:
        return token
    running.update(wake_pending=True)
    return None


def step_and_wake_token(session_pk: int) -> tuple[str, str] | None:
    """The step the session is at and its current chain token, in one read."""
    return Session.objects.filter(pk=session_pk).values_list("step", "wake_token").first()


def sessions_needing_a_step(grace: dt.timedelta = dt.timedelta(seconds=5)) -> list[int]:
    """Running sessions whose next step is overdue and unclaimed (its task was lost)."""
    now = timezone.now()
    return list(
        Session.objects.filter(status__in=ACTIVE_SESSION_STATUSES)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .filter(Q(next_run_at__isnull=True) | Q(next_run_at__lt=now - grace))
        .values_list("pk", flat=True)
    )
