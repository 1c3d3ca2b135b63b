"""Round durations: every write moves a round's updated_at, and a round records when it started and
ended, so the session page says how long each round took."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.sessions import orchestration
from apps.sessions.admin_display import round_took
from apps.sessions.choices import ACTIVE_SESSION_STATUSES, RoundStatus, SessionStatus, SessionStep
from apps.sessions.models import Round
from apps.sessions.services import session_start_legacy
from apps.sessions.tests.test_orchestration import (  # noqa: F401 (fixtures)
    STEP_DEADLINE,
    answer_training,
    combiner,
    drive,
    driven_here,
    make_client,
    running_session,
    upload_package,
    upload_seed,
    with_round,
)
from combiner_node.node import CombinerNode
from combiner_node.tests.conftest import TestClient


@pytest.mark.django_db
def test_a_partial_save_moves_updated_at() -> None:
    current = with_round(running_session(step=SessionStep.TRAINING), ["north"])
    before = Round.objects.get(pk=current.pk).updated_at
    current.round_data = {**current.round_data, "lost": []}
    current.save(update_fields=["round_data"])
    assert Round.objects.get(pk=current.pk).updated_at > before


@pytest.mark.django_db
def test_a_failed_session_ends_its_running_round_with_the_time() -> None:
    session = running_session(step=SessionStep.TRAINING)
    current = with_round(session, ["north"])
    Round.objects.filter(pk=current.pk).update(started_at=timezone.now())
    orchestration.session_fail(session, "gone")
    ended = Round.objects.get(pk=current.pk)
    assert ended.status == RoundStatus.FAILED
    assert ended.finished_at is not None and ended.updated_at == ended.finished_at
    assert ended.duration is not None and ended.duration.total_seconds() > 0


def test_a_driven_round_records_its_start_and_commit_and_the_session_page_shows_them(
    combiner: CombinerNode,  # noqa: F811
    make_client: Callable[[str], TestClient],  # noqa: F811
    fs_storage: Any,
    tmp_path: Path,
    driven_here: None,  # noqa: F811
    admin_client: HttpClient,
) -> None:
    upload_package()
    upload_seed()
    client = make_client("client-1")
    deadline = time.monotonic() + STEP_DEADLINE
    while not Client.objects.filter(name="client-1", status=ClientStatus.ONLINE).exists():
        assert time.monotonic() < deadline, "the combiner never reported its client"
        time.sleep(0.05)
    session = session_start_legacy(
        {"session_id": "timed", "rounds": 1, "round_timeout": 10, "min_clients": 1, "validate": False}
    )
    before = timezone.now()

    done = drive(
        session,
        lambda s: s.status not in ACTIVE_SESSION_STATUSES,
        answer_training(client, 2.0, 10, tmp_path),
    )
    assert done.status == SessionStatus.FINISHED, done.status_reason
    (only,) = Round.objects.filter(session=done)
    assert only.started_at is not None and only.finished_at is not None
    assert before <= only.started_at < only.finished_at <= timezone.now()
    assert only.created_at <= only.started_at
    assert only.updated_at >= only.finished_at
    took = only.duration
    assert took is not None and took.total_seconds() > 0
    assert took == only.finished_at - only.started_at

    page = admin_client.get(reverse("admin:fl_sessions_session_change", args=[done.pk]))
    assert page.status_code == 200
    rows = page.content.decode().split('id="fp-session-rounds"', 1)[1]
    assert f"<td>{round_took(only)}</td>" in rows
    assert round_took(only) == f"{took.total_seconds():.1f} s"
