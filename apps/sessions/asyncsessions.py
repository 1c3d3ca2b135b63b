"""Asynchronous buffered sessions (FedBuff) on the controller: settings, and the state machine that
commits each model version the combiner makes as a round of the session.

A session asks for it with ``session_config.mode = "async"`` (a fedplane extension)::

    "mode": "async", "rounds": 20,
    "fedbuff": {"buffer_size": 4, "max_staleness": 3, "staleness": "polynomial", "server_learning_rate": 1.0}

``rounds`` is the number of versions. ``fedbuff`` holds FedBuff's parameters
(fedplane/aggregators/fedbuff.py): ``buffer_size`` K (else the session's ``buffer_size`` when
positive), ``max_staleness``, ``staleness`` (``polynomial`` 1/(1+s)^a with ``staleness_exponent``
a, ``hinge`` with ``hinge_a``/``hinge_b``, or ``constant``) and ``server_learning_rate``.

One combiner runs the session (the one with the most online clients). The controller creates the
rounds of all versions up front, so that the combiner reports each version to its own round, and
commits each version as the session's next model, its parent the version before. The session
ends after its versions, on stop, or failed when no version arrives within the round timeout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from django.utils import timezone

from apps.combiners.grpc_client import CombinerCallFailed
from apps.combiners.models import Combiner
from apps.models.models import Model
from apps.models.services import model_commit
from apps.sessions import orchestration, privacy
from apps.sessions.choices import ControllerStateValue, RoundStatus, SessionStatus, SessionStep
from apps.sessions.combiner_calls import call_combiners, combiner_client
from apps.sessions.leases import LEASE, REDUCE_LEASE, LeaseLost, extend_lease, fenced
from apps.sessions.models import Round, Session
from apps.sessions.records import controller_state_set, event_log, round_create, session_config
from fedplane.aggregators.fedbuff import FedBuff

MODE_KEY = "mode"
FEDBUFF_KEY = "fedbuff"
MODES = ("sync", "async")
ASYNC = "async"


class AsyncConfigError(ValueError):
    """``session_config.mode`` or ``fedbuff`` is not a setting a session can run with."""


def async_config_clean(
    config: dict[str, Any], *, buffer_size: int, aggregator: str, aggregator_kwargs: Any
) -> dict[str, Any]:
    """The ``mode`` and ``fedbuff`` keys of a session_config as the session keeps them."""
    mode = config.get(MODE_KEY)
    if mode is None:
        mode = "sync"
    if mode not in MODES:
        raise AsyncConfigError(f"session_config.mode must be one of {', '.join(MODES)}")
    fedbuff = config.get(FEDBUFF_KEY)
    if mode != ASYNC:
        if fedbuff is not None:
            raise AsyncConfigError('session_config.fedbuff is only used with "mode": "async"')
        return {}
    if fedbuff is None:
        fedbuff = {}
    if not isinstance(fedbuff, dict):
        raise AsyncConfigError("session_config.fedbuff must be an object")
    if aggregator != "fedavg" or aggregator_kwargs:
        raise AsyncConfigError("an asynchronous session aggregates with FedBuff: leave aggregator fedavg")
    params = dict(fedbuff)
    if "buffer_size" not in params:
        if buffer_size < 1:
            raise AsyncConfigError(
                "an asynchronous session needs its buffer size K: fedbuff.buffer_size or buffer_size"
            )
        params["buffer_size"] = buffer_size
    try:
        FedBuff.create(dict(params))
    except ValueError as exc:
        raise AsyncConfigError(f"session_config.fedbuff: {exc}") from exc
    return {MODE_KEY: ASYNC, FEDBUFF_KEY: params}


def is_async(session: Session) -> bool:
    return (session.extra_config or {}).get(MODE_KEY) == ASYNC


# ---------------------------------------------------------------- the state machine


def async_run_step(session: Session, token: str) -> float | None:
    """One step of an asynchronous session (orchestration.run_step hands it over by mode)."""
    try:
        return _run_step(session, token)
    except LeaseLost:
        raise
    except Exception as exc:
        # The orchestration fails the session and its current round; the rounds of the versions
        # after it would stay open.
        with contextlib.suppress(Exception), fenced(session.pk, token):
            close_open_rounds(session, RoundStatus.FAILED, f"the session failed: {type(exc).__name__}: {exc}")
        raise


def _run_step(session: Session, token: str) -> float | None:
    if session.stop_requested or session.status == SessionStatus.STOPPING:
        orchestration.session_stop_now(session, token)
        with fenced(session.pk, token):
            close_open_rounds(session, RoundStatus.STOPPED, "session stopped")
        return None
    if session.status == SessionStatus.INITIALIZED:
        return orchestration.step_begin(session, token)
    step = {
        SessionStep.NEXT_ROUND: step_plan,
        SessionStep.STARTING: step_start,
        SessionStep.TRAINING: step_wait_version,
        SessionStep.REDUCING: step_commit_version,
    }.get(session.step)
    if step is None:
        raise RuntimeError(f"asynchronous session is at step {session.step!r}")
    return step(session, token)


def close_open_rounds(session: Session, status: str, reason: str) -> None:
    """End the session's rounds whose versions will not come (call inside the fence)."""
    now = timezone.now()
    Round.objects.filter(session=session, status=RoundStatus.PENDING).update(
        status=status, status_reason=reason, finished_at=now, updated_at=now
    )


