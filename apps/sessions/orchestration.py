"""Running a session: a state machine in the database, advanced by short idempotent steps.

`session_advance` claims the session with a conditional UPDATE (a lease), does one bounded step
and says when it wants to run again. Nothing here blocks on a combiner beyond a gRPC deadline, and
every wait has a deadline, so a session always ends Finished, Stopped or Failed with its reason.
A worker that dies mid-step leaves a lease that expires; the watchdog then re-enqueues the step,
which resumes from what the database says, so no round is repeated or skipped.
"""

import contextlib
import datetime as dt
import logging
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.combiners.grpc_client import CombinerClient, CombinerError
from apps.combiners.models import Combiner
from apps.models.models import Model, artifact_key
from apps.models.services import model_commit, model_find, model_get_active
from apps.sessions.choices import ControllerStateValue, LogLevel, RoundStatus, SessionStatus, SessionStep
from apps.sessions.models import Round, Session, Validation
from apps.sessions.services import (
    controller_state_set,
    event_log,
    round_create,
    session_config,
)
from controlplane import artifacts
from fedplane.aggregators import weighted_average_files
from fedplane.numpyhelper import sha256_of

logger = logging.getLogger(__name__)

RUNNING_STATUSES = (SessionStatus.INITIALIZED, SessionStatus.STARTED, SessionStatus.STOPPING)
# A step finishes well within this; a dead worker's claim lapses after it.
LEASE = dt.timedelta(seconds=30)
# Reducing large models may take longer than a normal step.
REDUCE_LEASE = dt.timedelta(minutes=10)
# Combiners report after round_timeout; give them this long on top before giving up on them.
REPORT_MARGIN = dt.timedelta(seconds=30)
VALIDATION_WAIT = dt.timedelta(seconds=60)
POLL_SECONDS = 1.0
GRPC_TIMEOUT = 5.0


class RoundFailed(Exception):
    """The current round cannot succeed; the message is the reason shown to operators."""


def combiner_client(combiner: Combiner) -> CombinerClient:
    return CombinerClient(
        combiner.address,
        combiner.port,
        token=settings.FEDPLANE_CONTROL_TOKEN or None,
        secure=combiner.secure_grpc,
        root_cert=combiner.certificate.encode() if combiner.certificate else None,
        timeout=GRPC_TIMEOUT,
    )


# ---------------------------------------------------------------- claiming


def claim(session_pk: int, lease: dt.timedelta = LEASE) -> str | None:
    """Take the session for one step; None when another worker holds it or it is not running."""
    token = uuid.uuid4().hex
    now = timezone.now()
    claimed = (
        Session.objects.filter(pk=session_pk, status__in=RUNNING_STATUSES)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_token=token, lease_until=now + lease)
    )
    return token if claimed else None


def extend_lease(session_pk: int, token: str, lease: dt.timedelta) -> None:
    Session.objects.filter(pk=session_pk, lease_token=token).update(lease_until=timezone.now() + lease)


def release(session_pk: int, token: str, delay: float | None) -> None:
    next_run = timezone.now() + dt.timedelta(seconds=delay) if delay is not None else None
    Session.objects.filter(pk=session_pk, lease_token=token).update(
        lease_token="", lease_until=None, next_run_at=next_run
    )


def session_advance(*, session_pk: int) -> float | None:
    """Run one step of a session. Returns seconds until the next step, or None when there is none."""
    token = claim(session_pk)
    if token is None:
        return None
    delay: float | None = None
    try:
        session = Session.objects.get(pk=session_pk)
        delay = run_step(session, token)
    except Exception as exc:  # a step's failure must end the session visibly, never silently
        logger.exception("Session %s failed", session_pk)
        session_fail(Session.objects.get(pk=session_pk), f"{type(exc).__name__}: {exc}")
        delay = None
    finally:
        release(session_pk, token, delay)
    return delay


