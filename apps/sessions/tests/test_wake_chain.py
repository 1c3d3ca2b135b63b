"""Event-driven steps: a stored report or the last expected validation runs the waiting step at
once, and however often a session is woken, one chain of step tasks runs it (stale ones stop)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.utils import timezone

from apps.sessions import leases, orchestration, steps
from apps.sessions.choices import RoundStatus, SessionStep
from apps.sessions.ingestion import round_record_report, validations_record
from apps.sessions.models import Round, Session
from apps.sessions.tests.fake_combiners import fake_combiners
from apps.sessions.tests.test_orchestration import running_session, upload_seed, with_round


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, str | None, float]]:
    """The step tasks enqueued: (task, session pk, chain token, countdown)."""
    sent: list[tuple[str, int, str | None, float]] = []
    for task in (steps.session_advance, steps.session_reduce):

        def record(args: Any, kwargs: Any = None, countdown: float = 0.0, name: str = task.name) -> None:
            sent.append((name, args[0], (kwargs or {}).get("wake"), countdown))

        monkeypatch.setattr(task, "apply_async", record)
    return sent


@pytest.mark.django_db
def test_a_task_of_a_replaced_chain_is_stale_and_does_nothing() -> None:
    session = running_session(step=SessionStep.TRAINING)
    first = leases.wake(session.pk)
    second = leases.wake(session.pk)
    assert first and second and first != second
    assert leases.claim(session.pk, wake=first) is None
    token = leases.claim(session.pk, wake=second)
    assert token is not None
    # Releasing starts the next chain token: the task that just ran cannot run again.
    leases.release(session.pk, token, 1.0)
    assert leases.claim(session.pk, wake=second) is None
    assert leases.claim(session.pk, wake=Session.objects.get(pk=session.pk).wake_token) is not None


@pytest.mark.django_db
def test_a_wake_during_a_step_makes_its_release_run_the_next_step_at_once() -> None:
    session = running_session(step=SessionStep.TRAINING)
    token = leases.claim(session.pk)
    assert token is not None
    assert leases.wake(session.pk) is None  # the step holds the lease: it is told instead
    assert leases.release(session.pk, token, 1.0) == 0.0
    after = Session.objects.get(pk=session.pk)
    assert not after.wake_pending and after.next_run_at is not None
    assert after.next_run_at <= timezone.now()
    # Without a wake, the release keeps the step's own delay.
    token = leases.claim(session.pk)
    assert token is not None
    assert leases.release(session.pk, token, 1.0) == 1.0


@pytest.mark.django_db(transaction=True)
def test_a_stored_report_runs_the_training_step_now(enqueued: list[Any]) -> None:
    session = running_session(step=SessionStep.TRAINING)
    current = with_round(session, ["north"])
    round_record_report(
        round=current,
        report={"combiner": "north", "status": "Success", "model_id": "m1", "num_examples": 10},
    )
    token = Session.objects.get(pk=session.pk).wake_token
    # The reduce's task: the training step it runs leads to the reduce, which it runs too.
    assert enqueued == [("fl_sessions.session_reduce", session.pk, token, 0.0)]
    # The woken task claims with that token; a task of the chain from before is stale.
    assert leases.claim(session.pk, wake="an-older-chain") is None


@pytest.mark.django_db(transaction=True)
def test_the_validating_step_runs_when_the_last_expected_validation_is_stored(enqueued: list[Any]) -> None:
    session = running_session(step=SessionStep.VALIDATING)
    current = with_round(session, ["north"])
    current.model_id = "model-1"
    current.round_data = {**current.round_data, "validation": {"combiners": ["north"], "expected": 2}}
    current.save()

    def validation(sender: str) -> dict[str, Any]:
        return {
            "sender": {"name": sender, "role": "WORKER"},
            "receiver": {"name": "north", "role": "COMBINER"},
            "modelId": "model-1",
            "data": json.dumps({"test_accuracy": 0.9}),
            "timestamp": timezone.now().isoformat(),
            "sessionId": session.session_id,
        }

    validations_record(docs=[validation("c1")])
    assert enqueued == []  # one of two: the step keeps waiting
    validations_record(docs=[validation("c2"), {**validation("c3"), "modelId": "another-model"}])
    assert [(name, pk, countdown) for name, pk, _, countdown in enqueued] == [
        ("fl_sessions.session_advance", session.pk, 0.0)
    ]
    # The woken step moves the session on without waiting for its deadline.
    assert orchestration.session_advance(session_pk=session.pk, wake=enqueued[0][2]) == 0.0
    assert Session.objects.get(pk=session.pk).step == SessionStep.NEXT_ROUND


@pytest.mark.django_db(transaction=True)
def test_the_steps_that_follow_at_once_run_in_one_task(enqueued: list[Any], fs_storage: Any) -> None:
    """The validations are in: one task closes the round, starts the next and sends its Start;
    only the training step's wait for the report goes back through the broker."""
    seed = upload_seed()
    session = running_session(step=SessionStep.VALIDATING, seed=seed, rounds=2)
    with fake_combiners({"north": (["c1"], 0.0)}) as fakes:
        current = with_round(session, ["north"])
        current.model_id = str(seed.model_id)
        current.status = RoundStatus.SUCCESS
        current.round_data = {**current.round_data, "validation": {"combiners": ["north"], "expected": 0}}
        current.save()
        Session.objects.filter(pk=session.pk).update(rounds_completed=1)
        steps.session_advance(session.pk, wake=Session.objects.get(pk=session.pk).wake_token)
        assert len(fakes["north"].starts) == 1
    after = Session.objects.get(pk=session.pk)
    assert after.step == SessionStep.TRAINING and after.current_round.number == 2
    assert Round.objects.get(pk=current.pk).status == RoundStatus.FINISHED
    assert [(name, pk, token, countdown) for name, pk, token, countdown in enqueued] == [
        ("fl_sessions.session_advance", session.pk, after.wake_token, orchestration.POLL_SECONDS)
    ]


@pytest.mark.django_db(transaction=True)
def test_an_inline_chain_stops_where_another_task_holds_the_session(enqueued: list[Any]) -> None:
    """Between two inline steps a woken task claimed the session: the inline chain stops and
    leaves the session to it, enqueueing nothing."""
    session = running_session(step=SessionStep.VALIDATING)
    current = with_round(session, ["north"])
    current.model_id = "model-1"
    current.round_data = {**current.round_data, "validation": {"combiners": ["north"], "expected": 0}}
    current.save()
    real_advance = orchestration.session_advance
    runs: list[str] = []
    taken: list[str | None] = []

    def advance(**kwargs: Any) -> float | None:
        runs.append(Session.objects.get(pk=session.pk).step)
        delay = real_advance(**kwargs)
        taken.append(leases.claim(session.pk, wake=leases.wake(session.pk)))  # the woken task
        return delay

    orchestration.session_advance = advance  # type: ignore[assignment]
    try:
        steps.session_advance(session.pk, wake=Session.objects.get(pk=session.pk).wake_token)
    finally:
        orchestration.session_advance = real_advance  # type: ignore[assignment]
    assert runs == [SessionStep.VALIDATING, SessionStep.NEXT_ROUND]
    assert taken[0] is not None
    after = Session.objects.get(pk=session.pk)
    assert after.step == SessionStep.NEXT_ROUND and after.lease_token == taken[0]
    assert enqueued == []