def _fail(session: Session, reason: str) -> None:
    close_open_rounds(session, RoundStatus.FAILED, reason)
    orchestration.session_fail(session, reason)


def _deadline() -> dt.datetime:
    return timezone.now() + orchestration.REPORT_MARGIN


def step_plan(session: Session, token: str) -> float | None:
    """Choose the combiner and create the rounds of the versions still to make (as many as the
    privacy budget allows, with differential privacy and a target ε)."""
    if session.rounds_completed >= session.rounds:
        with fenced(session.pk, token):
            orchestration.session_finish(session)
        return None
    spent = privacy.privacy_budget_stop_reason(session)
    if spent is not None:
        with fenced(session.pk, token):
            orchestration.session_stop_spent(session, spent)
        return None
    versions = privacy.rounds_within_budget(session, session.rounds - session.rounds_completed)
    required = max(session.clients_required, 1)
    combiners = list(Combiner.objects.order_by("name"))
    counts = orchestration.probe_online(combiners)
    able = sorted(
        (c for c in combiners if (counts.get(c.name) or 0) >= required),
        key=lambda c: (-(counts.get(c.name) or 0), c.name),
    )
    if not able:
        if session.step_deadline and timezone.now() > session.step_deadline:
            with fenced(session.pk, token):
                _fail(
                    session, f"No combiner had {required} online client(s) within {session.round_timeout} s."
                )
            return None
        return orchestration.POLL_SECONDS * 2
    chosen = able[0].name
    model = Model.objects.find(orchestration.session_current_model_id(session) or "")
    with fenced(session.pk, token):
        if model is None:
            _fail(session, "The session's model no longer exists.")
            return None
        config = {
            **session_config(session),
            "rounds": 1,
            "task": "training",
            "model_id": str(model.model_id),
            "session_id": session.session_id,
        }
        first = None
        for version in range(session.rounds_completed + 1, session.rounds_completed + versions + 1):
            made = round_create(session=session, round_config={**config, "version": version})
            made.round_data = {"participants": [chosen], "version": version}
            made.save(update_fields=["round_data"])
            first = first or made
        session.current_round = first
        session.step = SessionStep.STARTING
        session.step_deadline = _deadline() + dt.timedelta(seconds=session.round_timeout)
        session.save(update_fields=["current_round", "step", "step_deadline"])
    return 0.0


def _open_rounds(session: Session) -> list[Round]:
    return list(Round.objects.filter(session=session, status=RoundStatus.PENDING).order_by("number"))


