"""Running a session: a state machine in the database, advanced by short idempotent steps.

`session_advance` claims the session with a conditional UPDATE (a lease token), does one bounded
step and says when it wants to run again. Nothing here blocks on a combiner beyond one gRPC
deadline, and every wait has a deadline, so a session always ends Finished, Stopped or Failed with
its reason. A worker that dies mid-step leaves a lease that expires; the watchdog then re-enqueues
the step, which resumes from what the database says, so no round is repeated or skipped.

Fencing: every database write of a step happens inside `fenced()` (apps/sessions/leases.py).

The order of a round, so that no side effect outside the database escapes the fence:

1. `next_round`: probe the combiners (read only, in parallel under one deadline), then create the
   Round row and move to `starting` in one fenced transaction. No combiner has heard of the round.
2. `starting`: renew the lease (a fenced check) so it outlives one gRPC deadline, then send
   Control.Start to the chosen combiners in parallel, then record who accepted (fenced). The Start
   calls are the only effect a lost lease could repeat, and the renewed lease covers their deadline.
3. `training`: read the reports; probe combiners that have not reported (a combiner that cannot be
   reached has lost its part of the round). When every combiner reported or was lost, or the
   deadline passed: enough updates go to `reducing`; too few retry the round (same number, fresh
   deadline, `round_retries` times) or, with no retries left, fail it.
4. `reducing` runs in its own Celery task whose time limits fit its longer lease: it writes the
   combined artifact (an orphan at worst if the lease is lost), then commits the Model row, the
   round and the session's next step in one fenced transaction. Artifacts are deleted and
   validation requests sent only after that commit: the last round's at once; an earlier round's
   by the next round's `starting`, just before its training Start (see `send_pending_validation`).
"""

import datetime as dt
import logging
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.utils import timezone

from apps.combiners.grpc_client import CombinerCallFailed, CombinerUnreachable
from apps.combiners.models import Combiner
from apps.models.models import Model, artifact_key
from apps.models.services import model_commit, model_get_active
from apps.sessions import privacy
from apps.sessions.choices import (
    ControllerStateValue,
    LogLevel,
    RoundStatus,
    SessionStatus,
    SessionStep,
)
from apps.sessions.combiner_calls import call_combiners, combiner_client
from apps.sessions.leases import LEASE, REDUCE_LEASE, LeaseLost, claim, extend_lease, fenced, release
from apps.sessions.models import CombinerReport, Round, Session, Validation
from apps.sessions.records import (
    controller_state_set,
    event_log,
    federation_holds_sync,
    round_create,
    session_config,
)
from controlplane import artifacts
from fedplane.aggregators import weighted_average_files
from fedplane.aggregators.base import InvalidUpdate, ModelSpec, check_finite, open_model
from fedplane.numpyhelper import open_layers, sha256_of
from fedplane.roundreport import ReportStatus

logger = logging.getLogger(__name__)

# Combiners report after round_timeout; give them this long on top before giving up on them.
REPORT_MARGIN = dt.timedelta(seconds=30)
VALIDATION_WAIT = dt.timedelta(seconds=60)
POLL_SECONDS = 1.0


class RoundFailed(Exception):
    """The current round cannot succeed; the message is the reason shown to operators."""


def session_advance(*, session_pk: int, reduce_here: bool = True, wake: str | None = None) -> float | None:
    """Run one step of a session. Returns seconds until the next step, or None when there is none.

    With `reduce_here` False (the short step task), a session waiting for its reduce is left to the
    reduce task: the answer is 0.0 and nothing is done. The step is read under the claim, so a
    session that moved to its reduce just before is never reduced under the short task's limits.
    `wake` is the chain token the task was enqueued with (leases.claim); None runs regardless.
    """
    token = claim(session_pk, wake=wake)
    if token is None:
        return None
    delay: float | None = None
    try:
        session = Session.objects.get(pk=session_pk)
        waits_for_reduce = session.step == SessionStep.REDUCING and not reduce_here
        delay = 0.0 if waits_for_reduce else run_step(session, token)
    except LeaseLost:
        logger.warning("Session %s: the step lost its lease; its writes were rolled back", session_pk)
        return None
    except Exception as exc:  # a step's failure must end the session visibly, never silently
        logger.exception("Session %s failed", session_pk)
        try:
            with fenced(session_pk, token):
                session_fail(Session.objects.get(pk=session_pk), f"{type(exc).__name__}: {exc}")
        except LeaseLost:
            logger.warning("Session %s: the failed step had lost its lease; the holder goes on", session_pk)
            return None
        delay = None
    except BaseException:
        # The worker is going away mid-step: free the lease so the watchdog resumes the session.
        release(session_pk, token, None)
        raise
    return release(session_pk, token, delay)


