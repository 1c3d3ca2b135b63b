"""Celery tasks that run a session's steps: thin wrappers that load by id and call the orchestration.

A session's steps run in two tasks whose time limits fit the leases they hold, so no global limit
stops a step while its lease says it is still working: the short steps, and the reduce.

They sit below the services, which enqueue the first step when a start commits; the worker finds
them through apps/sessions/tasks.py.
"""

from celery import shared_task
from celery.utils.log import get_task_logger

from apps.sessions import leases, orchestration, records
from apps.sessions.choices import SessionStep

logger = get_task_logger(__name__)

STEP_TIME_LIMIT = int(leases.LEASE.total_seconds())
REDUCE_TIME_LIMIT = int(leases.REDUCE_LEASE.total_seconds())
# The soft limit raises inside the step early enough for it to fail the session under its own lease.
SOFT_MARGIN = 10


def enqueue_step(session_pk: int, delay: float | None) -> None:
    """The next step of a session in the task made for it (the reduce has its own)."""
    if delay is None:
        return
    task = session_reduce if leases.session_step(session_pk) == SessionStep.REDUCING else session_advance
    task.apply_async((session_pk,), countdown=delay)


@shared_task(
    name="fl_sessions.session_advance",
    acks_late=True,
    ignore_result=True,
    soft_time_limit=STEP_TIME_LIMIT - SOFT_MARGIN,
    time_limit=STEP_TIME_LIMIT,
)
def session_advance(session_pk: int) -> None:
    """One short step of a running session; enqueues the next while the session has steps left."""
    enqueue_step(session_pk, orchestration.session_advance(session_pk=session_pk, reduce_here=False))


@shared_task(
    name="fl_sessions.session_reduce",
    acks_late=True,
    ignore_result=True,
    soft_time_limit=REDUCE_TIME_LIMIT - SOFT_MARGIN,
    time_limit=REDUCE_TIME_LIMIT,
)
def session_reduce(session_pk: int) -> None:
    """Combine a round's models and commit the new global model, under the reduce's longer lease."""
    enqueue_step(session_pk, orchestration.session_advance(session_pk=session_pk, reduce_here=True))


@shared_task(name="fl_sessions.sessions_watchdog", ignore_result=True)
def sessions_watchdog() -> int:
    """Re-enqueue running sessions whose next step is overdue (e.g. the worker running it died);
    bring the federation holds back in line with the running sessions."""
    records.federation_holds_sync()
    overdue = leases.sessions_needing_a_step()
    for session_pk in overdue:
        logger.info("Resuming session %s", session_pk)
        enqueue_step(session_pk, 0.0)
    return len(overdue)