def sessions_needing_a_step(grace: dt.timedelta = dt.timedelta(seconds=5)) -> list[int]:
    """Running sessions whose next step is overdue and unclaimed (its task was lost)."""
    now = timezone.now()
    return list(
        Session.objects.filter(status__in=RUNNING_STATUSES)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .filter(Q(next_run_at__isnull=True) | Q(next_run_at__lt=now - grace))
        .values_list("pk", flat=True)
    )


# ---------------------------------------------------------------- steps


def run_step(session: Session, token: str) -> float | None:
    if session.stop_requested or session.status == SessionStatus.STOPPING:
        session_stop_now(session)
        return None
    if session.status == SessionStatus.INITIALIZED:
        return step_begin(session)
    step = {
        SessionStep.NEXT_ROUND: step_next_round,
        SessionStep.STARTING: step_starting,
        SessionStep.TRAINING: lambda s: step_training(s, token),
        SessionStep.VALIDATING: step_validating,
    }.get(session.step)
    if step is None:
        raise RuntimeError(f"session is at unknown step {session.step!r}")
    return step(session)


def step_begin(session: Session) -> float:
    now = timezone.now()
    session.status = SessionStatus.STARTED
    session.started_at = session.started_at or now
    session.step = SessionStep.NEXT_ROUND
    session.step_deadline = now + dt.timedelta(seconds=session.round_timeout)
    session.save(update_fields=["status", "started_at", "step", "step_deadline"])
    controller_state_set(ControllerStateValue.INSTRUCTING, session)
    event_log(
        f"Session {session.session_id} started: {session.rounds} rounds, {session.aggregator}.",
        session_id=session.session_id,
    )
    return 0.0


def online_clients(combiner: Combiner) -> int | None:
    try:
        return len(combiner_client(combiner).list_active_clients())
    except CombinerError as exc:
        logger.warning("Combiner %s unreachable: %s", combiner.name, exc)
        return None


def step_next_round(session: Session) -> float | None:
    if session.rounds_completed >= session.rounds:
        session_finish(session)
        return None
    required = max(session.clients_required, 1)
    participants = [c for c in Combiner.objects.order_by("name") if (online_clients(c) or 0) >= required]
    if not participants:
        if session.step_deadline and timezone.now() > session.step_deadline:
            session_fail(
                session, f"No combiner had {required} online client(s) within {session.round_timeout} s."
            )
            return None
        return POLL_SECONDS * 2
    model = model_find(session_current_model_id(session) or "")
    if model is None:
        session_fail(session, "The session's model no longer exists.")
        return None
    config = {
        **session_config(session),
        "rounds": 1,
        "task": "training",
        "model_id": str(model.model_id),
        "session_id": session.session_id,
    }
    with transaction.atomic():
        new_round = round_create(session=session, round_config=config)
        new_round.round_data = {"participants": [c.name for c in participants]}
        new_round.save(update_fields=["round_data"])
        session.current_round = new_round
        session.step = SessionStep.STARTING
        session.step_deadline = timezone.now() + dt.timedelta(seconds=session.round_timeout) + REPORT_MARGIN
        session.save(update_fields=["current_round", "step", "step_deadline"])
    return 0.0


def session_current_model_id(session: Session) -> str | None:
    last = (
        session.round_set.filter(status__in=[RoundStatus.SUCCESS, RoundStatus.FINISHED])
        .order_by("-number")
        .first()
    )
    if last is not None and last.model_id:
        return last.model_id
    return session.model_id