# ---------------------------------------------------------------- steps


# Sessions of another mode (session_config.mode) run their own steps: "async" registers
# apps/sessions/asyncsessions.py when the app is ready.
MODE_RUNNERS: dict[str, Callable[[Session, str], float | None]] = {}


def run_step(session: Session, token: str) -> float | None:
    runner = MODE_RUNNERS.get((session.extra_config or {}).get("mode", ""))
    if runner is not None:
        return runner(session, token)
    if session.stop_requested or session.status == SessionStatus.STOPPING:
        session_stop_now(session, token)
        return None
    if session.status == SessionStatus.INITIALIZED:
        return step_begin(session, token)
    step = {
        SessionStep.NEXT_ROUND: step_next_round,
        SessionStep.STARTING: step_starting,
        SessionStep.TRAINING: step_training,
        SessionStep.REDUCING: step_reducing,
        SessionStep.VALIDATING: step_validating,
    }.get(session.step)
    if step is None:
        raise RuntimeError(f"session is at unknown step {session.step!r}")
    return step(session, token)


def step_begin(session: Session, token: str) -> float:
    now = timezone.now()
    with fenced(session.pk, token):
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


def probe_online(combiners: Iterable[Combiner]) -> dict[str, int | None]:
    """Online clients per combiner, asked in parallel; None for a combiner that did not answer."""
    answers = call_combiners(combiners, lambda combiner: combiner_client(combiner).list_active_clients())
    counts: dict[str, int | None] = {}
    for name, answer in answers.items():
        if isinstance(answer, CombinerCallFailed):
            logger.warning("Combiner %s unreachable: %s", name, answer)
            counts[name] = None
        else:
            counts[name] = len(answer)
    return counts


def step_next_round(session: Session, token: str) -> float | None:
    """Choose combiners for the next round, or for the current round again when it is being retried."""
    current = session.current_round
    retrying = current is not None and current.status == RoundStatus.PENDING
    if not retrying and session.rounds_completed >= session.rounds:
        send_pending_validation(session, token)
        with fenced(session.pk, token):
            session_finish(session)
        return None
    spent = privacy.privacy_budget_stop_reason(session)
    if spent is not None:
        send_pending_validation(session, token)
        with fenced(session.pk, token):
            session_stop_spent(session, spent)
        return None
    required = max(session.clients_required, 1)
    combiners = list(Combiner.objects.order_by("name"))
    counts = probe_online(combiners)
    participants = [c.name for c in combiners if (counts.get(c.name) or 0) >= required]
    if not participants:
        # No round starts now: the last committed model's validation goes out without it.
        send_pending_validation(session, token)
        if session.step_deadline and timezone.now() > session.step_deadline:
            waited = f"No combiner had {required} online client(s) within {session.round_timeout} s."
            with fenced(session.pk, token):
                if retrying and current is not None:
                    fail_round(session, current, f"{current.status_reason} Retry not started: {waited}")
                else:
                    session_fail(session, waited)
            return None
        return POLL_SECONDS * 2
    model = Model.objects.find(session_current_model_id(session) or "")
    with fenced(session.pk, token):
        if model is None:
            session_fail(session, "The session's model no longer exists.")
            return None
        if retrying and current is not None:
            current.round_data = {**current.round_data, "participants": participants}
            current.save(update_fields=["round_data"])
        else:
            config = {
                **session_config(session),
                "rounds": 1,
                "task": "training",
                "model_id": str(model.model_id),
                "session_id": session.session_id,
            }
            current = round_create(session=session, round_config=config)
            current.round_data = {"participants": participants}
            current.save(update_fields=["round_data"])
        session.current_round = current
        session.step = SessionStep.STARTING
        # A retry gets a fresh deadline, like a new round.
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


