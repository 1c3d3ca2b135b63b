"""The session state machine: leases, preconditions, deadlines, stop, the watchdog, and a whole round
against a real in-process combiner node that reports to a live controller."""

from __future__ import annotations

import datetime as dt
import io
import queue
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.combiners.models import Combiner
from apps.combiners.services import combiner_register
from apps.models.models import Model
from apps.models.services import model_create_seed
from apps.packages.services import package_create
from apps.sessions import leases, orchestration, steps
from apps.sessions.choices import (
    ACTIVE_SESSION_STATUSES,
    ControllerStateValue,
    RoundStatus,
    SessionStatus,
    SessionStep,
)
from apps.sessions.models import CombinerReport, Round, Session
from apps.sessions.records import controller_state, round_create, session_config
from apps.sessions.services import (
    PreconditionFailed,
    session_create,
    session_start_legacy,
    session_stop,
)
from combiner_node.node import CombinerNode, NodeSettings
from combiner_node.store import DirectoryStore
from combiner_node.tests.conftest import TestClient, load_model
from tests.api.factories import package_bytes

SHAPES = [(3, 2), (2,)]
STEP_DEADLINE = 20.0


def npz_bytes(value: float) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{str(i): np.full(shape, value) for i, shape in enumerate(SHAPES)})
    return buffer.getvalue()


def upload_package() -> None:
    package_create(upload=SimpleUploadedFile("package.tgz", package_bytes()), helper="numpyhelper")


def upload_seed() -> Model:
    return model_create_seed(upload=SimpleUploadedFile("seed.npz", npz_bytes(0.0)))


def online_client(name: str, combiner: Combiner | None = None) -> Client:
    return Client.objects.create(
        name=name, combiner=combiner, status=ClientStatus.ONLINE, last_seen=timezone.now()
    )


def running_session(*, step: str, seed: Model | None = None, **config: Any) -> Session:
    """A session as the orchestration leaves it at `step` (created through the service)."""
    session = session_create(
        session_id=f"s-{uuid.uuid4().hex[:8]}",
        config={"round_timeout": 10, "rounds": 1, "clients_required": 1, **config},
    )
    session.status = SessionStatus.STARTED if step != SessionStep.PENDING else SessionStatus.INITIALIZED
    session.step = step
    session.model_id = str(seed.model_id) if seed else None
    session.step_deadline = timezone.now() + dt.timedelta(seconds=session.round_timeout)
    session.save()
    return session


def with_round(session: Session, participants: list[str]) -> Round:
    current = round_create(session=session, round_config={**session_config(session), "task": "training"})
    current.round_data = {"participants": participants}
    current.save(update_fields=["round_data"])
    session.current_round = current
    session.save(update_fields=["current_round"])
    return current


def past() -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=1)


# ---------------------------------------------------------------- claim and lease


@pytest.mark.django_db
def test_a_second_claim_fails_while_the_lease_is_live_and_succeeds_after_it_lapses() -> None:
    session = running_session(step=SessionStep.NEXT_ROUND)
    first = leases.claim(session.pk)
    assert first is not None
    assert leases.claim(session.pk) is None

    Session.objects.filter(pk=session.pk).update(lease_until=past())
    second = leases.claim(session.pk)
    assert second is not None and second != first
    # The old holder's release no longer touches the session it lost.
    leases.release(session.pk, first, delay=1.0)
    assert Session.objects.get(pk=session.pk).lease_token == second
    leases.release(session.pk, second, delay=None)
    assert leases.claim(session.pk) is not None


@pytest.mark.django_db
def test_an_ended_session_cannot_be_claimed() -> None:
    session = running_session(step=SessionStep.DONE)
    Session.objects.filter(pk=session.pk).update(status=SessionStatus.FINISHED)
    assert leases.claim(session.pk) is None
    assert orchestration.session_advance(session_pk=session.pk) is None


# ---------------------------------------------------------------- preconditions


@pytest.mark.django_db
def test_start_preconditions_are_refused_in_fedns_order_with_clear_messages(fs_storage: Any) -> None:
    body = {"session_id": "pre", "rounds": 1, "min_clients": 1}
    with pytest.raises(PreconditionFailed, match="No compute package active"):
        session_start_legacy(body)
    upload_package()
    with pytest.raises(PreconditionFailed, match="No initial model set"):
        session_start_legacy(body)
    upload_seed()
    with pytest.raises(PreconditionFailed, match="Not enough clients available"):
        session_start_legacy(body)
    online_client("c1")
    started = session_start_legacy(body)
    assert started.status == SessionStatus.INITIALIZED
    with pytest.raises(PreconditionFailed, match="Session already exists"):
        session_start_legacy(body)
    with pytest.raises(PreconditionFailed, match="A session is already running"):
        session_start_legacy({**body, "session_id": "other"})
    assert Session.objects.count() == 1


