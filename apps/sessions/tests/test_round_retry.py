"""Rounds that survive a lost combiner: completed with the combiners that reported when they made
enough updates, else retried under the same number with a fresh deadline, and failed only when
`round_retries` are spent. Combiners here are real gRPC servers (or a port nothing listens on)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from apps.models.models import Model
from apps.sessions import orchestration
from apps.sessions.api.serializers import RoundSerializer
from apps.sessions.choices import LogLevel, RoundStatus, SessionStatus, SessionStep
from apps.sessions.ingestion import round_record_report
from apps.sessions.models import Round, Session, Status
from apps.sessions.services import SessionError
from apps.sessions.tests.fake_combiners import fake_combiners, unreachable_combiner
from apps.sessions.tests.test_orchestration import npz_bytes, past, running_session, upload_seed, with_round
from controlplane import artifacts


def stored_model(tmp_path: Path, value: float) -> str:
    """A combiner's combined model in the artifact store; returns its id."""
    model_id = str(uuid.uuid4())
    local = tmp_path / f"{model_id}.npz"
    local.write_bytes(npz_bytes(value))
    artifacts.save(orchestration.artifact_key(model_id), local)
    return model_id


def report(current: Round, combiner: str, attempt: int, model_id: str, clients: list[str]) -> None:
    round_record_report(
        round=Round.objects.get(pk=current.pk),
        report={
            "combiner": combiner,
            "status": "Success",
            "model_id": model_id,
            "num_examples": 10 * len(clients),
            "participants": clients,
            "config": {"round_id": current.round_id, "round_attempt": str(attempt)},
        },
    )


def training_round(seed: Model, participants: list[str], **config: Any) -> tuple[Session, Round]:
    session = running_session(step=SessionStep.TRAINING, seed=seed, validate=False, **config)
    current = with_round(session, participants)
    current.round_config = {**current.round_config, "model_id": str(seed.model_id)}
    current.save(update_fields=["round_config"])
    return session, current


def events(session: Session) -> list[str]:
    return list(
        Status.objects.filter(session_id=session.session_id).order_by("id").values_list("status", flat=True)
    )


@pytest.mark.django_db
def test_a_round_whose_combiner_died_with_too_few_updates_is_retried_under_its_number(
    fs_storage: Any, tmp_path: Path, admin_client: HttpClient
) -> None:
    seed = upload_seed()
    unreachable_combiner("south")
    with fake_combiners({"north": (["c1", "c2"], 0.0)}) as fakes:
        session, current = training_round(seed, ["north", "south"], clients_required=2)
        first_deadline = Session.objects.get(pk=session.pk).step_deadline
        # north folded one update and reported; south died with the rest.
        report(current, "north", 0, stored_model(tmp_path, 1.0), ["c1"])

        assert orchestration.session_advance(session_pk=session.pk) == 0.0
        session.refresh_from_db()
        current.refresh_from_db()
        assert (session.status, session.step) == (SessionStatus.STARTED, SessionStep.NEXT_ROUND)
        assert (current.status, current.attempt) == (RoundStatus.PENDING, 1)
        (ended,) = current.round_data["attempts"]
        assert ended["lost"] == ["south"] and ended["participants"] == ["north", "south"]
        assert "Only 1 update(s) arrived" in ended["reason"] and "south: lost mid-round" in ended["reason"]
        assert any(f"Round {current.round_id} retry 1 of 1" in text for text in events(session))
        assert Status.objects.filter(status__contains="retry 1 of 1", log_level=LogLevel.WARNING).exists()

        # A late report of the ended attempt does not count towards the retry.
        with pytest.raises(SessionError, match="attempt 0"):
            report(current, "south", 0, stored_model(tmp_path, 9.0), ["c3"])

        # The retry picks the combiner with enough clients, keeps the number, and gets a fresh deadline.
        assert orchestration.session_advance(session_pk=session.pk) == 0.0
        session.refresh_from_db()
        assert session.step == SessionStep.STARTING and session.current_round_id == current.pk
        assert session.step_deadline is not None and first_deadline is not None
        assert session.step_deadline > first_deadline
        assert orchestration.session_advance(session_pk=session.pk) == orchestration.POLL_SECONDS
        (start,) = fakes["north"].starts
        assert (start["round_id"], start["round_attempt"]) == (current.round_id, "1")

        retried_model = stored_model(tmp_path, 4.0)
        report(current, "north", 1, retried_model, ["c1", "c2"])
        done = session
        for _ in range(5):
            if orchestration.session_advance(session_pk=session.pk) is None:
                break
        done.refresh_from_db()

    assert done.status == SessionStatus.FINISHED, done.status_reason
    (only,) = Round.objects.filter(session=done)
    assert (only.number, only.status, only.attempt, only.model_id) == (
        current.number,
        RoundStatus.FINISHED,
        1,
        retried_model,
    )
    committed = Model.objects.filter(session_id=done.session_id)
    assert [str(m.model_id) for m in committed] == [retried_model]
    assert committed[0].parent_id == seed.model_id
    doc = RoundSerializer(only).data
    assert doc["retries"] == 1
    assert [(c["name"], c["model_id"]) for c in doc["combiners"]] == [("north", retried_model)]
    assert any("after 1 retry" in text for text in events(done))

    page = admin_client.get(reverse("admin:fl_sessions_round_change", args=[only.pk]))
    assert page.status_code == 200
    assert "south: lost mid-round" in page.content.decode()


