"""Asynchronous buffered sessions (FedBuff) against a real combiner: each version committed as a
round and a model whose parent is the version before; refusals of bad settings; stop."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.models.models import Model
from apps.sessions.choices import ACTIVE_SESSION_STATUSES, RoundStatus, SessionStatus, SessionStep
from apps.sessions.models import Round
from apps.sessions.services import SessionError, clean_session_config, session_start_legacy, session_stop
from apps.sessions.tests.test_orchestration import (  # noqa: F401 (fixtures)
    STEP_DEADLINE,
    answer_training,
    combiner,
    drive,
    driven_here,
    make_client,
    upload_package,
    upload_seed,
)
from combiner_node.node import CombinerNode
from combiner_node.tests.conftest import TestClient
from fedplane.privacy.accounting import epsilon_after


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"mode": "later"}, "session_config.mode must be one of sync, async"),
        ({"fedbuff": {"buffer_size": 2}}, 'only used with "mode": "async"'),
        ({"mode": "async"}, "needs its buffer size K"),
        ({"mode": "async", "fedbuff": {"buffer_size": 0}}, "buffer_size=0 is out of range"),
        ({"mode": "async", "fedbuff": {"buffer_size": 2, "max_staleness": -1}}, "max_staleness"),
        ({"mode": "async", "fedbuff": {"buffer_size": 2, "staleness": "linear"}}, "staleness"),
        ({"mode": "async", "fedbuff": {"buffer_size": 2, "lr": 1}}, "unknown parameter(s) for fedbuff: lr"),
        ({"mode": "async", "fedbuff": [2]}, "fedbuff must be an object"),
        ({"mode": "async", "buffer_size": 2, "aggregator": "fedopt"}, "leave aggregator fedavg"),
        (
            {"mode": "async", "buffer_size": 2, "dp": {"noise_multiplier": -1, "clip_norm": 1}},
            "noise_multiplier must be",
        ),
    ],
)
def test_bad_async_settings_are_refused(config: dict, message: str) -> None:
    with pytest.raises(SessionError) as refused:
        clean_session_config(config)
    assert message in str(refused.value)


@pytest.mark.django_db
def test_async_settings_are_kept_with_k_from_the_session_buffer_size() -> None:
    cleaned = clean_session_config({"mode": "async", "buffer_size": 3, "fedbuff": {"max_staleness": 2}})
    assert cleaned["extra_config"] == {"mode": "async", "fedbuff": {"max_staleness": 2, "buffer_size": 3}}
    assert clean_session_config({"mode": "sync"})["extra_config"] == {}
    # With differential privacy, a version's expected number of updates is K.
    private = clean_session_config(
        {"mode": "async", "buffer_size": 3, "dp": {"noise_multiplier": 1.0, "clip_norm": 1.0}}
    )
    assert private["extra_config"]["dp"]["expected_clients"] == 3


def online(*names: str) -> None:
    deadline = time.monotonic() + STEP_DEADLINE
    while Client.objects.filter(name__in=names, status=ClientStatus.ONLINE).count() < len(names):
        assert time.monotonic() < deadline, "the combiner never reported its clients"
        time.sleep(0.05)


def test_each_version_is_committed_as_a_round_and_a_model_of_the_session(
    combiner: CombinerNode,  # noqa: F811
    make_client: Callable[[str], TestClient],  # noqa: F811
    tmp_path: Path,
    driven_here: None,  # noqa: F811
) -> None:
    upload_package()
    seed = upload_seed()
    clients = [make_client("client-1"), make_client("client-2")]
    online("client-1", "client-2")
    session = session_start_legacy(
        {
            "session_id": "async",
            "rounds": 4,
            "round_timeout": 10,
            "min_clients": 1,
            "validate": False,
            "mode": "async",
            "fedbuff": {"buffer_size": 1, "max_staleness": 3},
        }
    )
    ticks = [answer_training(client, 1.0 + i, 10, tmp_path) for i, client in enumerate(clients)]

    def tick() -> None:
        for answer in ticks:
            try:
                answer()
            except grpc.RpcError as exc:
                # A task handed out as the last version was made: its upload is no longer wanted.
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc

    done = drive(session, lambda s: s.status not in ACTIVE_SESSION_STATUSES, tick)
    assert done.status == SessionStatus.FINISHED, done.status_reason
    assert done.rounds_completed == 4
    rounds = list(Round.objects.filter(session=done).order_by("number"))
    assert [r.status for r in rounds] == [RoundStatus.FINISHED] * 4
    assert [r.round_data["version"] for r in rounds] == [1, 2, 3, 4]
    parent = seed.model_id
    for item in rounds:
        model = Model.objects.get(model_id=item.model_id)
        assert model.parent_id == parent and model.session_id == "async"
        assert len(item.round_data["participants_clients"]) == 1
        assert item.round_data["staleness"][0] >= 0
        parent = model.model_id
    assert Model.objects.get(model_id=parent).active


def test_a_stopped_async_session_stops_its_open_rounds(
    combiner: CombinerNode,  # noqa: F811
    make_client: Callable[[str], TestClient],  # noqa: F811
    driven_here: None,  # noqa: F811
    fs_storage: Any,
) -> None:
    upload_package()
    upload_seed()
    make_client("client-1")
    online("client-1")
    session = session_start_legacy(
        {
            "session_id": "async-stop",
            "rounds": 3,
            "round_timeout": 10,
            "mode": "async",
            "round_buffer_size": 2,
        }
    )
    training = drive(session, lambda s: s.step == SessionStep.TRAINING, lambda: None)
    session_stop(session=training)
    stopped = drive(session, lambda s: s.status not in ACTIVE_SESSION_STATUSES, lambda: None)
    assert stopped.status == SessionStatus.STOPPED
    assert [r.status for r in Round.objects.filter(session=stopped)] == [RoundStatus.STOPPED] * 3


@pytest.mark.django_db
def test_the_admin_form_creates_an_async_session(admin_client: Any) -> None:
    from django.urls import reverse

    from apps.sessions.models import Session

    form = {
        "new_session_id": "async-admin",
        "aggregator": "fedavg",
        "aggregator_kwargs": "null",
        "rounds": 6,
        "round_timeout": 60,
        "buffer_size": 3,
        "clients_required": 1,
        "clients_requested": 8,
        "helper_type": "numpyhelper",
        "model_id": "",
        "mode": "async",
        "fedbuff": '{"max_staleness": 2}',
    }
    add = reverse("admin:fl_sessions_session_add")
    refused = admin_client.post(add, {**form, "fedbuff": '{"max_staleness": -2}'})
    assert "max_staleness" in refused.content.decode()
    assert admin_client.post(add, form, follow=True).status_code == 200
    session = Session.objects.get(session_id="async-admin")
    assert session.extra_config == {"mode": "async", "fedbuff": {"max_staleness": 2, "buffer_size": 3}}


def test_an_async_dp_session_books_each_version_and_stops_within_its_target(
    combiner: CombinerNode,  # noqa: F811
    make_client: Callable[[str], TestClient],  # noqa: F811
    tmp_path: Path,
    driven_here: None,  # noqa: F811
) -> None:
    def epsilon(versions: int) -> float:
        return epsilon_after(versions, sampling_rate=1.0, noise_multiplier=2.0, delta=1e-5)

    upload_package()
    upload_seed()
    client = make_client("client-1")
    online("client-1")
    target = (epsilon(2) + epsilon(3)) / 2
    session = session_start_legacy(
        {
            "session_id": "async-dp",
            "rounds": 5,
            "round_timeout": 10,
            "validate": False,
            "mode": "async",
            "fedbuff": {"buffer_size": 1},
            "dp": {"noise_multiplier": 2.0, "clip_norm": 1.0, "target_epsilon": target},
        }
    )
    answer = answer_training(client, 1.0, 10, tmp_path)

    def tick() -> None:
        try:
            answer()
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc

    done = drive(session, lambda s: s.status not in ACTIVE_SESSION_STATUSES, tick)
    assert done.status == SessionStatus.STOPPED, done.status_reason
    assert done.status_reason.startswith("Privacy budget reached")
    rounds = list(Round.objects.filter(session=done).order_by("number"))
    # Only the versions the budget allows were asked of the combiner.
    assert [r.status for r in rounds] == [RoundStatus.FINISHED] * 2
    assert [r.round_data["privacy"]["epsilon"] for r in rounds] == pytest.approx([epsilon(1), epsilon(2)])
    assert all(r.round_data["privacy"]["clip_norm"] == 1.0 for r in rounds)
