"""What the controller writes about its own work: its state, its events, new rounds; and a
session's config as FEDn shows it.

The session life cycle (services.py) and the orchestration both write these, so they sit below both.
"""

import datetime as dt
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from apps.sessions.choices import ACTIVE_SESSION_STATUSES, ControllerStateValue, LogLevel, Role, StatusType
from apps.sessions.models import ControllerState, ForwardedBatch, Round, Session, Status
from controlplane.federation import federation_holds_set


class RoundNumberUnavailable(RuntimeError):
    """Concurrent writers kept taking the next round number; the step that wanted one fails."""


# ---------------------------------------------------------------- federation holds


def federation_holds_sync() -> None:
    """Hold the federation for exactly the active sessions, so their package and model stay put.

    Called where a session starts or ends, and by the watchdog, which also catches sessions
    deleted or changed behind the services' back.
    """
    active = Session.objects.filter(status__in=ACTIVE_SESSION_STATUSES).values_list("session_id", flat=True)
    federation_holds_set(active)


# ---------------------------------------------------------------- controller state


def controller_state() -> ControllerState:
    state, _ = ControllerState.objects.get_or_create(singleton=True)
    return state


def controller_state_set(value: ControllerStateValue, session: Session | None = None) -> None:
    # One UPDATE, not update_or_create's read-then-write transaction: on SQLite that upgrade fails
    # at once with "database is locked" while another process writes, whatever the busy timeout.
    changes = {"state": value, "session": session, "updated_at": timezone.now()}
    if not ControllerState.objects.filter(singleton=True).update(**changes):
        ControllerState.objects.get_or_create(singleton=True, defaults={"state": value, "session": session})


# ---------------------------------------------------------------- session config

SESSION_CONFIG_FIELDS = (
    "aggregator",
    "aggregator_kwargs",
    "round_timeout",
    "buffer_size",
    "model_id",
    "rounds",
    "delete_models_storage",
    "clients_required",
    "clients_requested",
    "validate",
    "helper_type",
    "task",
    "round_retries",
)


def session_config(session: Session) -> dict[str, Any]:
    """The session_config dict as FEDn shows it (one shape for every session)."""
    config = {field: getattr(session, field) for field in SESSION_CONFIG_FIELDS}
    config.update(session.extra_config or {})
    config["session_id"] = session.session_id
    return config


# ---------------------------------------------------------------- rounds


def round_create(*, session: Session, round_config: dict[str, Any]) -> Round:
    """A new round with the next global number (FEDn numbers rounds across sessions)."""
    for _ in range(5):
        number = (Round.objects.aggregate(top=Max("number"))["top"] or 0) + 1
        try:
            with transaction.atomic():
                return Round.objects.create(
                    number=number,
                    round_id=str(number),
                    session=session,
                    round_config={**round_config, "round_id": str(number)},
                )
        except IntegrityError:
            continue
    raise RoundNumberUnavailable("Could not allocate a round number; retry.")


def event_log(
    text: str,
    *,
    session_id: str = "",
    level: str = LogLevel.INFO,
    event_type: str = StatusType.LOG,
    sender: str = "controller",
) -> Status:
    """A status written by the controller itself."""
    return Status.objects.create(
        sender_name=sender,
        sender_role=Role.REDUCER,
        status=text,
        log_level=level,
        type=event_type,
        timestamp=timezone.now(),
        session_id=session_id,
    )


# Receipts of forwarded batches (ingestion.forwarded_batch_record) are kept this long: far past any
# combiner's retries of one batch.
BATCH_RECEIPTS_KEPT = dt.timedelta(days=1)


def forwarded_batches_prune(*, now: dt.datetime | None = None) -> int:
    """Forget batch receipts older than BATCH_RECEIPTS_KEPT."""
    cutoff = (now or timezone.now()) - BATCH_RECEIPTS_KEPT
    deleted, _ = ForwardedBatch.objects.filter(received_at__lt=cutoff).delete()
    return deleted