def step_starting(session: Session) -> float:
    current = session.current_round
    if current is None:
        raise RuntimeError("no current round to start")
    names = current.round_data.get("participants", [])
    started, failed = [], []
    for combiner in Combiner.objects.filter(name__in=names).order_by("name"):
        try:
            combiner_client(combiner).start(current.round_config)
            started.append(combiner.name)
        except CombinerError as exc:
            failed.append(f"{combiner.name}: {exc}")
    current.round_data = {**current.round_data, "participants": started, "start_failures": failed}
    current.save(update_fields=["round_data"])
    if not started:
        fail_round(session, current, "No combiner accepted the round: " + "; ".join(failed))
        return 0.0
    event_log(
        f"Round {current.round_id} sent to {', '.join(started)}.",
        session_id=session.session_id,
        level=LogLevel.WARNING if failed else LogLevel.INFO,
    )
    session.step = SessionStep.TRAINING
    session.save(update_fields=["step"])
    controller_state_set(ControllerStateValue.MONITORING, session)
    return POLL_SECONDS


def step_training(session: Session, token: str) -> float | None:
    current = session.current_round
    if current is None:
        raise RuntimeError("no current round to wait for")
    expected = set(current.round_data.get("participants", []))
    reports = list(current.reports.all())
    reported = {r.combiner for r in reports}
    if not expected <= reported and timezone.now() < (session.step_deadline or timezone.now()):
        return POLL_SECONDS
    missing = sorted(expected - reported)
    usable = [r for r in reports if r.status == "Success" and r.model_id and r.num_examples > 0]
    if not usable:
        reasons = [f"{r.combiner}: {r.report.get('reason') or r.status}" for r in reports]
        reasons += [f"{name}: no report before the deadline" for name in missing]
        fail_round(session, current, "No combiner produced a model. " + "; ".join(reasons))
        return 0.0
    extend_lease(session.pk, token, REDUCE_LEASE)
    new_model = reduce_and_commit(session, current, usable)
    with transaction.atomic():
        current.status = RoundStatus.SUCCESS if session.validate else RoundStatus.FINISHED
        current.model_id = str(new_model.model_id)
        if missing:
            current.status_reason = "No report from: " + ", ".join(missing)
        current.save(update_fields=["status", "model_id", "status_reason", "round_data"])
        session.rounds_completed += 1
        session.step = SessionStep.VALIDATING if session.validate else SessionStep.NEXT_ROUND
        session.step_deadline = timezone.now() + min(
            VALIDATION_WAIT, dt.timedelta(seconds=session.round_timeout)
        )
        session.save(update_fields=["rounds_completed", "step", "step_deadline"])
    event_log(
        f"Round {current.round_id} committed model {new_model.model_id} from {len(usable)} combiner(s).",
        session_id=session.session_id,
    )
    if session.delete_models_storage:
        for report in usable:
            if report.model_id != str(new_model.model_id):
                artifacts.delete(artifact_key(report.model_id))
    if session.validate:
        send_validation(session, current, new_model, [r.combiner for r in usable])
    return 0.0


def reduce_and_commit(session: Session, current: Round, reports: list[Any]) -> Model:
    """Combine the combiners' models weighted by their examples and commit the new global model."""
    parent = model_find(current.round_config.get("model_id", "")) or model_get_active()
    started = timezone.now()
    if len(reports) == 1:
        # One combiner: its model is the new global model; adopt the artifact as it is.
        model_id = uuid.UUID(reports[0].model_id)
        key = artifact_key(model_id)
        size, sha256 = artifacts.digest(key)
    else:
        model_id = uuid.uuid4()
        key = artifact_key(model_id)
        with tempfile.TemporaryDirectory(prefix="fedplane-reduce-") as workdir:
            inputs = []
            for report in reports:
                local = Path(workdir) / f"{report.model_id}.npz"
                artifacts.download(artifact_key(report.model_id), local)
                inputs.append((local, report.num_examples))
            combined = Path(workdir) / "combined.npz"
            weighted_average_files(inputs, combined)
            # Hash the local file: reading the stored copy back would move the model twice.
            size, sha256 = combined.stat().st_size, sha256_of(combined)
            artifacts.save(key, combined)
    current.round_data = {
        **current.round_data,
        "reduce": {
            "time_aggregate_model": (timezone.now() - started).total_seconds(),
            "nr_combiners": len(reports),
        },
        "num_examples": sum(r.num_examples for r in reports),
        "participants_clients": sorted({p for r in reports for p in r.report.get("participants", [])}),
    }
    commit_started = timezone.now()
    model = model_commit(
        model_id=model_id, key=key, size=size, sha256=sha256, session_id=session.session_id, parent=parent
    )
    current.round_data["time_commit"] = (timezone.now() - commit_started).total_seconds()
    return model


