"""Celery tasks: thin wrappers that load by id and call the orchestration or a service."""

from typing import Any

from celery import shared_task
from celery.utils.log import get_task_logger

from apps.sessions import orchestration
from apps.sessions.services import session_start_scheduled

logger = get_task_logger(__name__)


@shared_task(name="fl_sessions.session_advance", acks_late=True, ignore_result=True)
def session_advance(session_pk: int) -> None:
    """One step of a running session; re-enqueues itself while the session has steps left."""
    delay = orchestration.session_advance(session_pk=session_pk)
    if delay is not None:
        session_advance.apply_async((session_pk,), countdown=delay)


@shared_task(name="fl_sessions.sessions_watchdog", ignore_result=True)
def sessions_watchdog() -> int:
    """Re-enqueue running sessions whose next step is overdue (e.g. the worker running it died)."""
    overdue = orchestration.sessions_needing_a_step()
    for session_pk in overdue:
        logger.info("Resuming session %s", session_pk)
        session_advance.delay(session_pk)
    return len(overdue)


@shared_task(name="fl_sessions.start_scheduled_session", bind=True, ignore_result=True)
def start_scheduled_session(self: Any, schedule_name: str | None = None, **config: Any) -> None:
    """Start a session from a beat schedule, or record why it was skipped."""
    # Beat's header is a request attribute on a worker, but stays under `headers` when run eagerly.
    headers = self.request.get("headers") or {}
    name = (
        schedule_name
        or self.request.get("periodic_task_name")
        or headers.get("periodic_task_name")
        or "schedule"
    )
    session_start_scheduled(schedule_name=name, config=config)
