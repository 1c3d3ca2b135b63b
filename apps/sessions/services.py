"""A session's life cycle: its config, creation, start and stop requests, and scheduled starts.

Running a session round by round is the job of the orchestration module; what combiners and clients
report about it is taken in by the ingestion module. This module checks FEDn's preconditions.
"""

import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.clients.services import clients_count_online
from apps.models.models import Model
from apps.models.services import model_get_active
from apps.packages.services import package_get_active
from apps.sessions import asyncsessions, privacy
from apps.sessions.choices import (
    ACTIVE_SESSION_STATUSES,
    FINAL_SESSION_STATUSES,
    LogLevel,
    SessionStatus,
)
from apps.sessions.models import ScheduledStart, Session
from apps.sessions.records import SESSION_CONFIG_FIELDS, event_log, federation_holds_sync
from apps.sessions.steps import session_advance
from controlplane.errors import DomainError


class SessionError(DomainError):
    """A request about sessions the controller refuses; the message says why."""


class PreconditionFailed(SessionError):
    """FEDn answers these with 200 and success: false."""


# ---------------------------------------------------------------- session config


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise SessionError(f"{name} must be a boolean")


def _as_int(value: Any, name: str, minimum: int | None = None) -> int:
    # FEDn's own clients send whole numbers as floats (e.g. round_timeout=60.0).
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SessionError(f"{name} must be an integer")
    if minimum is not None and value < minimum:
        raise SessionError(f"{name} must be at least {minimum}")
    return value


def _as_str(value: Any, name: str, allow_empty: bool = True) -> str:
    if not isinstance(value, str) or (not allow_empty and not value):
        raise SessionError(f"{name} must be a{' non-empty' if not allow_empty else ''} string")
    return value


def clean_session_config(config: dict[str, Any]) -> dict[str, Any]:
    """Typed session fields from a FEDn session_config dict; unknown keys go to extra_config."""
    from fedplane.aggregators import AGGREGATOR_NAMES

    cleaned: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in config.items():
        if key in {
            "session_id",
            "committed_at",
            privacy.DP_KEY,
            asyncsessions.MODE_KEY,
            asyncsessions.FEDBUFF_KEY,
        }:
            continue
        if key not in SESSION_CONFIG_FIELDS:
            extra[key] = value
            continue
        name = f"session_config.{key}"
        if key == "aggregator":
            value = _as_str(value, name, allow_empty=False)
            if value not in AGGREGATOR_NAMES:
                raise SessionError(f"{name} must be one of {', '.join(AGGREGATOR_NAMES)}")
        elif key == "aggregator_kwargs":
            if value is not None and not isinstance(value, dict):
                raise SessionError(f"{name} must be an object or null")
        elif key in {"round_timeout", "rounds", "clients_requested"}:
            value = _as_int(value, name, minimum=1)
        elif key in {"clients_required", "round_retries"}:
            value = _as_int(value, name, minimum=0)
        elif key == "buffer_size":
            value = _as_int(value, name, minimum=-1)
            if value == 0:
                raise SessionError(f"{name} must be -1 (all selected clients) or positive")
        elif key in {"delete_models_storage", "validate"}:
            value = _as_bool(value, name)
        elif key == "model_id":
            if value is not None:
                value = _as_str(value, name, allow_empty=False)
                if Model.objects.find(value) is None:
                    raise SessionError(f"{name}: model {value} not found")
        elif key in {"helper_type", "task"}:
            value = _as_str(value, name)
        cleaned[key] = value
    try:
        extra.update(
            asyncsessions.async_config_clean(
                config,
                buffer_size=cleaned.get("buffer_size", -1),
                aggregator=cleaned.get("aggregator", "fedavg"),
                aggregator_kwargs=cleaned.get("aggregator_kwargs"),
            )
        )
    except asyncsessions.AsyncConfigError as exc:
        raise SessionError(str(exc)) from exc
    if config.get(privacy.DP_KEY) is not None:
        # The expected number of updates in a release: a round's clients, or a version's K.
        expected = (
            extra[asyncsessions.FEDBUFF_KEY]["buffer_size"]
            if asyncsessions.FEDBUFF_KEY in extra
            else cleaned.get("clients_requested", Session._meta.get_field("clients_requested").get_default())
        )
        try:
            extra[privacy.DP_KEY] = privacy.dp_config_clean(
                config[privacy.DP_KEY],
                rounds=cleaned.get("rounds", Session._meta.get_field("rounds").get_default()),
                clients_requested=expected,
                aggregator=cleaned.get("aggregator", "fedavg"),
                aggregator_kwargs=cleaned.get("aggregator_kwargs"),
            )
        except privacy.DpConfigError as exc:
            raise SessionError(str(exc)) from exc
    cleaned["extra_config"] = extra
    return cleaned


@transaction.atomic
def session_create(
    *, session_id: str | None, config: dict[str, Any], status: str = SessionStatus.CREATED
) -> Session:
    if session_id is not None and (
        not isinstance(session_id, str) or not session_id or len(session_id) > 128
    ):
        raise SessionError("session_id must be a non-empty string of at most 128 characters")
    session_id = session_id or str(uuid.uuid4())
    if Session.objects.filter(session_id=session_id).exists():
        raise SessionError(f"Session {session_id} already exists.")
    fields = clean_session_config(config)
    try:
        with transaction.atomic():
            return Session.objects.create(session_id=session_id, status=status, **fields)
    except IntegrityError as exc:
        raise SessionError(f"Session {session_id} already exists.") from exc


