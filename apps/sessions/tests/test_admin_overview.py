"""The session page's charts (a chart per validation metric with its spread over clients, round
durations) and what the model page's lineage says of each model, as an operator reads them."""

import datetime as dt
import json
import re
import uuid

import pytest
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.models.models import Model
from apps.sessions.admin_overview import validation_coverage
from apps.sessions.choices import RoundStatus, SessionStatus
from apps.sessions.metrics import session_metrics
from apps.sessions.models import Round, Session, Validation

pytestmark = pytest.mark.django_db

CLIENTS = ("c1", "c2", "c3")
# Each validated round's test_accuracy per client: a narrow climb that a 0-1 axis would flatten.
ACCURACY = ((0.921, 0.925, 0.929), (0.938, 0.944, 0.953), (0.951, 0.958, 0.962), (0.960, 0.965, 0.970))
ROUND_SECONDS = (2.5, 4.0, 3.25, 6.75)


def make_model(parent: Model | None, session_id: str | None) -> Model:
    """A global model row; its artifact is never read by these pages."""
    return Model.objects.create(
        model_id=uuid.uuid4(), parent=parent, session_id=session_id, artifact="models/x.npz", sha256="0" * 64
    )


def build_timed_session(
    session_id: str = "timed-run", first_number: int = 1, produced: int = 4, seed: Model | None = None
) -> Session:
    """A session whose rounds each committed a model, chained from a seed, after a measured time and
    were validated by three clients on three metrics; then a failed round and one still running."""
    seed = seed or make_model(None, None)
    session = Session.objects.create(
        session_id=session_id,
        status=SessionStatus.STARTED,
        rounds=produced + 2,
        rounds_completed=produced,
        model_id=str(seed.model_id),
    )
    start = timezone.now() - dt.timedelta(hours=1)
    parent = seed
    for index in range(produced):
        model = make_model(parent, session_id)
        number = first_number + index
        begun = start + dt.timedelta(minutes=index)
        Round.objects.create(
            number=number,
            round_id=str(number),
            session=session,
            status=RoundStatus.SUCCESS,
            model_id=str(model.model_id),
            started_at=begun,
            finished_at=begun + dt.timedelta(seconds=ROUND_SECONDS[index % len(ROUND_SECONDS)]),
        )
        for client, accuracy in zip(CLIENTS, ACCURACY[index % len(ACCURACY)], strict=True):
            metrics = {
                "test_accuracy": accuracy,
                "test_loss": 2.3 * (1 - accuracy),
                "f1_score": accuracy - 0.01,
            }
            Validation.objects.create(
                sender_name=client,
                receiver_name="north",
                model_id=str(model.model_id),
                data=json.dumps(metrics),
                timestamp=timezone.now(),
                session_id=session_id,
            )
        parent = model
    failed = first_number + produced
    Round.objects.create(
        number=failed,
        round_id=str(failed),
        session=session,
        status=RoundStatus.FAILED,
        started_at=start + dt.timedelta(minutes=produced),
        finished_at=start + dt.timedelta(minutes=produced, seconds=30),
    )
    Round.objects.create(
        number=failed + 1, round_id=str(failed + 1), session=session, status=RoundStatus.PENDING
    )
    return session


def session_page(admin_client: HttpClient, session: Session) -> str:
    response = admin_client.get(reverse("admin:fl_sessions_session_change", args=[session.pk]))
    assert response.status_code == 200
    return str(response.content.decode())


def charts_of(body: str) -> dict[str, str]:
    """Each chart's SVG by its title."""
    return {
        match.group(2): match.group(0)
        for match in re.finditer(
            r'<svg class="fp-chart" data-chart="(\w+)".*?class="fp-chart-title">(.*?)<.*?</svg>', body
        )
    }


def y_tick_labels(svg: str) -> list[str]:
    return re.findall(r'class="fp-axis" text-anchor="end">([^<]+)<', svg)


# ---------------------------------------------------------------- metrics


def test_metrics_keep_each_rounds_spread_and_who_validated() -> None:
    session = build_timed_session()
    metrics = session_metrics(session)
    assert metrics.rounds == [1, 2, 3, 4]  # the failed and the running round made no model
    assert list(metrics.series) == ["test_accuracy", "test_loss", "f1_score"]  # accuracy first
    first = metrics.spreads["test_accuracy"][0]
    assert first is not None
    assert (first.low, first.high, first.count) == (0.921, 0.929, 3)
    assert first.mean == pytest.approx(0.925)
    assert first.std == pytest.approx(0.00326599, rel=1e-4)
    assert metrics.clients_per_round == [3, 3, 3, 3] and metrics.validations_per_round == [3, 3, 3, 3]
    assert validation_coverage(metrics) == "3 clients validated each round's model (12 validations)"


def test_coverage_says_when_rounds_differ() -> None:
    session = build_timed_session()
    last = Round.objects.get(number=4)
    Validation.objects.filter(model_id=last.model_id, sender_name="c3").delete()
    # A client validating twice is one client with two validations.
    Validation.objects.create(model_id=last.model_id, sender_name="c1", data="{}", timestamp=timezone.now())
    Validation.objects.filter(model_id=Round.objects.get(number=2).model_id).delete()
    text = validation_coverage(session_metrics(session))
    assert text == "2\u20133 clients validated each round's model (9 validations, 3 of 4 rounds validated)"


# ---------------------------------------------------------------- the session page