# ---------------------------------------------------------------- deadlines


@pytest.mark.django_db
def test_no_combiner_with_enough_clients_fails_the_session_after_the_deadline(fs_storage: Any) -> None:
    seed = upload_seed()
    session = running_session(step=SessionStep.PENDING, seed=seed, clients_required=2)
    assert orchestration.session_advance(session_pk=session.pk) == 0.0
    session.refresh_from_db()
    assert (session.status, session.step) == (SessionStatus.STARTED, SessionStep.NEXT_ROUND)

    # Before the deadline the step only waits; the unreachable combiner does not end the session.
    Combiner.objects.create(name="nowhere", address="127.0.0.1", port=1)
    assert orchestration.session_advance(session_pk=session.pk) == pytest.approx(2.0)
    assert Session.objects.get(pk=session.pk).status == SessionStatus.STARTED

    Session.objects.filter(pk=session.pk).update(step_deadline=past())
    assert orchestration.session_advance(session_pk=session.pk) is None
    session.refresh_from_db()
    assert session.status == SessionStatus.FAILED
    assert session.status_reason == "No combiner had 2 online client(s) within 10 s."
    assert not Round.objects.exists()
    assert controller_state().state == ControllerStateValue.IDLE


@pytest.mark.django_db
def test_combiners_silent_past_the_deadline_fail_the_round_and_name_each_one() -> None:
    # No retries: the round fails at its first deadline (retries: test_round_retry.py).
    session = running_session(step=SessionStep.TRAINING, round_retries=0)
    current = with_round(session, ["north", "south"])
    CombinerReport.objects.create(
        round=current, combiner="south", status="Failed", report={"reason": "no updates arrived"}
    )
    assert orchestration.session_advance(session_pk=session.pk) == orchestration.POLL_SECONDS

    Session.objects.filter(pk=session.pk).update(step_deadline=past())
    assert orchestration.session_advance(session_pk=session.pk) == 0.0
    session.refresh_from_db()
    current.refresh_from_db()
    assert session.status == SessionStatus.FAILED
    assert current.status == RoundStatus.FAILED
    assert "south: no updates arrived" in current.status_reason
    assert "north: no report before the deadline" in current.status_reason
    assert session.status_reason == f"Round {current.round_id} failed: {current.status_reason}"


# ---------------------------------------------------------------- stop


@pytest.mark.django_db
def test_a_stop_request_stops_the_session_at_its_next_step() -> None:
    session = running_session(step=SessionStep.TRAINING)
    current = with_round(session, ["north"])
    stopping = session_stop(session=session)
    assert stopping.status == SessionStatus.STOPPING

    assert orchestration.session_advance(session_pk=session.pk) is None
    session.refresh_from_db()
    current.refresh_from_db()
    assert (session.status, session.step) == (SessionStatus.STOPPED, SessionStep.DONE)
    assert session.status_reason == "Stopped on request."
    assert current.status == RoundStatus.STOPPED
    assert session.finished_at is not None


# ---------------------------------------------------------------- watchdog


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Tasks run in the calling thread, as a worker would run them."""
    from controlplane.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.mark.django_db
def test_the_watchdog_picks_up_an_overdue_session_and_leaves_the_others(eager_tasks: None) -> None:
    overdue = running_session(step=SessionStep.NEXT_ROUND, clients_required=3)
    Session.objects.filter(pk=overdue.pk).update(
        next_run_at=timezone.now() - dt.timedelta(seconds=30), step_deadline=past()
    )
    claimed = running_session(step=SessionStep.NEXT_ROUND)
    Session.objects.filter(pk=claimed.pk).update(
        next_run_at=timezone.now() - dt.timedelta(seconds=30),
        lease_token="x",
        lease_until=timezone.now() + dt.timedelta(seconds=30),
    )
    scheduled = running_session(step=SessionStep.NEXT_ROUND)
    Session.objects.filter(pk=scheduled.pk).update(next_run_at=timezone.now() + dt.timedelta(seconds=2))
    Session.objects.filter(pk__in=[claimed.pk, scheduled.pk]).update(status=SessionStatus.STARTED)

    assert leases.sessions_needing_a_step() == [overdue.pk]
    assert steps.sessions_watchdog() == 1
    # The resumed step ran: its deadline had passed, so the session failed with its reason.
    overdue.refresh_from_db()
    assert overdue.status == SessionStatus.FAILED
    assert "No combiner had 3 online client(s)" in overdue.status_reason
    assert Session.objects.get(pk=claimed.pk).status == SessionStatus.STARTED
    assert Session.objects.get(pk=scheduled.pk).status == SessionStatus.STARTED


# ---------------------------------------------------------------- a real combiner


@pytest.fixture
def combiner(
    live_server: Any, fs_storage: Any, tmp_path: Path, transactional_db: None
) -> Iterator[CombinerNode]:
    """A combiner node on port 0, sharing the artifact folder, reporting to the live controller."""
    node = CombinerNode(
        NodeSettings(
            name="north",
            store=DirectoryStore(Path(fs_storage.location)),
            port=0,
            controller_url=live_server.url,
            online_window=5.0,
            workdir=tmp_path / "combiner",
        )
    )
    node.start()
    combiner_register(name="north", address="127.0.0.1", port=node.port)
    yield node
    node.stop(grace=1.0)


@pytest.fixture
def driven_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Started sessions are not handed to Celery: the test runs their steps itself."""
    monkeypatch.setattr(steps.session_advance, "delay", lambda *args, **kwargs: None)


