"""Fenced steps: a step that loses its lease mid-step writes nothing, and combiners are asked in
parallel, so a step's calls take about one gRPC deadline however many combiners are slow."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from apps.combiners.models import Combiner
from apps.models.models import Model
from apps.sessions import combiner_calls, leases, orchestration, steps
from apps.sessions.choices import RoundStatus, SessionStatus, SessionStep
from apps.sessions.models import CombinerReport, Round, Session, Status
from apps.sessions.tests.fake_combiners import fake_combiners
from apps.sessions.tests.test_orchestration import npz_bytes, running_session, upload_seed, with_round
from controlplane import artifacts

THIEF = "another-worker"


def steal(session: Session) -> None:
    """Another worker's claim, from its own database connection (a thread has its own)."""

    def claim_elsewhere() -> None:
        try:
            Session.objects.filter(pk=session.pk).update(lease_token=THIEF)
        finally:
            connection.close()

    thief = threading.Thread(target=claim_elsewhere)
    thief.start()
    thief.join(timeout=30)
    assert not thief.is_alive(), "the other worker's claim did not finish"


def stealing_after(original: Callable[..., Any], session: Session) -> Callable[..., Any]:
    """`original`, after which another worker claims the session."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        steal(session)
        return result

    return wrapper


def one_combiner(monkeypatch: pytest.MonkeyPatch, session: Session, *, steal_during_probe: bool) -> None:
    """A registered combiner that the probe finds with enough clients."""
    Combiner.objects.create(name="north", address="127.0.0.1", port=1)

    def probe(combiners: Any) -> dict[str, int | None]:
        if steal_during_probe:
            steal(session)
        return {"north": 3}

    monkeypatch.setattr(orchestration, "probe_online", probe)


# Inside a write transaction only PostgreSQL lets another connection claim the row: SQLite takes one
# writer at a time, so there the claim lands before the step's transaction, during its probe.
BETWEEN_WRITES = pytest.param(
    "between-writes",
    marks=pytest.mark.skipif(
        connection.vendor == "sqlite", reason="SQLite admits no second writer inside a write transaction"
    ),
)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("when", ["during-probe", BETWEEN_WRITES])
def test_a_next_round_step_whose_lease_is_taken_mid_step_writes_nothing(
    when: str, fs_storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = upload_seed()
    session = running_session(step=SessionStep.NEXT_ROUND, seed=seed)
    one_combiner(monkeypatch, session, steal_during_probe=when == "during-probe")
    if when == "between-writes":
        # After the Round row is written, before the session row moves on.
        monkeypatch.setattr(
            orchestration, "round_create", stealing_after(orchestration.round_create, session)
        )
    events_before = Status.objects.count()

    assert orchestration.session_advance(session_pk=session.pk) is None

    after = Session.objects.get(pk=session.pk)
    assert not Round.objects.exists()
    assert (after.status, after.step, after.current_round_id) == (
        SessionStatus.STARTED,
        SessionStep.NEXT_ROUND,
        None,
    )
    assert after.step_deadline == session.step_deadline
    # The holder's lease is untouched: the loser neither released nor renewed it.
    assert after.lease_token == THIEF
    assert Status.objects.count() == events_before


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("when", ["during-reduce", BETWEEN_WRITES])
def test_a_reduce_whose_lease_is_taken_commits_no_model(
    when: str, fs_storage: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    seed = upload_seed()
    session = running_session(step=SessionStep.REDUCING, seed=seed)
    current = with_round(session, ["north"])
    current.round_config = {**current.round_config, "model_id": str(seed.model_id)}
    current.save(update_fields=["round_config"])
    model_id = "6f1d3c52-0c8e-4a4e-9d56-0c3c2b7c1a10"
    local = tmp_path / "m.npz"
    local.write_bytes(npz_bytes(2.0))
    artifacts.save(orchestration.artifact_key(model_id), local)
    CombinerReport.objects.create(
        round=current, combiner="north", model_id=model_id, num_examples=10, report={"participants": ["c1"]}
    )
    target = "reduce_models" if when == "during-reduce" else "model_commit"
    monkeypatch.setattr(orchestration, target, stealing_after(getattr(orchestration, target), session))
    events_before = Status.objects.count()

    assert orchestration.session_advance(session_pk=session.pk) is None

    after = Session.objects.get(pk=session.pk)
    current.refresh_from_db()
    assert not Model.objects.filter(model_id=model_id).exists()
    assert Model.objects.get(active=True).model_id == seed.model_id
    assert (after.status, after.step, after.rounds_completed) == (
        SessionStatus.STARTED,
        SessionStep.REDUCING,
        0,
    )
    assert (current.status, current.model_id) == (RoundStatus.PENDING, None)
    assert after.lease_token == THIEF
    assert Status.objects.count() == events_before


@pytest.mark.django_db(transaction=True)
def test_a_starting_step_without_its_lease_sends_no_start() -> None:
    session = running_session(step=SessionStep.STARTING)
    with fake_combiners({"north": (["c1"], 0.0)}) as fakes:
        with_round(session, ["north"])
        steal(session)
        with pytest.raises(leases.LeaseLost):
            orchestration.run_step(Session.objects.get(pk=session.pk), "the-old-token")
        assert fakes["north"].starts == []
    assert Session.objects.get(pk=session.pk).step == SessionStep.STARTING


@pytest.mark.django_db(transaction=True)
def test_a_failing_step_that_lost_its_lease_does_not_fail_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = running_session(step=SessionStep.NEXT_ROUND)

    def broken(*args: Any) -> None:
        steal(session)
        raise RuntimeError("boom")

    monkeypatch.setattr(orchestration, "probe_online", broken)
    assert orchestration.session_advance(session_pk=session.pk) is None
    after = Session.objects.get(pk=session.pk)
    assert (after.status, after.lease_token) == (SessionStatus.STARTED, THIEF)


# ---------------------------------------------------------------- parallel calls

SLOW = 6
DEADLINE = 1.0


@pytest.mark.django_db
def test_slow_combiners_are_probed_in_parallel_within_about_one_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(combiner_calls, "GRPC_TIMEOUT", DEADLINE)
    seed_free = running_session(step=SessionStep.NEXT_ROUND)
    specs = {f"slow-{i}": (["c"], 4 * DEADLINE) for i in range(SLOW)}
    specs["quick"] = (["c1", "c2"], 0.0)
    with fake_combiners(specs) as fakes:
        Session.objects.filter(pk=seed_free.pk).update(model_id=None)
        started = time.monotonic()
        counts = orchestration.probe_online(orchestration.Combiner.objects.all())
        elapsed = time.monotonic() - started
        # One after the other they would take SLOW deadlines; together, one (plus thread start).
        assert elapsed < 2 * DEADLINE, elapsed
        assert counts == {"quick": 2, **{f"slow-{i}": None for i in range(SLOW)}}

        starts = time.monotonic()
        answers = combiner_calls.call_combiners(
            orchestration.Combiner.objects.all(),
            lambda c: combiner_calls.combiner_client(c).start({"k": "v"}),
        )
        assert time.monotonic() - starts < 2 * DEADLINE
        assert [name for name, a in answers.items() if not isinstance(a, Exception)] == ["quick"]
        assert fakes["quick"].starts == [{"k": "v"}]
    print(f"\nprobe of {SLOW} slow combiners + 1 quick: {elapsed:.2f} s (deadline {DEADLINE:g} s)")


@pytest.mark.django_db
def test_a_next_round_step_with_slow_combiners_picks_the_quick_one_within_a_deadline(
    fs_storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(combiner_calls, "GRPC_TIMEOUT", DEADLINE)
    seed = upload_seed()
    session = running_session(step=SessionStep.NEXT_ROUND, seed=seed)
    specs = {f"slow-{i}": (["c"], 4 * DEADLINE) for i in range(SLOW)}
    specs["quick"] = (["c1"], 0.0)
    with fake_combiners(specs) as fakes:
        started = time.monotonic()
        assert orchestration.session_advance(session_pk=session.pk) == 0.0
        elapsed = time.monotonic() - started
        assert elapsed < 2 * DEADLINE, elapsed
        session.refresh_from_db()
        assert session.step == SessionStep.STARTING
        assert session.current_round is not None
        assert session.current_round.round_data["participants"] == ["quick"]

        assert orchestration.session_advance(session_pk=session.pk) == orchestration.POLL_SECONDS
        assert [start["round_id"] for start in fakes["quick"].starts] == [session.current_round.round_id]
        assert fakes["quick"].starts[0]["round_attempt"] == "0"


# ---------------------------------------------------------------- task limits


def test_each_session_task_is_stopped_before_its_lease_lapses() -> None:
    step, reduce = steps.session_advance, steps.session_reduce
    assert step.soft_time_limit < step.time_limit <= leases.LEASE.total_seconds()
    assert reduce.soft_time_limit < reduce.time_limit <= leases.REDUCE_LEASE.total_seconds()
    # The reduce may take longer than the global default and than a step's lease.
    assert reduce.soft_time_limit > max(settings.CELERY_TASK_SOFT_TIME_LIMIT, leases.LEASE.total_seconds())


@pytest.mark.django_db
def test_a_session_waiting_for_its_reduce_is_handed_to_the_reduce_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, float]] = []
    for task in (steps.session_advance, steps.session_reduce):
        monkeypatch.setattr(
            task,
            "apply_async",
            lambda args, kwargs=None, countdown=None, name=task.name: sent.append((name, countdown)),
        )
    session = running_session(step=SessionStep.REDUCING)
    # The short step task neither claims nor reduces: it passes the session on.
    assert orchestration.session_advance(session_pk=session.pk, reduce_here=False) == 0.0
    assert Session.objects.get(pk=session.pk).lease_token == ""
    steps.enqueue_step(session.pk, 0.0)
    Session.objects.filter(pk=session.pk).update(step=SessionStep.TRAINING)
    steps.enqueue_step(session.pk, 1.0)
    steps.enqueue_step(session.pk, None)
    assert sent == [("fl_sessions.session_reduce", 0.0), ("fl_sessions.session_advance", 1.0)]
