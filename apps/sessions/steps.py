"""Celery tasks that run a session's steps: thin wrappers that load by id and call the orchestration.

A session's steps run in two tasks whose time limits fit the leases they hold, so no global limit
stops a step while its lease says it is still working: the short steps, and the reduce. A task
runs the steps that follow at once itself (run_steps) rather than through the broker.

They sit below the services, which enqueue the first step when a start commits; the worker finds
them through apps/sessions/tasks.py.
"""

import time

from celery import shared_task
from celery.utils.log import get_task_logger
from django.conf import settings

from apps.sessions import leases, orchestration, records
from apps.sessions.choices import SessionStep
from apps.sessions.models import Session, Validation

logger = get_task_logger(__name__)

STEP_TIME_LIMIT = int(leases.LEASE.total_seconds())
REDUCE_TIME_LIMIT = int(leases.REDUCE_LEASE.total_seconds())
# The soft limit raises inside the step early enough for it to fail the session under its own lease.
SOFT_MARGIN = 10
# A step that says "the next one at once" is followed in the same task, not through the broker
# (each hop costs a round trip, a claim, a release and a read of the chain token): at most this
# many steps, and only while the task has run for less than INLINE_SECONDS, so a step begun
# inline still ends well within the task's soft limit (a step is bounded by one gRPC deadline).
INLINE_STEPS = 6
INLINE_SECONDS = 3.0


def enqueue_step(
    session_pk: int, delay: float | None, wake: str | None = None, *, reduce_task: bool = False
) -> None:
    """The next step of a session in the task made for it (the reduce has its own), carrying the
    session's chain token so a duplicate of the chain finds itself stale and stops. `reduce_task`
    sends it to the reduce's task whatever the step (a stored report: the training step, then
    the reduce it leads to, run in one task)."""
    if delay is None:
        return
    step, current_token = leases.step_and_wake_token(session_pk) or ("", None)
    task = session_reduce if reduce_task or step == SessionStep.REDUCING else session_advance
    task.apply_async((session_pk,), {"wake": wake or current_token}, countdown=delay)


def run_steps(session_pk: int, wake: str | None, *, reduce_here: bool) -> None:
    """Run the session's step, the steps that follow at once (INLINE_STEPS), then enqueue the next.

    Each step claims the session with the chain token its predecessor left, as a task enqueued
    for it would: a wake meanwhile starts a new chain, and this one stops. The short task hands a
    reduce to the reduce's task. The reduce's task goes on into the short steps after a reduce
    that left time (a short step's lease, not the task's limit, guards what it does: its outward
    calls are read-only probes, or Start calls made under a lease renewed to outlast their deadline).
    """
    started = time.monotonic()
    delay = orchestration.session_advance(session_pk=session_pk, reduce_here=reduce_here, wake=wake)
    for _ in range(INLINE_STEPS):
        if delay != 0.0 or time.monotonic() - started > INLINE_SECONDS:
            break
        step, token = leases.step_and_wake_token(session_pk) or ("", None)
        if not token or (step == SessionStep.REDUCING and not reduce_here):
            break
        delay = orchestration.session_advance(session_pk=session_pk, reduce_here=reduce_here, wake=token)
    enqueue_step(session_pk, delay)


def wake_session(session_pk: int, *, reduce_task: bool = False) -> None:
    """Run the session's waiting step now: what it waits for (a report, the validations) is stored."""
    token = leases.wake(session_pk)
    if token is not None:
        enqueue_step(session_pk, 0.0, token, reduce_task=reduce_task)


def wake_on_report(round_pk: int) -> None:
    """A combiner's report is stored: its session's training step can look at once."""
    if not settings.FEDPLANE_WAKE_STEPS:
        return
    session_pk = (
        Session.objects.filter(current_round_id=round_pk, step=SessionStep.TRAINING)
        .values_list("pk", flat=True)
        .first()
    )
    if session_pk is not None:
        # When it was the last report, the training step leads to the reduce: one task runs both.
        wake_session(session_pk, reduce_task=True)


def wake_on_validations(model_ids: set[str]) -> None:
    """Validations are stored: a session waiting for those of its new model goes on once all are in."""
    if not settings.FEDPLANE_WAKE_STEPS:
        return
    waiting = Session.objects.filter(
        step=SessionStep.VALIDATING, current_round__model_id__in=model_ids
    ).values_list("pk", "current_round__model_id", "current_round__round_data")
    for session_pk, model_id, round_data in waiting:
        expected = (round_data or {}).get("validation", {}).get("expected", 0)
        if Validation.objects.filter(model_id=model_id).count() >= expected:
            wake_session(session_pk)


@shared_task(
    name="fl_sessions.session_advance",
    acks_late=True,
    ignore_result=True,
    soft_time_limit=STEP_TIME_LIMIT - SOFT_MARGIN,
    time_limit=STEP_TIME_LIMIT,
)
def session_advance(session_pk: int, wake: str | None = None) -> None:
    """The short steps of a running session; enqueues the next while the session has steps left."""
    run_steps(session_pk, wake, reduce_here=False)


@shared_task(
    name="fl_sessions.session_reduce",
    acks_late=True,
    ignore_result=True,
    soft_time_limit=REDUCE_TIME_LIMIT - SOFT_MARGIN,
    time_limit=REDUCE_TIME_LIMIT,
)
def session_reduce(session_pk: int, wake: str | None = None) -> None:
    """Combine a round's models and commit the new global model, under the reduce's longer lease."""
    run_steps(session_pk, wake, reduce_here=True)


@shared_task(name="fl_sessions.sessions_watchdog", ignore_result=True)
def sessions_watchdog() -> int:
    """Re-enqueue running sessions whose next step is overdue (e.g. the worker running it died);
    bring the federation holds back in line with the running sessions."""
    records.federation_holds_sync()
    records.forwarded_batches_prune()
    overdue = leases.sessions_needing_a_step()
    for session_pk in overdue:
        logger.info("Resuming session %s", session_pk)
        # A new chain token: a task of the old chain that turns up late finds itself stale.
        wake_session(session_pk)
    return len(overdue)