def send_validation(session: Session, current: Round, model: Model, combiner_names: Iterable[str]) -> None:
    config = {**current.round_config, "task": "validation", "model_id": str(model.model_id)}
    sent = []
    for combiner in Combiner.objects.filter(name__in=list(combiner_names)):
        try:
            combiner_client(combiner).start(config)
            sent.append(combiner.name)
        except CombinerError as exc:
            event_log(
                f"Validation of round {current.round_id} not sent to {combiner.name}: {exc}",
                session_id=session.session_id,
                level=LogLevel.WARNING,
            )
    expected = len(current.round_data.get("participants_clients", [])) if sent else 0
    current.round_data = {**current.round_data, "validation": {"combiners": sent, "expected": expected}}
    current.save(update_fields=["round_data"])


def step_validating(session: Session) -> float:
    current = session.current_round
    if current is None:
        raise RuntimeError("no current round to validate")
    expected = current.round_data.get("validation", {}).get("expected", 0)
    received = Validation.objects.filter(model_id=current.model_id).count()
    if received < expected and timezone.now() < (session.step_deadline or timezone.now()):
        return POLL_SECONDS
    if current.status == RoundStatus.SUCCESS:
        current.status = RoundStatus.FINISHED
        current.save(update_fields=["status"])
    session.step = SessionStep.NEXT_ROUND
    session.step_deadline = timezone.now() + dt.timedelta(seconds=session.round_timeout)
    session.save(update_fields=["step", "step_deadline"])
    controller_state_set(ControllerStateValue.INSTRUCTING, session)
    return 0.0


# ---------------------------------------------------------------- endings


def fail_round(session: Session, current: Round, reason: str) -> None:
    current.status = RoundStatus.FAILED
    current.status_reason = reason
    current.save(update_fields=["status", "status_reason", "round_data"])
    session_fail(session, f"Round {current.round_id} failed: {reason}")


def _end(session: Session, status: str, reason: str, level: str) -> None:
    Session.objects.filter(pk=session.pk).update(
        status=status,
        status_reason=reason,
        step=SessionStep.DONE,
        finished_at=timezone.now(),
        next_run_at=None,
    )
    controller_state_set(ControllerStateValue.IDLE, None)
    event_log(
        f"Session {session.session_id} {status.lower()}. {reason}".strip(),
        session_id=session.session_id,
        level=level,
    )


def session_finish(session: Session) -> None:
    _end(session, SessionStatus.FINISHED, f"{session.rounds_completed} round(s) completed.", LogLevel.INFO)


def session_fail(session: Session, reason: str) -> None:
    if session.current_round_id:
        Round.objects.filter(pk=session.current_round_id, status=RoundStatus.PENDING).update(
            status=RoundStatus.FAILED, status_reason=reason
        )
    _end(session, SessionStatus.FAILED, reason, LogLevel.ERROR)


def session_stop_now(session: Session) -> None:
    current = session.current_round
    participants: list[str] = []
    if current is not None and current.status == RoundStatus.PENDING:
        participants = current.round_data.get("participants", [])
        # Close the round first, so the "stopped" reports the combiners send back are refused.
        Round.objects.filter(pk=current.pk).update(
            status=RoundStatus.STOPPED, status_reason="session stopped"
        )
    _end(session, SessionStatus.STOPPED, "Stopped on request.", LogLevel.INFO)
    for combiner in Combiner.objects.filter(name__in=participants):
        with contextlib.suppress(CombinerError):
            combiner_client(combiner).stop()