def step_starting(session: Session, token: str) -> float:
    current = session.current_round
    if current is None:
        raise RuntimeError("no current round to start")
    names = current.round_data.get("participants", [])
    # The combiner echoes the attempt in its report, so a late report of an earlier attempt is refused.
    config = {**current.round_config, "round_attempt": current.attempt}
    # The previous round's validation, left to this start (step_reducing), goes out just before
    # this round's tasks: each client runs its tasks in order, so it validates that model, then
    # trains from it.
    validated = pending_validation(session)
    validating = set(validated.round_data["validation"]["pending"]) if validated is not None else set()
    targets = list(Combiner.objects.filter(name__in=set(names) | validating).order_by("name"))
    # Fence before the side effect: the lease is ours and outlasts the Start calls' deadline.
    extend_lease(session.pk, token, LEASE)
    sent_at = timezone.now()
    answers, validation_answers = start_calls(
        targets,
        training=config,
        training_on=set(names),
        validation=validation_config(validated, validated.model_id or "") if validated is not None else None,
        validation_on=validating,
    )
    started = sorted(name for name, answer in answers.items() if not isinstance(answer, CombinerCallFailed))
    failed = [
        f"{name}: {answer}"
        for name, answer in sorted(answers.items())
        if isinstance(answer, CombinerCallFailed)
    ]
    failed += [f"{name}: not registered" for name in sorted(set(names) - set(answers))]
    with fenced(session.pk, token):
        if validated is not None:
            record_validation(validated, validation_sent(session, validated, validation_answers))
        current.round_data = {**current.round_data, "participants": started, "start_failures": failed}
        # A retry keeps the first start: the round's duration counts the attempts it took.
        if started and current.started_at is None:
            current.started_at = sent_at
        current.save(update_fields=["round_data", "started_at"])
        if not started:
            return end_attempt(session, current, "No combiner accepted the round: " + "; ".join(failed))
        attempt = f" (retry {current.attempt})" if current.attempt else ""
        event_log(
            f"Round {current.round_id}{attempt} sent to {', '.join(started)}.",
            session_id=session.session_id,
            level=LogLevel.WARNING if failed else LogLevel.INFO,
        )
        session.step = SessionStep.TRAINING
        session.save(update_fields=["step"])
        controller_state_set(ControllerStateValue.MONITORING, session)
    return POLL_SECONDS


