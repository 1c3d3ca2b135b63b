"""Celery tasks of the sessions app, the module the worker discovers.

The tasks that run a session's steps live in apps/sessions/steps.py, below the services that start
sessions (a start enqueues the first step); they are named here so the worker registers them with
this module. A scheduled start calls those services, so it sits above them, here.
"""

from typing import Any

from celery import shared_task

from apps.sessions.services import session_start_scheduled
from apps.sessions.steps import session_advance, session_reduce, sessions_watchdog

__all__ = ["session_advance", "session_reduce", "sessions_watchdog", "start_scheduled_session"]


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
