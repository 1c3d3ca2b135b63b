"""The session admin: rounds, events and validations as an operator sees them; start/stop actions;
the session page's rounds table and metrics chart; the index dashboard."""

import json
import uuid
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.combiners.models import Combiner
from apps.models.models import Model
from apps.models.tests.test_admin import make_seed
from apps.packages.models import ComputePackage
from apps.packages.tests.test_admin import make_package, package_archive
from apps.sessions.choices import ControllerStateValue, LogLevel, RoundStatus, SessionStatus, StatusType
from apps.sessions.metrics import session_metrics
from apps.sessions.models import CombinerReport, ControllerState, Round, Session, Status, Validation
from apps.sessions.records import federation_holds_sync
from controlplane.admin_charts import line_chart

pytestmark = pytest.mark.django_db


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:fl_sessions_{name}", args=args)


def validation(
    model_id: str, metrics: dict[str, Any] | str, sender: str = "c1", session_id: str = ""
) -> None:
    Validation.objects.create(
        sender_name=sender,
        receiver_name="north",
        model_id=model_id,
        data=metrics if isinstance(metrics, str) else json.dumps(metrics),
        timestamp=timezone.now(),
        session_id=session_id,
    )


def build_finished_session() -> Session:
    """Three rounds, each with a combiner report and two clients' validations of its model."""
    session = Session.objects.create(
        session_id="digits-run",
        status=SessionStatus.FINISHED,
        rounds=3,
        rounds_completed=3,
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )
    accuracy = {1: (0.5, 0.7), 2: (0.8, 0.8), 3: (0.85, 0.95)}
    for number in (1, 2, 3):
        model_id = str(uuid.uuid4())
        round_ = Round.objects.create(
            number=number,
            round_id=str(number),
            session=session,
            status=RoundStatus.SUCCESS,
            model_id=model_id,
            round_config={"round_id": str(number), "aggregator": "fedavg"},
        )
        CombinerReport.objects.create(
            round=round_, combiner="north", model_id=str(uuid.uuid4()), num_examples=100, report={"k": number}
        )
        for sender, value in zip(("c1", "c2"), accuracy[number], strict=True):
            metrics = {"test_accuracy": value, "test_loss": 1 - value, "training_accuracy": value + 0.04}
            validation(model_id, metrics, sender=sender, session_id=session.session_id)
    # A round still running has no model and no point on the chart.
    Round.objects.create(number=4, round_id="4", session=session, status=RoundStatus.PENDING)
    Status.objects.create(
        sender_name="controller",
        status="Session digits-run finished",
        log_level=LogLevel.INFO,
        type=StatusType.LOG,
        timestamp=timezone.now(),
        session_id=session.session_id,
    )
    Status.objects.create(
        sender_name="c9",
        status="training failed",
        log_level=LogLevel.ERROR,
        type=StatusType.MODEL_UPDATE,
        timestamp=timezone.now(),
        session_id="other-run",
    )
    return session


@pytest.fixture
def finished_session() -> Session:
    return build_finished_session()


@pytest.fixture
def ready_network(fs_storage: Any) -> Combiner:
    """What a session needs to start: an active package and model, and one online client."""
    make_package("digits")
    make_seed()
    combiner = Combiner.objects.create(name="north", address="north.local", port=12080)
    Client.objects.create(name="c1", combiner=combiner, status=ClientStatus.ONLINE)
    return combiner


# ---------------------------------------------------------------- metrics and chart


def test_session_metrics_average_clients_per_model_in_round_order(finished_session: Session) -> None:
    validation("unrelated-model", {"test_accuracy": 0.01})
    first_model = Round.objects.get(number=1).model_id
    assert first_model
    validation(first_model, "not json")
    validation(first_model, json.dumps({"test_accuracy": "high", "flag": True, "test_loss": float("nan")}))
    metrics = session_metrics(finished_session)
    assert metrics.rounds == [1, 2, 3]
    assert metrics.series["test_accuracy"] == pytest.approx([0.6, 0.8, 0.9])
    assert metrics.series["test_loss"] == pytest.approx([0.4, 0.2, 0.1])
    assert "flag" not in metrics.series
    assert metrics.validation_count == 8


