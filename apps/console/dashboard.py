"""The index dashboard: the network at a glance, read from every app."""

from typing import Any

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.clients.services import clients_count_online
from apps.combiners.models import Combiner
from apps.models.services import model_get_active
from apps.packages.services import package_get_active
from apps.sessions import records
from apps.sessions.admin_display import SESSION_TONES
from apps.sessions.choices import ACTIVE_SESSION_STATUSES, ControllerStateValue
from apps.sessions.models import Session
from controlplane.admin_widgets import MUTED, OK, badge, changelist_url, choice_badge, progress_bar


def dashboard_context() -> dict[str, Any]:
    running = Session.objects.filter(status__in=ACTIVE_SESSION_STATUSES).order_by("-committed_at").first()
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
        "fp_running_session": running,
        "fp_latest_session": latest,
        "fp_latest_session_badge": choice_badge(latest.status, SESSION_TONES) if latest else "",
        "fp_latest_session_progress": progress_bar(latest.rounds_completed, latest.rounds) if latest else "",
    }
