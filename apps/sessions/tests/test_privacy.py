"""A session with central differential privacy on a real combiner: ε booked round by round, shown in
the session's document and admin page, and the session stopping before a round would exceed its target."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.sessions.admin_overview import lineage_facts, privacy_summary
from apps.sessions.api.serializers import session_doc
from apps.sessions.choices import ACTIVE_SESSION_STATUSES, RoundStatus, SessionStatus
from apps.sessions.models import Round, Session
from apps.sessions.services import SessionError, clean_session_config, session_start_legacy
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

Z = 2.0


def epsilon(rounds: int) -> float:
    return epsilon_after(rounds, sampling_rate=1.0, noise_multiplier=Z, delta=1e-5)


@pytest.mark.django_db
def test_clean_session_config_keeps_dp_in_extra_config_and_refuses_bad_values() -> None:
    cleaned = clean_session_config({"rounds": 3, "dp": {"noise_multiplier": Z, "clip_norm": 1.0}})
    assert cleaned["extra_config"]["dp"]["noise_multiplier"] == Z
    assert cleaned["extra_config"]["dp"]["expected_clients"] == 8  # the model's clients_requested
    with pytest.raises(SessionError, match="clip_norm must be"):
        clean_session_config({"dp": {"noise_multiplier": Z, "clip_norm": "big"}})


def test_a_dp_session_books_epsilon_per_round_and_stops_at_its_target(
    combiner: CombinerNode,  # noqa: F811
    make_client: Callable[[str], TestClient],  # noqa: F811
    fs_storage: Any,
    tmp_path: Path,
    driven_here: None,  # noqa: F811
) -> None:
    upload_package()
    upload_seed()
    client = make_client("client-1")
    deadline = time.monotonic() + STEP_DEADLINE
    while not Client.objects.filter(name="client-1", status=ClientStatus.ONLINE).exists():
        assert time.monotonic() < deadline, "the combiner never reported its client"
        time.sleep(0.05)
    target = (epsilon(2) + epsilon(3)) / 2  # two rounds fit, a third would not
    dp = {"noise_multiplier": Z, "clip_norm": 1.0, "expected_clients": 1, "target_epsilon": target}
    session = session_start_legacy(
        {"session_id": "dp", "rounds": 5, "round_timeout": 10, "min_clients": 1, "validate": False, "dp": dp}
    )

    done = drive(
        session,
        lambda s: s.status not in ACTIVE_SESSION_STATUSES,
        answer_training(client, 3.0, 40, tmp_path),
    )
    assert done.status == SessionStatus.STOPPED, done.status_reason
    assert done.status_reason.startswith("Privacy budget reached: another round would bring ε to ")
    assert f"target ε={target:g}" in done.status_reason
    rounds = list(Round.objects.filter(session=done).order_by("number"))
    assert [r.status for r in rounds] == [RoundStatus.FINISHED, RoundStatus.FINISHED]
    booked = [r.round_data["privacy"] for r in rounds]
    assert [b["epsilon"] for b in booked] == pytest.approx([epsilon(1), epsilon(2)])
    assert booked[0]["epsilon"] < booked[1]["epsilon"] <= target
    assert [b["releases"] for b in booked] == [1, 2]
    assert all(b["clip_norm"] == 1.0 and b["delta"] == 1e-5 and b["noise_multiplier"] == Z for b in booked)
    # The combiner says what its release was made of.
    report = rounds[0].reports.get()
    assert report.report["data"]["dp"]["noise_std"] == pytest.approx(Z * 1.0)

    doc = session_doc(done)
    assert doc["privacy"]["epsilon"] == pytest.approx(epsilon(2))
    assert doc["privacy"]["rounds"] == 2
    assert doc["session_config"]["dp"]["target_epsilon"] == target
    page = str(privacy_summary(done))
    assert f"ε = {epsilon(2):.4g}" in page and f"{epsilon(1):.4g}" in page
    # The model page's lineage labels each model with the ε spent up to its round.
    labels = lineage_facts([r.model_id for r in rounds])
    assert [labels[r.model_id].origin for r in rounds] == [
        f"dp · round {r.number} · ε {epsilon(i + 1):.4g}" for i, r in enumerate(rounds)
    ]


@pytest.mark.django_db
def test_the_admin_form_takes_dp_and_the_session_page_shows_the_privacy_spent(admin_client: Any) -> None:
    form = {
        "new_session_id": "dp-admin",
        "aggregator": "fedavg",
        "aggregator_kwargs": "null",
        "rounds": 4,
        "round_timeout": 60,
        "buffer_size": -1,
        "clients_required": 1,
        "clients_requested": 8,
        "validate": "on",
        "helper_type": "numpyhelper",
        "model_id": "",
    }
    add = reverse("admin:fl_sessions_session_add")
    refused = admin_client.post(add, {**form, "dp": '{"noise_multiplier": -1, "clip_norm": 1}'})
    assert "noise_multiplier must be" in refused.content.decode()
    dp = '{"noise_multiplier": 2, "clip_norm": 0.5, "target_epsilon": 40}'
    assert admin_client.post(add, {**form, "dp": dp}, follow=True).status_code == 200
    session = Session.objects.get(session_id="dp-admin")
    assert session.extra_config["dp"]["clip_norm"] == 0.5
    page = admin_client.get(reverse("admin:fl_sessions_session_change", args=[session.pk])).content.decode()
    assert "Differential privacy" in page
    assert "<strong>ε = 0</strong> at δ = 1e-05 of target ε = 40 after 0 round(s)" in page
    assert "clip norm C = 0.5" in page
