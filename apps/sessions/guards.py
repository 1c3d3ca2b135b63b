"""Refusals that lower apps consult without importing this one (registered in apps.py)."""

from apps.sessions.choices import ACTIVE_SESSION_STATUSES
from apps.sessions.models import Session


def running_session_refusal() -> str | None:
    """The compute package and the active model may not change under a running session."""
    running = (
        Session.objects.filter(status__in=ACTIVE_SESSION_STATUSES)
        .values_list("session_id", flat=True)
        .first()
    )
    if running:
        return f"A session is running ({running}); wait until it has ended or stop it."
    return None