@pytest.fixture
def make_client(combiner: CombinerNode) -> Iterator[Callable[[str], TestClient]]:
    clients: list[TestClient] = []

    def make(name: str) -> TestClient:
        client = TestClient(combiner.port, name)
        client.heartbeat()
        client.open_stream()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def drive(session: Session, until: Callable[[Session], bool], on_tick: Callable[[], None]) -> Session:
    """Run the session's steps as the worker would, until `until` holds or the deadline passes."""
    deadline = time.monotonic() + STEP_DEADLINE
    while time.monotonic() < deadline:
        orchestration.session_advance(session_pk=session.pk)
        on_tick()
        session.refresh_from_db()
        if until(session):
            return session
        time.sleep(0.05)
    raise AssertionError(f"session still {session.status} at step {session.step}")


def answer_training(client: TestClient, value: float, examples: int, tmp_path: Path) -> Callable[[], None]:
    def tick() -> None:
        try:
            task = client.tasks.get_nowait()
        except queue.Empty:
            return
        layers = [np.full(shape, value) for shape in SHAPES]
        client.send_update(task, layers, examples, tmp_path)

    return tick


def test_a_round_on_a_real_combiner_commits_the_combined_model(
    combiner: CombinerNode,
    make_client: Callable[[str], TestClient],
    fs_storage: Any,
    tmp_path: Path,
    driven_here: None,
) -> None:
    upload_package()
    seed = upload_seed()
    client = make_client("client-1")
    # The combiner reports its client online to the live controller.
    deadline = time.monotonic() + STEP_DEADLINE
    while not Client.objects.filter(name="client-1", status=ClientStatus.ONLINE).exists():
        assert time.monotonic() < deadline, "the combiner never reported its client"
        time.sleep(0.05)
    session = session_start_legacy(
        {"session_id": "real", "rounds": 1, "round_timeout": 10, "min_clients": 1, "validate": False}
    )

    done = drive(
        session,
        lambda s: s.status not in ACTIVE_SESSION_STATUSES,
        answer_training(client, 3.0, 40, tmp_path),
    )
    assert done.status == SessionStatus.FINISHED, done.status_reason
    (only,) = Round.objects.filter(session=done)
    assert only.status == RoundStatus.FINISHED
    assert only.round_data["participants"] == ["north"]
    assert only.round_data["participants_clients"] == ["client-1"]
    assert only.round_data["num_examples"] == 40
    model = Model.objects.get(model_id=only.model_id)
    assert model.parent_id == seed.model_id and model.active
    combined = Path(fs_storage.path(model.artifact.name))
    assert [layer.tolist() for layer in load_model(combined)] == [
        np.full(shape, 3.0).tolist() for shape in SHAPES
    ]
    assert controller_state().state == ControllerStateValue.IDLE


def test_a_stop_mid_round_on_a_real_combiner_stops_the_session(
    combiner: CombinerNode, make_client: Callable[[str], TestClient], tmp_path: Path
) -> None:
    seed = upload_seed()
    make_client("client-1")
    session = running_session(step=SessionStep.PENDING, seed=seed)
    training = drive(session, lambda s: s.step == SessionStep.TRAINING, lambda: None)
    assert controller_state().state == ControllerStateValue.MONITORING
    session_stop(session=training)

    stopped = drive(session, lambda s: s.status not in ACTIVE_SESSION_STATUSES, lambda: None)
    assert stopped.status == SessionStatus.STOPPED
    assert Round.objects.get(session=stopped).status == RoundStatus.STOPPED
    assert controller_state().state == ControllerStateValue.IDLE
