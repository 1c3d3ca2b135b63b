"""A round's validations hold up only the end of the session, not the next round."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from apps.sessions import orchestration, steps
from apps.sessions.choices import RoundStatus, SessionStep
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
def test_a_round_before_the_last_goes_on_once_its_validations_are_asked_for(
    fs_storage: Any, tmp_path: Path
) -> None:
    session, starts = reduce_with_validation(tmp_path, rounds=2)
    assert [start["task"] for start in starts] == ["validation"]
    assert starts[0]["model_id"] == session.current_round.model_id
    assert session.step == SessionStep.NEXT_ROUND
    assert session.current_round.status == RoundStatus.FINISHED
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
