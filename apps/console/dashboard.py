"""The index dashboard: the network at a glance, read from every app, and the session at work.

The index page and the panel the dashboard's script fetches while a session runs share one
context. Each part is one query however large the federation: combiners count their online
clients in a correlated subquery, events are sliced in the database, and a session's metrics take
two statements (apps/sessions/metrics.py). The console's query-count tests hold it to that.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.safestring import SafeString

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.clients.services import clients_count_online
from apps.combiners.models import Combiner
from apps.combiners.services import combiner_silence
from apps.models.services import model_get_active
from apps.packages.services import package_get_active
from apps.sessions import records
from apps.sessions.admin_display import LOG_LEVEL_TONES, SESSION_TONES
from apps.sessions.admin_overview import spread_chart
from apps.sessions.choices import ACTIVE_SESSION_STATUSES, ControllerStateValue, SessionStep
from apps.sessions.metrics import session_metrics
from apps.sessions.models import Session, Status
from controlplane.admin_charts import line_chart
from controlplane.admin_widgets import (
    MUTED,
    OK,
    WARN,
    badge,
    change_url,
    changelist_url,
    choice_badge,
    progress_bar,
)

# Seconds between the script's refreshes: quick while a session runs, slow while idle so a session
# started elsewhere still shows up.
LIVE_REFRESH_SECONDS = 3
IDLE_REFRESH_SECONDS = 15
RECENT_EVENTS = 10
LISTED_COMBINERS = 10
EVENT_TEXT_CHARS = 90
CHART_WIDTH = 560
PLANNED_AXIS_ROUNDS = 30


@dataclass(frozen=True)
class CombinerRow:
    name: str
    url: str
    online: int
    max_clients: int
    online_url: str
    presence: SafeString


@dataclass(frozen=True)
class EventRow:
    timestamp: datetime
    sender: str
    level: SafeString
    text: str
    url: str


def dashboard_context() -> dict[str, Any]:
    running = (
        Session.objects.filter(status__in=ACTIVE_SESSION_STATUSES)
        .select_related("current_round")
        .order_by("-committed_at", "-id")
        .first()
    )
    latest = running or Session.objects.order_by("-committed_at", "-id").first()
    serving = Combiner.objects.filter(clients__status=ClientStatus.ONLINE).distinct().count()
    state = records.controller_state().state
    return {
        # Idle or at work: the dashboard's question is only whether the controller is busy.
        "fp_state_badge": badge(state, MUTED if state == ControllerStateValue.IDLE else OK),
        "fp_package": package_get_active(),
        "fp_model": model_get_active(),
        "fp_clients_online": clients_count_online(),
        "fp_clients_online_url": changelist_url(Client, status__exact=ClientStatus.ONLINE),
        "fp_combiners": Combiner.objects.count(),
        "fp_combiners_serving": serving,
        "fp_combiner_rows": combiner_rows(),
        "fp_running_session": running,
        "fp_latest_session": latest,
        "fp_latest_session_badge": choice_badge(latest.status, SESSION_TONES) if latest else "",
        "fp_latest_session_progress": progress_bar(latest.rounds_completed, latest.rounds) if latest else "",
        "fp_session_doing": session_doing(running) if running else "",
        "fp_session_chart": session_chart(latest) if latest else "",
        "fp_events": recent_events(),
        "fp_events_url": changelist_url(Status),
        "fp_refreshed_at": timezone.now(),
        "fp_live_seconds": LIVE_REFRESH_SECONDS,
        "fp_idle_seconds": IDLE_REFRESH_SECONDS,
    }


def session_doing(session: Session) -> str:
    """What a running session waits on now, e.g. 'round 12: Waiting for combiner reports'."""
    step = SessionStep(session.step).label if session.step in SessionStep.values else session.step
    if session.current_round is not None and session.step != SessionStep.DONE:
        return f"round {session.current_round.number}: {step}"
    return step


def session_chart(session: Session) -> SafeString:
    """The session's main metric (accuracy first) per round: the mean over the clients that
    validated each round's model, with their spread. A short session's axis spans every round it
    asked for, so the line grows to the right as rounds finish; a long one's fits the rounds done,
    or their points would bunch at the left."""
    metrics = session_metrics(session)
    if not metrics.spreads:
        return line_chart("Validation metric", metrics.rounds, {}, width=CHART_WIDTH)
    name, spreads = next(iter(metrics.spreads.items()))
    first = metrics.rounds[0]
    planned = (first, first + session.rounds - 1) if session.rounds <= PLANNED_AXIS_ROUNDS else None
    return spread_chart(name, metrics.rounds, spreads, width=CHART_WIDTH, round_range=planned)


def combiner_rows() -> list[CombinerRow]:
    """The first combiners by name with their online clients, counted per combiner in one query."""
    online = (
        Client.objects.filter(combiner=OuterRef("pk"), status=ClientStatus.ONLINE)
        .order_by()
        .values("combiner")
        .annotate(count=Count("pk"))
        .values("count")
    )
    combiners = (
        Combiner.objects.annotate(online=Coalesce(Subquery(online), 0))
        .only("pk", "name", "max_clients", "last_report_at")
        .order_by("name")[:LISTED_COMBINERS]
    )
    silent_before = timezone.now() - combiner_silence()
    rows = []
    for combiner in combiners:
        reported = combiner.last_report_at
        if reported is None:
            presence = badge("no report yet", MUTED)
        elif reported < silent_before:
            presence = badge("silent", WARN)
        else:
            presence = badge("reporting", OK)
        rows.append(
            CombinerRow(
                name=combiner.name,
                url=change_url(combiner),
                online=combiner.online,  # type: ignore[attr-defined]  # the annotation
                max_clients=combiner.max_clients,
                online_url=changelist_url(
                    Client, combiner__id__exact=combiner.pk, status__exact=ClientStatus.ONLINE
                ),
                presence=presence,
            )
        )
    return rows


def recent_events() -> list[EventRow]:
    """The last statuses any combiner or client sent, newest first (the (timestamp, id) index)."""
    statuses = Status.objects.order_by("-timestamp", "-id").only(
        "pk", "timestamp", "sender_name", "log_level", "status"
    )[:RECENT_EVENTS]
    return [
        EventRow(
            timestamp=status.timestamp,
            sender=status.sender_name or "-",
            level=choice_badge(status.log_level, LOG_LEVEL_TONES),
            text=shortened(status.status),
            url=change_url(status),
        )
        for status in statuses
    ]


def shortened(text: str, limit: int = EVENT_TEXT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