# ---------------------------------------------------------------- start / stop

LEGACY_START_KEYS = {
    "session_id",
    "aggregator",
    "aggregator_kwargs",
    "model_id",
    "rounds",
    "round_timeout",
    "round_buffer_size",
    "delete_models",
    "validate",
    "helper",
    "min_clients",
    "requested_clients",
    # fedplane's own: how often a round that lost its combiners is retried.
    "round_retries",
    # fedplane's own: central differential privacy (apps/sessions/privacy.py).
    "dp",
    # fedplane's own: asynchronous buffered sessions (apps/sessions/asyncsessions.py).
    "mode",
    "fedbuff",
}


def check_start_preconditions(*, min_clients: int) -> None:
    """FEDn's checks before a session may start, in FEDn's order."""
    if Session.objects.filter(status__in=ACTIVE_SESSION_STATUSES).exists():
        raise PreconditionFailed("A session is already running.")
    if package_get_active() is None:
        raise PreconditionFailed("No compute package active. Set compute package with /set_package.")
    if model_get_active() is None:
        raise PreconditionFailed("No initial model set. Set initial model with /set_initial_model.")
    if clients_count_online() < min_clients:
        raise PreconditionFailed("Not enough clients available to start session.")


def legacy_session_config(body: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Map FEDn's start_session keyword arguments onto a session_config."""
    unknown = sorted(set(body) - LEGACY_START_KEYS)
    if unknown:
        raise SessionError(f"Unknown start_session keys: {', '.join(unknown)}")
    session_id = body.get("session_id")
    config = {
        "aggregator": body.get("aggregator", "fedavg"),
        "aggregator_kwargs": body.get("aggregator_kwargs"),
        "model_id": body.get("model_id"),
        "rounds": body.get("rounds", 5),
        "round_timeout": body.get("round_timeout", 180),
        "buffer_size": body.get("round_buffer_size", -1),
        "delete_models_storage": body.get("delete_models", True),
        "validate": body.get("validate", True),
        "helper_type": body.get("helper", "numpyhelper"),
        "clients_required": body.get("min_clients", 1),
        "clients_requested": body.get("requested_clients", 8),
        "task": "",
    }
    if "round_retries" in body:
        config["round_retries"] = body["round_retries"]
    for key in ("dp", "mode", "fedbuff"):
        if body.get(key) is not None:
            config[key] = body[key]
    if config["helper_type"] in (None, ""):
        active = package_get_active()
        config["helper_type"] = active.helper if active else "numpyhelper"
    return session_id, config


def session_start_legacy(body: dict[str, Any]) -> Session:
    """FEDn's /start_session: create the session and start it, or refuse with the reason."""
    session_id, config = legacy_session_config(body)
    if session_id is not None and Session.objects.filter(session_id=session_id).exists():
        raise PreconditionFailed("Session already exists.")
    clean_session_config(config)
    check_start_preconditions(min_clients=config["clients_required"])
    with transaction.atomic():
        session = session_create(session_id=session_id, config=config, status=SessionStatus.CREATED)
        return session_start(session=session, rounds=session.rounds)


def session_start(*, session: Session, rounds: int | None = None) -> Session:
    """Request that a created session runs; the orchestration takes it from there."""
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session.pk)
        if session.status != SessionStatus.CREATED:
            raise PreconditionFailed(
                f"Session {session.session_id} is {session.status}; only a Created session can start."
            )
        if rounds is not None:
            session.rounds = _as_int(rounds, "rounds", minimum=1)
        check_start_preconditions(min_clients=session.clients_required)
        if session.model_id is None:
            active = model_get_active()
            session.model_id = str(active.model_id) if active else None
        session.status = SessionStatus.INITIALIZED
        session.start_requested_at = timezone.now()
        session.save(update_fields=["rounds", "model_id", "status", "start_requested_at"])
        federation_holds_sync()
        # The workers take it from here, once the start is committed and visible to them.
        session_advance.delay_on_commit(session.pk)
    return session


def session_stop(*, session: Session) -> Session:
    """Ask a running session to stop after its current step; a session not yet running stops now."""
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session.pk)
        if session.status in FINAL_SESSION_STATUSES:
            raise SessionError(f"Session {session.session_id} has already ended ({session.status}).")
        session.stop_requested = True
        if session.status in (SessionStatus.CREATED, SessionStatus.INITIALIZED):
            session.status = SessionStatus.STOPPED
            session.status_reason = "stopped before it started"
            session.finished_at = timezone.now()
        else:
            session.status = SessionStatus.STOPPING
        session.save(update_fields=["stop_requested", "status", "status_reason", "finished_at"])
        federation_holds_sync()
    return session


# ---------------------------------------------------------------- scheduled starts


def session_start_scheduled(*, schedule_name: str, config: dict[str, Any]) -> ScheduledStart:
    """What a beat schedule does when it fires: start a session, or record it skipped with the reason."""
    # A short random tail: two firings in one second (e.g. a manual run) must not share an id.
    body = {"session_id": f"{schedule_name}-{timezone.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}", **config}
    try:
        session = session_start_legacy(body)
    except SessionError as exc:
        event_log(f"Schedule {schedule_name} skipped: {exc}", level=LogLevel.WARNING)
        return ScheduledStart.objects.create(schedule_name=schedule_name, outcome="skipped", reason=str(exc))
    event_log(
        f"Schedule {schedule_name} started session {session.session_id}.", session_id=session.session_id
    )
    return ScheduledStart.objects.create(schedule_name=schedule_name, outcome="started", session=session)