def start_calls(
    combiners: list[Combiner],
    *,
    training: dict[str, Any],
    training_on: set[str],
    validation: dict[str, Any] | None,
    validation_on: set[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Control.Start of the round on `training_on` and, just before it on each, of the validation on
    `validation_on`; the answers (or CombinerCallFailed) of each, by combiner name.

    One thread per combiner makes its two calls back to back, nothing in between: the combiner
    holds both jobs before the clients, busy with the first tasks at once, leave it (and this
    worker, and the database) short of CPU, which held the second call up by up to a second at
    100 clients on 2 cores.
    """

    def start(combiner: Combiner) -> tuple[Any, Any]:
        client = combiner_client(combiner)
        asked: Any = None
        if validation is not None and combiner.name in validation_on:
            try:
                asked = client.start(validation)
            except CombinerCallFailed as exc:
                asked = exc
        started: Any = None
        if combiner.name in training_on:
            if isinstance(asked, CombinerUnreachable):
                started = asked  # its deadline spent once is enough
            else:
                try:
                    started = client.start(training)
                except CombinerCallFailed as exc:
                    started = exc
        return asked, started

    trained: dict[str, Any] = {}
    validated: dict[str, Any] = {}
    for name, answer in call_combiners(combiners, start, calls=2).items():
        asked, started = (answer, answer) if isinstance(answer, CombinerCallFailed) else answer
        if name in training_on:
            trained[name] = started
        if validation is not None and name in validation_on:
            validated[name] = asked
    return trained, validated


def attempt_reports(current: Round) -> list[CombinerReport]:
    return list(current.reports.filter(attempt=current.attempt))


def usable_reports(reports: Iterable[CombinerReport]) -> list[CombinerReport]:
    return [r for r in reports if r.status == ReportStatus.SUCCESS and r.model_id and r.num_examples > 0]


def probe_lost(combiners: Iterable[Combiner]) -> list[str]:
    """Combiners that cannot be reached now: whatever they were running for this round is gone."""
    answers = call_combiners(combiners, lambda combiner: combiner_client(combiner).health())
    return sorted(name for name, answer in answers.items() if answer is not True)


def step_training(session: Session, token: str) -> float | None:
    current = session.current_round
    if current is None:
        raise RuntimeError("no current round to wait for")
    expected = set(current.round_data.get("participants", []))
    reports = attempt_reports(current)
    reported = {r.combiner for r in reports}
    lost = set(current.round_data.get("lost", []))
    before_deadline = timezone.now() < (session.step_deadline or timezone.now())
    waiting = expected - reported - lost
    newly_lost: list[str] = []
    if waiting and before_deadline:
        newly_lost = probe_lost(Combiner.objects.filter(name__in=waiting))
        # A report may have landed while the probe ran; it counts, the combiner is not lost.
        reports = attempt_reports(current)
        reported = {r.combiner for r in reports}
        newly_lost = [name for name in newly_lost if name not in reported]
        lost |= set(newly_lost)
        waiting = expected - reported - lost
    if waiting and before_deadline:
        if newly_lost:
            with fenced(session.pk, token):
                current.round_data = {**current.round_data, "lost": sorted(lost)}
                current.save(update_fields=["round_data"])
                event_log(
                    f"Round {current.round_id}: lost combiner(s) {', '.join(newly_lost)} mid-round; "
                    "waiting for the others.",
                    session_id=session.session_id,
                    level=LogLevel.WARNING,
                )
        return POLL_SECONDS
    missing = sorted(expected - reported)
    usable = usable_reports(reports)
    updates = sum(len(r.report.get("participants", [])) for r in usable)
    # Every combiner answered: reduce what they made. Some are gone: only with enough updates.
    enough = bool(usable) and (not missing or updates >= max(session.clients_required, 1))
    with fenced(session.pk, token):
        current.round_data = {**current.round_data, "lost": sorted(lost & set(missing))}
        current.save(update_fields=["round_data"])
        if not enough:
            reasons = [f"{r.combiner}: {r.report.get('reason') or r.status}" for r in reports]
            reasons += [
                f"{name}: {'lost mid-round' if name in lost else 'no report before the deadline'}"
                for name in missing
            ]
            head = "No combiner produced a model." if not usable else f"Only {updates} update(s) arrived."
            return end_attempt(session, current, f"{head} " + "; ".join(reasons))
        if missing:
            current.status_reason = "No report from: " + ", ".join(missing)
            current.save(update_fields=["status_reason"])
        session.step = SessionStep.REDUCING
        session.save(update_fields=["step"])
    return 0.0


def end_attempt(session: Session, current: Round, reason: str) -> float | None:
    """The round cannot be completed as it ran: start it again if retries are left, else fail it.

    Call inside the step's fence.
    """
    if current.attempt >= session.round_retries:
        spent = (
            f" (after {current.attempt} retr{'y' if current.attempt == 1 else 'ies'})"
            if current.attempt
            else ""
        )
        fail_round(session, current, reason + spent)
        return 0.0
    now = timezone.now()
    history = [
        *current.round_data.get("attempts", []),
        {
            "attempt": current.attempt,
            "participants": current.round_data.get("participants", []),
            "lost": current.round_data.get("lost", []),
            "reason": reason,
            "ended_at": now.isoformat(),
        },
    ]
    current.attempt += 1
    current.round_data = {"attempts": history}
    current.status_reason = f"Retry {current.attempt} of {session.round_retries}: {reason}"
    current.save(update_fields=["attempt", "round_data", "status_reason"])
    session.step = SessionStep.NEXT_ROUND
    # How long to wait for a combiner with enough clients (the one that died, or another).
    session.step_deadline = now + dt.timedelta(seconds=session.round_timeout)
    session.save(update_fields=["step", "step_deadline"])
    controller_state_set(ControllerStateValue.INSTRUCTING, session)
    event_log(
        f"Round {current.round_id} retry {current.attempt} of {session.round_retries}: {reason}",
        session_id=session.session_id,
        level=LogLevel.WARNING,
    )
    return 0.0


def step_reducing(session: Session, token: str) -> float:
    current = session.current_round
    if current is None:
        raise RuntimeError("no current round to reduce")
    usable = usable_reports(attempt_reports(current))
    if not usable:
        raise RuntimeError(f"round {current.round_id} has no model to reduce")
    extend_lease(session.pk, token, REDUCE_LEASE)
    reduced = reduce_models(current, usable)
    with fenced(session.pk, token):
        parent = Model.objects.find(current.round_config.get("model_id", "")) or model_get_active()
        commit_started = timezone.now()
        new_model = model_commit(
            model_id=reduced.model_id,
            key=reduced.key,
            size=reduced.size,
            sha256=reduced.sha256,
            session_id=session.session_id,
            parent=parent,
        )
        current.round_data = {
            **current.round_data,
            **reduced.round_data,
            "time_commit": (timezone.now() - commit_started).total_seconds(),
            **privacy.round_privacy(session, current),
        }
        # Only the last round waits for its validations, so a finished session has them all. An
        # earlier round's need not hold up the next round: each client runs its tasks in order,
        # so it validates the new model before it trains from it (FEDn 0.9.5 moves on likewise).
        wait_for_validations = session.validate and session.rounds_completed + 1 >= session.rounds
        current.status = RoundStatus.SUCCESS if wait_for_validations else RoundStatus.FINISHED
        if session.validate and not wait_for_validations:
            # Asked for by the next round's start (step_starting), right before its training tasks:
            # sent now, the clients would validate while the next round is being prepared, and the
            # preparation, starved of CPU by them, would hold up its Start.
            current.round_data = {
                **current.round_data,
                "validation": {"pending": [r.combiner for r in usable]},
            }
        current.model_id = str(new_model.model_id)
        current.finished_at = timezone.now()
        current.save(update_fields=["status", "model_id", "round_data", "finished_at"])
        session.rounds_completed += 1
        session.step = SessionStep.VALIDATING if wait_for_validations else SessionStep.NEXT_ROUND
        session.step_deadline = timezone.now() + (
            min(VALIDATION_WAIT, dt.timedelta(seconds=session.round_timeout))
            if wait_for_validations
            else dt.timedelta(seconds=session.round_timeout)
        )
        session.save(update_fields=["rounds_completed", "step", "step_deadline"])
        if not wait_for_validations:
            controller_state_set(ControllerStateValue.INSTRUCTING, session)
        retried = (
            f" after {current.attempt} retr{'y' if current.attempt == 1 else 'ies'}"
            if current.attempt
            else ""
        )
        event_log(
            f"Round {current.round_id} committed model {new_model.model_id} from {len(usable)} "
            f"combiner(s){retried}.",
            session_id=session.session_id,
        )
    if session.delete_models_storage:
        for report in usable:
            if report.model_id != str(new_model.model_id):
                artifacts.delete(artifact_key(report.model_id))
    if session.validate and wait_for_validations:
        sent, expected = send_validation(
            session, current, str(new_model.model_id), [r.combiner for r in usable]
        )
        with fenced(session.pk, token):
            record_validation(current, (sent, expected))
    return 0.0


@dataclass(frozen=True)
class Reduced:
    """A combined model in the artifact store, not yet committed."""

    model_id: uuid.UUID
    key: str
    size: int
    sha256: str
    round_data: dict[str, Any]


def reduce_models(current: Round, reports: list[CombinerReport]) -> Reduced:
    """Combine the combiners' models weighted by their examples into a stored artifact.

    Each combiner's model is checked before it is used: headers first, then layer for layer
    against the round's global model, then its values (no NaN or infinity) while it is read.
    A model that fails raises InvalidUpdate naming the combiner.
    """
    started = timezone.now()
    with tempfile.TemporaryDirectory(prefix="fedplane-reduce-") as workdir:
        spec = round_model_spec(current, Path(workdir))
        inputs = []
        for report in reports:
            local = Path(workdir) / f"{report.model_id}.npz"
            artifacts.download(artifact_key(report.model_id or ""), local)
            inputs.append((local, report.num_examples))
        labels = [f"the model of combiner {report.combiner}" for report in reports]
        if len(reports) == 1:
            # One combiner: its model is the new global model; adopt the artifact once checked.
            local = inputs[0][0]
            try:
                with open_model(local, spec, what="the file") as reader:
                    check_finite(reader)
            except ValueError as exc:
                raise InvalidUpdate(f"{labels[0]}: {exc}") from exc
            model_id = uuid.UUID(reports[0].model_id or "")
            key = artifact_key(model_id)
            size, sha256 = local.stat().st_size, sha256_of(local)
            remember_layout(key, local)
        else:
            model_id = uuid.uuid4()
            key = artifact_key(model_id)
            combined = Path(workdir) / "combined.npz"
            weighted_average_files(inputs, combined, expected=spec, labels=labels)
            # Hash the local file: reading the stored copy back would move the model twice.
            size, sha256 = combined.stat().st_size, sha256_of(combined)
            artifacts.save(key, combined)
            remember_layout(key, combined)
    round_data = {
        "reduce": {
            "time_aggregate_model": (timezone.now() - started).total_seconds(),
            "nr_combiners": len(reports),
        },
        "num_examples": sum(r.num_examples for r in reports),
        "participants_clients": sorted({p for r in reports for p in r.report.get("participants", [])}),
    }
    return Reduced(model_id, key, size, sha256, round_data)


# Layouts of stored models by artifact key. An artifact is never rewritten under its key, so an
# entry never goes stale; the reduce records the model it makes, the next round's global model, so
# a worker reduces round after round without downloading the global model again.
_layouts: dict[str, ModelSpec] = {}
LAYOUT_CACHE_SIZE = 16


def remember_layout(key: str, path: Path) -> ModelSpec:
    """Read a model file's layout from its headers and keep it under its artifact key."""
    with open_layers(path) as reader:
        spec = ModelSpec.of(reader)
    _layouts[key] = spec
    while len(_layouts) > LAYOUT_CACHE_SIZE:
        del _layouts[next(iter(_layouts))]
    return spec


def round_model_spec(current: Round, workdir: Path) -> ModelSpec:
    """Layer shapes and dtypes of the model the round trained from, read from its headers."""
    model = Model.objects.find(current.round_config.get("model_id", "")) or model_get_active()
    if model is None:
        raise RuntimeError(
            f"round {current.round_id} has no global model to check the combined models against"
        )
    key = model.artifact.name
    if key in _layouts:
        return _layouts[key]
    local = workdir / "global.npz"
    artifacts.download(key, local)
    return remember_layout(key, local)


def send_validation(
    session: Session, current: Round, model_id: str, combiner_names: Iterable[str]
) -> tuple[list[str], int]:
    """Ask the combiners to validate the round's model; returns who accepted and how many validations to expect."""
    config = validation_config(current, model_id)
    answers = call_combiners(
        Combiner.objects.filter(name__in=list(combiner_names)).order_by("name"),
        lambda combiner: combiner_client(combiner).start(config),
    )
    return validation_sent(session, current, answers)


def validation_config(current: Round, model_id: str) -> dict[str, Any]:
    """The Start config asking for the validation of the model a round committed."""
    return {**current.round_config, "task": "validation", "model_id": model_id}


def validation_sent(session: Session, current: Round, answers: dict[str, Any]) -> tuple[list[str], int]:
    """Who accepted to validate the round's model, and how many validations to expect; a refusal is logged."""
    sent = sorted(name for name, answer in answers.items() if not isinstance(answer, CombinerCallFailed))
    for name, answer in sorted(answers.items()):
        if isinstance(answer, CombinerCallFailed):
            event_log(
                f"Validation of round {current.round_id} not sent to {name}: {answer}",
                session_id=session.session_id,
                level=LogLevel.WARNING,
            )
    expected = len(current.round_data.get("participants_clients", [])) if sent else 0
    return sent, expected


def pending_validation(session: Session) -> Round | None:
    """The committed round whose validation is still to be asked for (step_reducing), if any."""
    if not session.validate:
        return None
    last = session.round_set.filter(status=RoundStatus.FINISHED).order_by("-number").first()
    if last is None or "pending" not in (last.round_data.get("validation") or {}):
        return None
    return last


def record_validation(committed: Round, validation: tuple[list[str], int]) -> None:
    """Note who was asked to validate the round's model and how many validations to expect (in a fence)."""
    sent, expected = validation
    committed.round_data = {**committed.round_data, "validation": {"combiners": sent, "expected": expected}}
    committed.save(update_fields=["round_data"])


def send_pending_validation(session: Session, token: str) -> None:
    """Ask for the validation a committed round left to the next round's start, when no start
    follows (the session ends, or waits for clients): every committed model is validated."""
    committed = pending_validation(session)
    if committed is None:
        return
    extend_lease(session.pk, token, LEASE)
    validation = send_validation(
        session, committed, committed.model_id or "", committed.round_data["validation"]["pending"]
    )
    with fenced(session.pk, token):
        record_validation(committed, validation)


def step_validating(session: Session, token: str) -> float:
    current = session.current_round
    if current is None:
        raise RuntimeError("no current round to validate")
    expected = current.round_data.get("validation", {}).get("expected", 0)
    received = Validation.objects.filter(model_id=current.model_id).count()
    if received < expected and timezone.now() < (session.step_deadline or timezone.now()):
        return POLL_SECONDS
    with fenced(session.pk, token):
        if current.status == RoundStatus.SUCCESS:
            current.status = RoundStatus.FINISHED
            current.save(update_fields=["status"])
        session.step = SessionStep.NEXT_ROUND
        session.step_deadline = timezone.now() + dt.timedelta(seconds=session.round_timeout)
        session.save(update_fields=["step", "step_deadline"])
        controller_state_set(ControllerStateValue.INSTRUCTING, session)
    return 0.0


# ---------------------------------------------------------------- endings (call inside a fence)


def fail_round(session: Session, current: Round, reason: str) -> None:
    current.status = RoundStatus.FAILED
    current.status_reason = reason
    current.finished_at = timezone.now()
    current.save(update_fields=["status", "status_reason", "round_data", "finished_at"])
    session_fail(session, f"Round {current.round_id} failed: {reason}")


def _end(session: Session, status: str, reason: str, level: str) -> None:
    Session.objects.filter(pk=session.pk).update(
        status=status,
        status_reason=reason,
        step=SessionStep.DONE,
        finished_at=timezone.now(),
        next_run_at=None,
    )
    federation_holds_sync()
    controller_state_set(ControllerStateValue.IDLE, None)
    event_log(
        f"Session {session.session_id} {status.lower()}. {reason}".strip(),
        session_id=session.session_id,
        level=level,
    )


def session_finish(session: Session) -> None:
    _end(session, SessionStatus.FINISHED, f"{session.rounds_completed} round(s) completed.", LogLevel.INFO)


def session_stop_spent(session: Session, reason: str) -> None:
    """The session's privacy budget allows no further round: it stops, the reason says so."""
    if session.current_round_id:
        now = timezone.now()
        Round.objects.filter(pk=session.current_round_id, status=RoundStatus.PENDING).update(
            status=RoundStatus.STOPPED, status_reason=reason, finished_at=now, updated_at=now
        )
    _end(session, SessionStatus.STOPPED, reason, LogLevel.WARNING)


def session_fail(session: Session, reason: str) -> None:
    if session.current_round_id:
        # update() skips auto_now: the times are set here.
        now = timezone.now()
        Round.objects.filter(pk=session.current_round_id, status=RoundStatus.PENDING).update(
            status=RoundStatus.FAILED, status_reason=reason, finished_at=now, updated_at=now
        )
    _end(session, SessionStatus.FAILED, reason, LogLevel.ERROR)


def session_stop_now(session: Session, token: str) -> None:
    send_pending_validation(session, token)
    current = session.current_round
    participants: list[str] = []
    with fenced(session.pk, token):
        if current is not None and current.status == RoundStatus.PENDING:
            participants = current.round_data.get("participants", [])
            # Close the round first, so the "stopped" reports the combiners send back are refused.
            now = timezone.now()
            Round.objects.filter(pk=current.pk).update(
                status=RoundStatus.STOPPED, status_reason="session stopped", finished_at=now, updated_at=now
            )
        _end(session, SessionStatus.STOPPED, "Stopped on request.", LogLevel.INFO)
    call_combiners(
        Combiner.objects.filter(name__in=participants), lambda combiner: combiner_client(combiner).stop()
    )