def test_chart_escapes_metric_names_and_says_when_empty() -> None:
    svg = str(line_chart("Accuracy", [1, 2], {"<script>x</script>": [0.1, 0.2]}, unit_interval=True))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count("<circle") == 2
    assert "no validations yet" in str(line_chart("Loss", [1], {}))


# ---------------------------------------------------------------- sessions


def test_session_changelist_shows_status_and_progress(
    admin_client: HttpClient, finished_session: Session
) -> None:
    response = admin_client.get(url("session_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "digits-run" in body
    assert '<span class="fp-badge fp-ok">Finished</span>' in body
    assert 'title="3 of 3"' in body


def test_session_page_has_rounds_table_chart_and_related_links(
    admin_client: HttpClient, finished_session: Session
) -> None:
    response = admin_client.get(url("session_change", finished_session.pk))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="fp-session-rounds"' in body and 'id="fp-session-charts"' in body
    assert body.count("<polyline") == 3  # a chart per metric
    assert all(f">{name}<" in body for name in ("test_accuracy", "test_loss", "training_accuracy"))
    assert "0.6000" in body and "0.4000" in body and "0.6400" in body  # round 1's averages
    assert body.count('class="fp-badge fp-ok">Success<') == 3
    assert '<span class="fp-badge fp-info">Pending</span>' in body
    for model in ("round", "status", "validation"):
        assert url(f"{model}_changelist") + "?session_id=digits-run" in body
    assert "6 validations" in body and "1 event<" in body
    assert 'name="_save"' not in body  # a session's record is not edited by hand


def test_session_search_and_status_filter(admin_client: HttpClient, finished_session: Session) -> None:
    Session.objects.create(session_id="fresh-run")
    body = admin_client.get(url("session_changelist"), {"q": "fresh"}).content.decode()
    assert "fresh-run" in body and "digits-run" not in body
    body = admin_client.get(url("session_changelist"), {"status__exact": "Finished"}).content.decode()
    assert "digits-run" in body and "fresh-run" not in body


def test_add_form_creates_a_session_through_the_service(admin_client: HttpClient) -> None:
    form = {
        "new_session_id": "from-admin",
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
    response = admin_client.post(url("session_add"), form, follow=True)
    assert response.status_code == 200
    session = Session.objects.get(session_id="from-admin")
    assert (session.status, session.rounds, session.model_id) == (SessionStatus.CREATED, 4, None)

    response = admin_client.post(url("session_add"), {**form, "new_session_id": "from-admin"})
    assert "Session from-admin already exists." in response.content.decode()
    response = admin_client.post(url("session_add"), {**form, "new_session_id": "x", "model_id": "nope"})
    assert "model nope not found" in response.content.decode()
    assert Session.objects.count() == 1


def test_start_action_starts_a_created_session(admin_client: HttpClient, ready_network: Combiner) -> None:
    session = Session.objects.create(session_id="to-start", clients_required=1)
    response = admin_client.post(
        url("session_changelist"), {"action": "start_sessions", "_selected_action": [session.pk]}, follow=True
    )
    session.refresh_from_db()
    assert session.status == SessionStatus.INITIALIZED
    assert session.start_requested_at is not None
    assert "Session to-start is starting." in messages_of(response)


def test_start_action_shows_why_a_session_cannot_start(
    admin_client: HttpClient, ready_network: Combiner
) -> None:
    session = Session.objects.create(session_id="too-many", clients_required=5)
    response = admin_client.post(
        url("session_changelist"), {"action": "start_sessions", "_selected_action": [session.pk]}, follow=True
    )
    session.refresh_from_db()
    assert session.status == SessionStatus.CREATED
    assert "too-many: Not enough clients available to start session." in messages_of(response)
    assert b"messagelist" in response.content and b'class="error"' in response.content


def test_stop_action_stops_a_running_session_and_refuses_an_ended_one(
    admin_client: HttpClient, finished_session: Session
) -> None:
    running = Session.objects.create(session_id="running", status=SessionStatus.STARTED)
    response = admin_client.post(
        url("session_changelist"),
        {"action": "stop_sessions", "_selected_action": [running.pk, finished_session.pk]},
        follow=True,
    )
    running.refresh_from_db()
    assert running.status == SessionStatus.STOPPING and running.stop_requested
    shown = messages_of(response)
    assert "Session running is stopping." in shown
    assert "digits-run: Session digits-run has already ended (Finished)." in shown


def test_package_upload_and_activation_are_refused_while_a_session_runs(
    admin_client: HttpClient, fs_storage: Any
) -> None:
    package = make_package("digits")
    Session.objects.create(session_id="running", status=SessionStatus.STARTED)
    federation_holds_sync()  # as the services do when a session starts
    response = admin_client.post(
        reverse("admin:packages_computepackage_add"),
        {"upload": SimpleUploadedFile("new.tgz", package_archive()), "helper": "numpyhelper"},
    )
    assert "A session is running" in response.content.decode()
    assert ComputePackage.objects.count() == 1

    package.active = False
    package.save()
    response = admin_client.post(
        reverse("admin:packages_computepackage_changelist"),
        {"action": "activate", "_selected_action": [package.pk]},
        follow=True,
    )
    assert any("A session is running" in text for text in messages_of(response))
    assert not ComputePackage.objects.filter(active=True).exists()


# ---------------------------------------------------------------- rounds


def test_round_pages_show_session_and_reports(admin_client: HttpClient, finished_session: Session) -> None:
    response = admin_client.get(url("round_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert url("session_change", finished_session.pk) in body
    first = Round.objects.get(number=1)
    response = admin_client.get(url("round_change", first.pk))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Combiner reports" in body and "north" in body and "&quot;aggregator&quot;" in body
    assert f"?q={first.model_id}" in body  # the round's global model is a link
    assert admin_client.post(url("round_change", first.pk), {"status": "Failed"}).status_code == 403


def test_round_filters_and_search(admin_client: HttpClient, finished_session: Session) -> None:
    other = Session.objects.create(session_id="other-run")
    Round.objects.create(number=10, round_id="10", session=other, status=RoundStatus.FAILED)
    body = admin_client.get(url("round_changelist"), {"session_id": "other-run"}).content.decode()
    assert ">10<" in body and ">3<" not in body
    body = admin_client.get(url("round_changelist"), {"status__exact": "Pending"}).content.decode()
    assert ">4<" in body and ">10<" not in body
    body = admin_client.get(url("round_changelist"), {"q": "10"}).content.decode()
    assert ">10<" in body and ">4<" not in body


# ---------------------------------------------------------------- statuses, validations, controller


def test_status_pages_filters_and_search(admin_client: HttpClient, finished_session: Session) -> None:
    response = admin_client.get(url("status_changelist"))
    assert response.status_code == 200
    assert '<span class="fp-badge fp-bad">ERROR</span>' in response.content.decode()
    body = admin_client.get(url("status_changelist"), {"session_id": "digits-run"}).content.decode()
    assert "Session digits-run finished" in body and "training failed" not in body
    body = admin_client.get(url("status_changelist"), {"log_level__exact": "ERROR"}).content.decode()
    assert "training failed" in body and "digits-run finished" not in body
    body = admin_client.get(url("status_changelist"), {"type__exact": "MODEL_UPDATE"}).content.decode()
    assert "training failed" in body and "digits-run finished" not in body
    body = admin_client.get(url("status_changelist"), {"q": "training"}).content.decode()
    assert "training failed" in body and "digits-run finished" not in body
    status = Status.objects.get(sender_name="c9")
    assert admin_client.get(url("status_change", status.pk)).status_code == 200


def test_statuses_and_validations_cannot_be_added_changed_or_deleted(
    admin_client: HttpClient, finished_session: Session
) -> None:
    status = Status.objects.first()
    record = Validation.objects.first()
    assert status is not None and record is not None
    for model, obj in (("status", status), ("validation", record)):
        assert admin_client.get(url(f"{model}_add")).status_code == 403
        assert admin_client.post(url(f"{model}_change", obj.pk), {"sender_name": "x"}).status_code == 403
        assert admin_client.post(url(f"{model}_delete", obj.pk), {"post": "yes"}).status_code == 403
    status.refresh_from_db()
    record.refresh_from_db()
    assert status.sender_name != "x" and record.sender_name != "x"
    assert b'value="delete_selected"' not in admin_client.get(url("status_changelist")).content


def test_validation_pages_show_metrics(admin_client: HttpClient, finished_session: Session) -> None:
    response = admin_client.get(url("validation_changelist"), {"session_id": "digits-run"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "test_accuracy=0.95" in body
    record = Validation.objects.first()
    assert record is not None
    response = admin_client.get(url("validation_change", record.pk))
    assert response.status_code == 200
    assert f"?q={record.model_id}" in response.content.decode()
    body = admin_client.get(url("validation_changelist"), {"q": "c2"}).content.decode()
    assert body.count("test_accuracy=") == 3


def test_controller_state_is_shown_read_only(admin_client: HttpClient, finished_session: Session) -> None:
    state = ControllerState.objects.create(state=ControllerStateValue.MONITORING, session=finished_session)
    response = admin_client.get(url("controllerstate_changelist"))
    assert response.status_code == 200
    assert '<span class="fp-badge fp-ok">monitoring</span>' in response.content.decode()
    assert admin_client.get(url("controllerstate_change", state.pk)).status_code == 200
    assert admin_client.post(url("controllerstate_change", state.pk), {"state": "idle"}).status_code == 403


# ---------------------------------------------------------------- dashboard


def test_dashboard_shows_the_network_at_a_glance(admin_client: HttpClient, ready_network: Combiner) -> None:
    running = Session.objects.create(
        session_id="live-run", status=SessionStatus.STARTED, rounds=10, rounds_completed=4
    )
    response = admin_client.get(reverse("admin:index"))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="fp-dashboard"' in body
    assert "Active compute package" in body and ">digits<" in body
    active_model = Model.objects.get(active=True)
    assert (
        f'{reverse("admin:mlmodels_model_change", args=[active_model.pk])}">{active_model.model_id}<' in body
    )
    assert '?status__exact=online">1</a>' in body
    assert "1</a> registered, 1 serving online clients" in body
    assert "Running session" in body and url("session_change", running.pk) in body
    assert 'title="4 of 10"' in body


def test_dashboard_on_an_empty_network(admin_client: HttpClient) -> None:
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert "upload one" in body and "upload a seed model" in body and "No session yet" in body


@pytest.mark.parametrize("page", ["round_changelist", "status_changelist", "validation_changelist"])
def test_changelists_do_not_query_per_row(
    admin_client: HttpClient, finished_session: Session, page: str, django_assert_max_num_queries: Any
) -> None:
    for number in range(100, 140):
        model_id = str(uuid.uuid4())
        Round.objects.create(number=number, round_id=str(number), session=finished_session, model_id=model_id)
        validation(model_id, {"test_accuracy": 0.5}, session_id=finished_session.session_id)
    with django_assert_max_num_queries(14):
        assert admin_client.get(url(page)).status_code == 200


def test_scheduled_starts_are_listed_read_only(admin_client) -> None:
    from apps.sessions.models import ScheduledStart

    ScheduledStart.objects.create(
        schedule_name="nightly", outcome="skipped", reason="A session is already running."
    )
    answer = admin_client.get("/admin/fl_sessions/scheduledstart/")
    assert answer.status_code == 200
    assert b"nightly" in answer.content and b"A session is already running." in answer.content
    assert admin_client.get("/admin/fl_sessions/scheduledstart/add/").status_code == 403