def step_start(session: Session, token: str) -> float | None:
    current = session.current_round
    if current is None:
        raise RuntimeError("no round to start the asynchronous session with")
    rounds = _open_rounds(session)
    names = current.round_data.get("participants", [])
    config = {
        **current.round_config,
        "async_round_ids": ",".join(r.round_id for r in rounds),
        "round_attempt": 0,
    }
    extend_lease(session.pk, token, LEASE)
    sent_at = timezone.now()
    answers = call_combiners(
        Combiner.objects.filter(name__in=names), lambda combiner: combiner_client(combiner).start(config)
    )
    failed = [
        f"{name}: {answer}" for name, answer in answers.items() if isinstance(answer, CombinerCallFailed)
    ]
    with fenced(session.pk, token):
        if failed or not answers:
            _fail(
                session,
                "The combiner did not take the asynchronous session: " + ("; ".join(failed) or "gone"),
            )
            return None
        current.started_at = sent_at
        current.save(update_fields=["started_at"])
        event_log(
            f"Asynchronous session {session.session_id} sent to {', '.join(names)}: versions "
            f"{rounds[0].round_id}..{rounds[-1].round_id} (rounds), buffer of "
            f"{(session.extra_config or {}).get(FEDBUFF_KEY, {}).get('buffer_size')}.",
            session_id=session.session_id,
        )
        session.step = SessionStep.TRAINING
        session.step_deadline = _deadline() + dt.timedelta(seconds=session.round_timeout)
        session.save(update_fields=["step", "step_deadline"])
        controller_state_set(ControllerStateValue.MONITORING, session)
    return orchestration.POLL_SECONDS


def step_wait_version(session: Session, token: str) -> float | None:
    """Wait for the report of the next version; a failed report or the deadline fails the session."""
    current = session.current_round
    if current is None:
        raise RuntimeError("no round to wait for")
    reports = orchestration.attempt_reports(current)
    if orchestration.usable_reports(reports):
        with fenced(session.pk, token):
            session.step = SessionStep.REDUCING
            session.save(update_fields=["step"])
        return 0.0
    failed = [f"{r.combiner}: {r.report.get('reason') or r.status}" for r in reports]
    if not failed and timezone.now() < (session.step_deadline or timezone.now()):
        return orchestration.POLL_SECONDS
    reason = "; ".join(failed) or f"no model version within the round timeout ({session.round_timeout} s)"
    with fenced(session.pk, token):
        current.status_reason = reason
        current.save(update_fields=["status_reason"])
        _fail(
            session,
            f"Round {current.round_id} (version {current.round_data.get('version')}) failed: {reason}",
        )
    return None


def step_commit_version(session: Session, token: str) -> float | None:
    """Commit the reported version as the session's next model, parent the version before."""
    current = session.current_round
    if current is None:
        raise RuntimeError("no round to commit")
    usable = orchestration.usable_reports(orchestration.attempt_reports(current))
    if not usable:
        raise RuntimeError(f"round {current.round_id} has no version to commit")
    extend_lease(session.pk, token, REDUCE_LEASE)
    reduced = orchestration.reduce_models(current, usable[:1])
    report_data = usable[0].report.get("data", {})
    with fenced(session.pk, token):
        parent = Model.objects.find(orchestration.session_current_model_id(session) or "")
        new_model = model_commit(
            model_id=reduced.model_id,
            key=reduced.key,
            size=reduced.size,
            sha256=reduced.sha256,
            session_id=session.session_id,
            parent=parent,
        )
        now = timezone.now()
        current.round_data = {
            **current.round_data,
            **reduced.round_data,
            "staleness": report_data.get("staleness", []),
            **privacy.round_privacy(session, current),
        }
        current.status = RoundStatus.FINISHED
        current.model_id = str(new_model.model_id)
        current.finished_at = now
        current.save(update_fields=["status", "model_id", "round_data", "finished_at"])
        session.rounds_completed += 1
        following = _open_rounds(session)
        if following:
            following[0].started_at = now
            following[0].save(update_fields=["started_at"])
            session.current_round = following[0]
            session.step = SessionStep.TRAINING
        else:
            session.step = SessionStep.NEXT_ROUND
        session.step_deadline = _deadline() + dt.timedelta(seconds=session.round_timeout)
        session.save(update_fields=["rounds_completed", "current_round", "step", "step_deadline"])
        event_log(
            f"Round {current.round_id} committed version {current.round_data.get('version')} "
            f"as model {new_model.model_id}.",
            session_id=session.session_id,
        )
    if session.validate:
        # Validation tasks reach the clients once the combiner is done with the session's versions.
        orchestration.send_validation(session, current, str(new_model.model_id), [usable[0].combiner])
    return 0.0


orchestration.MODE_RUNNERS[ASYNC] = async_run_step
