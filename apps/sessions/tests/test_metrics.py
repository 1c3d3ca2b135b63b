"""The one parser of validation metrics, and what a NaN or infinite metric does to the pages
and routes that read it: nothing."""

import json
import uuid

import pytest
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from apps.sessions.choices import RoundStatus, SessionStatus
from apps.sessions.metrics import numeric_metrics
from apps.sessions.models import Round, Session, Validation


def test_only_finite_numbers_are_metrics() -> None:
    data = '{"acc": 0.5, "loss": NaN, "big": Infinity, "small": -Infinity, "n": 3, "flag": true, "s": "x"}'
    assert numeric_metrics(data) == {"acc": 0.5, "n": 3.0}
    assert numeric_metrics(json.dumps({"huge": 10**400})) == {}
    assert numeric_metrics("not json") == {} and numeric_metrics("[1, 2]") == {} and numeric_metrics("") == {}


@pytest.fixture
def session_with_odd_metrics(db: None) -> Session:
    session = Session.objects.create(
        session_id="odd-run", status=SessionStatus.STARTED, rounds=2, rounds_completed=1
    )
    model_id = str(uuid.uuid4())
    Round.objects.create(
        number=1, round_id="1", session=session, status=RoundStatus.SUCCESS, model_id=model_id
    )
    for sender, data in (
        ("c1", '{"test_accuracy": NaN, "test_loss": Infinity}'),
        ("c2", '{"test_accuracy": 0.75, "test_loss": -Infinity}'),
    ):
        Validation.objects.create(
            sender_name=sender,
            receiver_name="north",
            model_id=model_id,
            data=data,
            timestamp=timezone.now(),
            session_id=session.session_id,
        )
    return session


def test_get_plot_data_skips_non_finite_metrics(
    client: HttpClient, session_with_odd_metrics: Session
) -> None:
    answer = client.get("/get_plot_data")
    assert answer.status_code == 200
    body = json.loads(answer.content, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert body["valid_metrics"] == ["test_accuracy"]
    figure = json.loads(body["box_plot"], parse_constant=lambda name: pytest.fail(f"{name} in the figure"))
    assert figure["data"][0]["y"] == [0.75]
    assert client.get("/get_plot_data", {"feature": "test_loss"}).status_code == 404


def test_console_pages_show_sessions_with_non_finite_metrics(
    admin_client: HttpClient, session_with_odd_metrics: Session
) -> None:
    index = admin_client.get(reverse("admin:index"))
    assert index.status_code == 200
    assert "odd-run" in index.content.decode()
    page = admin_client.get(reverse("admin:fl_sessions_session_change", args=[session_with_odd_metrics.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    # The round's mean is the finite value alone; the loss, never finite, has no chart.
    assert "<td>0.7500</td>" in body
    assert not any(word in body for word in ("NaN", "nan<", "inf<", "Infinity"))
    assert body.count("<polyline") == 1 and ">test_loss<" not in body
    validations = admin_client.get(reverse("admin:fl_sessions_validation_changelist")).content.decode()
    assert "test_accuracy=0.75" in validations


def test_plot_data_reads_metrics_with_the_one_parser(
    client: HttpClient, session_with_odd_metrics: Session
) -> None:
    parsed = [numeric_metrics(data) for data in Validation.objects.values_list("data", flat=True)]
    names = sorted({name for metrics in parsed for name in metrics})
    assert json.loads(client.get("/get_plot_data").content)["valid_metrics"] == names