@pytest.mark.django_db
def test_a_lost_combiner_is_left_out_when_the_others_made_enough_updates(
    fs_storage: Any, tmp_path: Path
) -> None:
    seed = upload_seed()
    unreachable_combiner("south")
    with fake_combiners({"north": (["c1"], 0.0)}):
        session, current = training_round(seed, ["north", "south"], clients_required=1)
        made = stored_model(tmp_path, 2.0)
        report(current, "north", 0, made, ["c1"])
        assert orchestration.session_advance(session_pk=session.pk) == 0.0
        session.refresh_from_db()
        assert session.step == SessionStep.REDUCING
        assert orchestration.session_advance(session_pk=session.pk) == 0.0
    current.refresh_from_db()
    assert (current.status, current.attempt, current.model_id) == (RoundStatus.FINISHED, 0, made)
    assert current.status_reason == "No report from: south"
    assert current.round_data["lost"] == ["south"]


@pytest.mark.django_db
def test_the_session_fails_when_the_retries_are_spent(fs_storage: Any) -> None:
    seed = upload_seed()
    unreachable_combiner("south")
    session, current = training_round(seed, ["south"], round_retries=1)
    Round.objects.filter(pk=current.pk).update(attempt=1)

    assert orchestration.session_advance(session_pk=session.pk) == 0.0
    session.refresh_from_db()
    current.refresh_from_db()
    assert session.status == SessionStatus.FAILED
    assert current.status == RoundStatus.FAILED
    assert "south: lost mid-round" in current.status_reason
    assert current.status_reason.endswith("(after 1 retry)")
    assert session.status_reason == f"Round {current.round_id} failed: {current.status_reason}"


@pytest.mark.django_db
def test_a_retry_no_combiner_comes_back_for_fails_at_its_deadline(fs_storage: Any) -> None:
    seed = upload_seed()
    unreachable_combiner("south")
    session, current = training_round(seed, ["south"], round_retries=2)
    assert orchestration.session_advance(session_pk=session.pk) == 0.0
    session.refresh_from_db()
    assert session.step == SessionStep.NEXT_ROUND
    # Nobody is back yet: the retry waits, within its deadline.
    assert orchestration.session_advance(session_pk=session.pk) == orchestration.POLL_SECONDS * 2
    Session.objects.filter(pk=session.pk).update(step_deadline=past())
    assert orchestration.session_advance(session_pk=session.pk) is None
    session.refresh_from_db()
    current.refresh_from_db()
    assert session.status == SessionStatus.FAILED
    assert current.status == RoundStatus.FAILED
    assert current.status_reason.startswith("Retry 1 of 2: No combiner produced a model.")
    assert "Retry not started: No combiner had 1 online client(s) within 10 s." in current.status_reason
    assert Round.objects.count() == 1


@pytest.mark.django_db
def test_a_silent_combiner_past_the_deadline_is_retried_not_failed(fs_storage: Any) -> None:
    seed = upload_seed()
    session, current = training_round(seed, ["quiet"])
    Session.objects.filter(pk=session.pk).update(step_deadline=timezone.now() - dt.timedelta(seconds=1))
    assert orchestration.session_advance(session_pk=session.pk) == 0.0
    current.refresh_from_db()
    assert current.attempt == 1
    assert "quiet: no report before the deadline" in current.round_data["attempts"][0]["reason"]
