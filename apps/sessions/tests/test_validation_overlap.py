"""A round's validations hold up only the end of the session, not the next round; an earlier
round's are asked for by the next round's start, just before its training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from apps.sessions import orchestration, steps
from apps.sessions.choices import RoundStatus, SessionStatus, SessionStep
from apps.sessions.models import Session
from apps.sessions.tests.fake_combiners import fake_combiners
from apps.sessions.tests.test_orchestration import npz_bytes
from apps.sessions.tests.test_reduce_checks import reducing_session


def reduce_with_validation(tmp_path: Path, *, rounds: int) -> tuple[Session, list[dict[str, str]]]:
    with fake_combiners({"north": (["c1"], 0.0)}) as fakes:
        session = reducing_session(tmp_path, {"north": npz_bytes(1.0)})
        Session.objects.filter(pk=session.pk).update(validate=True, rounds=rounds)
        assert orchestration.session_advance(session_pk=session.pk) == 0.0
        starts = fakes["north"].starts
    session.refresh_from_db()
    return session, starts


@pytest.mark.django_db(transaction=True)
def test_a_round_before_the_last_goes_on_and_leaves_its_validation_to_the_next_start(
    fs_storage: Any, tmp_path: Path
) -> None:
    session, starts = reduce_with_validation(tmp_path, rounds=2)
    assert starts == []
    assert session.step == SessionStep.NEXT_ROUND
    assert session.current_round.status == RoundStatus.FINISHED
    assert session.current_round.round_data["validation"] == {"pending": ["north"]}


@pytest.mark.django_db(transaction=True)
def test_the_next_start_asks_for_the_validation_just_before_the_training_on_each_combiner(
    fs_storage: Any, tmp_path: Path
) -> None:
    with fake_combiners({"north": (["c1"], 0.0), "south": (["c2"], 0.0)}) as fakes:
        session = reducing_session(tmp_path, {"north": npz_bytes(1.0), "south": npz_bytes(3.0)})
        Session.objects.filter(pk=session.pk).update(validate=True, rounds=2)
        for step in (SessionStep.NEXT_ROUND, SessionStep.STARTING, SessionStep.TRAINING):
            assert orchestration.session_advance(session_pk=session.pk) is not None
            session.refresh_from_db()
            assert session.step == step
        committed = session.round_set.get(number=1)
        for fake in fakes.values():
            assert [(start["task"], start["model_id"]) for start in fake.starts] == [
                ("validation", committed.model_id),
                ("training", committed.model_id),
            ]
    assert committed.round_data["validation"] == {"combiners": ["north", "south"], "expected": 0}
    assert session.current_round.number == 2


@pytest.mark.django_db(transaction=True)
def test_a_pending_validation_goes_out_when_no_round_can_start(fs_storage: Any, tmp_path: Path) -> None:
    with fake_combiners({"north": (["c1"], 0.0)}) as fakes:
        session = reducing_session(tmp_path, {"north": npz_bytes(1.0)})
        Session.objects.filter(pk=session.pk).update(validate=True, rounds=2)
        orchestration.session_advance(session_pk=session.pk)
        Session.objects.filter(pk=session.pk).update(clients_required=2)
        # One client online, two required: the next round waits, the validation does not.
        assert orchestration.session_advance(session_pk=session.pk) == orchestration.POLL_SECONDS * 2
        assert [start["task"] for start in fakes["north"].starts] == ["validation"]
    session.refresh_from_db()
    assert session.step == SessionStep.NEXT_ROUND
    assert session.current_round.round_data["validation"] == {"combiners": ["north"], "expected": 0}


@pytest.mark.django_db(transaction=True)
def test_a_pending_validation_goes_out_when_the_session_is_stopped(fs_storage: Any, tmp_path: Path) -> None:
    with fake_combiners({"north": (["c1"], 0.0)}) as fakes:
        session = reducing_session(tmp_path, {"north": npz_bytes(1.0)})
        Session.objects.filter(pk=session.pk).update(validate=True, rounds=2)
        orchestration.session_advance(session_pk=session.pk)
        Session.objects.filter(pk=session.pk).update(stop_requested=True)
        assert orchestration.session_advance(session_pk=session.pk) is None
        assert [start["task"] for start in fakes["north"].starts] == ["validation"]
    session.refresh_from_db()
    assert session.status == SessionStatus.STOPPED
    assert session.current_round.round_data["validation"] == {"combiners": ["north"], "expected": 0}


@pytest.mark.django_db(transaction=True)
def test_the_last_round_waits_for_its_validations(fs_storage: Any, tmp_path: Path) -> None:
    session, starts = reduce_with_validation(tmp_path, rounds=1)
    assert [start["task"] for start in starts] == ["validation"]
    assert session.step == SessionStep.VALIDATING
    assert session.current_round.status == RoundStatus.SUCCESS


@pytest.mark.django_db(transaction=True)
def test_a_stored_report_leads_one_task_through_the_reduce_to_the_next_rounds_start(
    fs_storage: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, float]] = []
    for task in (steps.session_advance, steps.session_reduce):
        monkeypatch.setattr(
            task,
            "apply_async",
            lambda args, kwargs=None, countdown=None, name=task.name: sent.append((name, countdown)),
        )
    with fake_combiners({"north": (["c1"], 0.0)}) as fakes:
        session = reducing_session(tmp_path, {"north": npz_bytes(1.0)})
        Session.objects.filter(pk=session.pk).update(step=SessionStep.TRAINING, validate=True, rounds=2)
        session.refresh_from_db()
        session.current_round.round_data = {**session.current_round.round_data, "participants": ["north"]}
        session.current_round.save()
        steps.session_reduce(session.pk, wake=session.wake_token)
        assert [start["task"] for start in fakes["north"].starts] == ["validation", "training"]
    session.refresh_from_db()
    assert session.step == SessionStep.TRAINING and session.current_round.number == 2
    assert sent == [("fl_sessions.session_advance", orchestration.POLL_SECONDS)]