def test_a_chart_per_metric_with_a_point_per_validated_round(admin_client: HttpClient) -> None:
    session = build_timed_session()
    body = session_page(admin_client, session)
    charts = charts_of(body)
    assert set(charts) == {"test_accuracy", "test_loss", "f1_score", "Round duration"}
    for name in ("test_accuracy", "test_loss", "f1_score"):
        assert re.findall(r'class="fp-point" data-round="(\d+)"', charts[name]) == ["1", "2", "3", "4"]
        assert charts[name].count('class="fp-band"') == 1
        assert "mean over clients" in charts[name] and "min\u2013max over clients" in charts[name]
    accuracy = charts["test_accuracy"]
    assert re.findall(r'data-round="1" data-value="([^"]+)"', accuracy) == ["0.925"]
    assert "min 0.921, max 0.929" in accuracy  # the point's tooltip
    assert "3 clients validated each round&#x27;s model (12 validations)" in body
    assert "averaged per round" not in body


def test_metric_axis_fits_the_data_with_rounded_ticks(admin_client: HttpClient) -> None:
    body = session_page(admin_client, build_timed_session())
    charts = charts_of(body)
    # Band 0.921-0.970: ticks every 0.01 from 0.92 to 0.97, not 0 to 1.
    assert y_tick_labels(charts["test_accuracy"]) == ["0.92", "0.93", "0.94", "0.95", "0.96", "0.97"]
    # The loss, 0.069-0.182: rounded ticks with two decimals, not 0.0690 or 0.18170000000000003.
    loss_ticks = y_tick_labels(charts["test_loss"])
    assert loss_ticks == ["0.05", "0.10", "0.15", "0.20"]
    # The lowest and highest points sit near the plot's bottom and top: the climb is visible.
    ys = [float(y) for y in re.findall(r'class="fp-point"[^>]* cy="([\d.]+)"', charts["test_accuracy"])]
    assert ys[0] - ys[-1] > 80  # of a 140px plot


def test_round_durations_are_bars_of_seconds(admin_client: HttpClient) -> None:
    body = session_page(admin_client, build_timed_session())
    durations = charts_of(body)["Round duration"]
    bars = dict(re.findall(r'class="fp-bar" data-round="(\d+)" data-value="([^"]+)"', durations))
    # Every round that ended, the failed one too; the running round has no duration yet.
    assert bars == {"1": "2.5", "2": "4", "3": "3.25", "4": "6.75", "5": "30"}
    assert y_tick_labels(durations)[0] == "0"
    assert "<td>2.5 s</td>" in body and "<td>30.0 s</td>" in body


def test_a_session_without_validations_says_so(admin_client: HttpClient) -> None:
    session = build_timed_session()
    Validation.objects.all().delete()
    body = session_page(admin_client, session)
    assert "no validations yet" in body and 'class="fp-bar"' in body
    assert "validated each round" not in body


def test_session_page_queries_do_not_grow_with_rounds(admin_client: HttpClient) -> None:
    def queries_for(session: Session) -> int:
        session_page(admin_client, session)  # warm the admin's own caches (content types, user)
        with CaptureQueriesContext(connection) as captured:
            session_page(admin_client, session)
        return len(captured)

    small = queries_for(build_timed_session("small-run", first_number=1, produced=2))
    large = queries_for(build_timed_session("large-run", first_number=100, produced=20))
    assert small == large


# ---------------------------------------------------------------- the model page's lineage facts


def test_model_lineage_is_labelled_with_session_round_and_metric(admin_client: HttpClient) -> None:
    build_timed_session()
    second = Model.objects.get(model_id=Round.objects.get(number=2).model_id)
    body = admin_client.get(reverse("admin:mlmodels_model_change", args=[second.pk])).content.decode()
    current = re.search(r'<a [^>]*data-relation="current".*?</a>', body, re.S)
    assert current is not None
    assert "timed-run · round 2" in current.group(0)
    assert "test_accuracy 0.9450 (3 clients)" in current.group(0)
    parent = re.search(r'<a [^>]*data-relation="parent".*?</a>', body, re.S)
    assert parent is not None and "round 1" in parent.group(0) and "0.9250" in parent.group(0)
    seed = re.search(r'<a [^>]*data-relation="ancestor".*?</a>', body, re.S)
    assert (
        seed is not None and "seed model (no session)" in seed.group(0) and "no validations" in seed.group(0)
    )


def test_model_page_queries_do_not_grow_with_the_lineage(admin_client: HttpClient) -> None:
    def queries_for(session_id: str, first_number: int, produced: int) -> int:
        build_timed_session(session_id, first_number=first_number, produced=produced)
        middle = Round.objects.get(number=first_number + produced // 2).model_id
        url = reverse("admin:mlmodels_model_change", args=[Model.objects.get(model_id=middle).pk])
        admin_client.get(url)
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(url).status_code == 200
        return len(captured)

    assert queries_for("short-run", 1, 2) == queries_for("long-run", 100, 30)


def test_absurd_metrics_still_draw_a_page(admin_client: HttpClient) -> None:
    session = build_timed_session(produced=2)
    for client, value in (("c1", 1e308), ("c2", 1e308), ("c3", -1e308)):
        Validation.objects.create(
            sender_name=client,
            model_id=Round.objects.get(number=1).model_id,
            data=json.dumps({"huge": value, "tiny": 5e-324}),
            timestamp=timezone.now(),
        )
    charts = charts_of(session_page(admin_client, session))
    assert {"huge", "tiny"} <= set(charts)
    second = Model.objects.get(model_id=Round.objects.get(number=1).model_id)
    assert admin_client.get(reverse("admin:mlmodels_model_change", args=[second.pk])).status_code == 200
