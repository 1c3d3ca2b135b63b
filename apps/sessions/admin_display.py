"""How the session admin shows its records: the tones of each status, links by id, session filters.

Apart from admin.py so the console's dashboard can draw a session as the session pages do.
"""

from django.urls import reverse
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from apps.sessions.choices import ControllerStateValue, LogLevel, RoundStatus, SessionStatus
from apps.sessions.models import Round, Session
from controlplane.admin_widgets import (
    BAD,
    INFO,
    MUTED,
    OK,
    WARN,
    RecentIdFilter,
    changelist_url,
    link,
    short_id,
)

SESSION_TONES = {
    SessionStatus.CREATED: MUTED,
    SessionStatus.INITIALIZED: INFO,
    SessionStatus.STARTED: INFO,
    SessionStatus.STOPPING: WARN,
    SessionStatus.FINISHED: OK,
    SessionStatus.STOPPED: MUTED,
    SessionStatus.FAILED: BAD,
}
ROUND_TONES = {
    RoundStatus.PENDING: INFO,
    RoundStatus.SUCCESS: OK,
    RoundStatus.FINISHED: OK,
    RoundStatus.STOPPED: MUTED,
    RoundStatus.FAILED: BAD,
}
LOG_LEVEL_TONES = {
    LogLevel.INFO: INFO,
    LogLevel.DEBUG: MUTED,
    LogLevel.WARNING: WARN,
    LogLevel.ERROR: BAD,
    LogLevel.AUDIT: MUTED,
}
CONTROLLER_TONES = {
    ControllerStateValue.IDLE: MUTED,
    ControllerStateValue.SETUP: INFO,
    ControllerStateValue.INSTRUCTING: INFO,
    ControllerStateValue.MONITORING: OK,
}


def model_link(model_id: str | None) -> SafeString | str:
    """A link to a model by its uuid (the Model admin searches model_id exactly)."""
    if not model_id:
        return "-"
    url = reverse("admin:mlmodels_model_changelist") + "?" + urlencode({"q": model_id})
    return link(url, short_id(model_id))


def round_took(item: Round) -> str:
    """How long a round ran, from its first start to its commit, failure or stop."""
    duration = item.duration
    return f"{duration.total_seconds():.1f} s" if duration is not None else "-"


def session_link(session_id: str | None) -> SafeString | str:
    if not session_id:
        return "-"
    return link(changelist_url(Session, session_id=session_id), session_id)


def counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class SessionIdFilter(RecentIdFilter):
    """Filter by session id (a plain id on statuses and validations); recent sessions listed."""

    title = "session"
    parameter_name = "session_id"
    field_path = "session_id"

    def recent_ids(self) -> list[str]:
        recent = Session.objects.order_by("-committed_at", "-id").values_list("session_id", flat=True)
        return list(recent[: self.recent])


class RoundSessionFilter(SessionIdFilter):
    field_path = "session__session_id"
