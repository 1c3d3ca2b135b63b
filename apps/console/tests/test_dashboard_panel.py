"""The dashboard's panel view: staff only, and what it draws of a running or past session, the
combiners with their online clients and the recent events; the index page loads the script that
polls it from the project's static files."""

import datetime as dt
import json
import re
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.db import connection
from django.templatetags.static import static
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.combiners.models import Combiner
from apps.console.dashboard import RECENT_EVENTS
from apps.sessions.choices import LogLevel, RoundStatus, SessionStatus, SessionStep, StatusType
from apps.sessions.models import Round, Session, Status, Validation

pytestmark = pytest.mark.django_db

PANEL = "admin:console_dashboard_panel"
POINT = re.compile(r'<circle class="fp-point" data-round="(\d+)" data-value="([^"]+)"')


def make_session(
    session_id: str,
    *,
    status: str,
    rounds: int,
    accuracies: list[tuple[float, float]],
    first_round: int = 1,
    committed_at: dt.datetime | None = None,
) -> Session:
    """A session whose finished rounds each made a model that two clients validated."""
    session = Session.objects.create(
        session_id=session_id,
        status=status,
        rounds=rounds,
        rounds_completed=len(accuracies),
        step=SessionStep.TRAINING if status == SessionStatus.STARTED else SessionStep.DONE,
        started_at=timezone.now(),
    )
    if committed_at is not None:
        Session.objects.filter(pk=session.pk).update(committed_at=committed_at)
    for offset, pair in enumerate(accuracies):
        number = first_round + offset
        model_id = str(uuid.uuid4())
        Round.objects.create(
            number=number,
            round_id=str(number),
            session=session,
            status=RoundStatus.SUCCESS,
            model_id=model_id,
        )
        for sender, accuracy in zip(("c1", "c2"), pair, strict=True):
            Validation.objects.create(
                sender_name=sender,
                model_id=model_id,
                data=json.dumps({"test_accuracy": accuracy, "test_loss": 1 - accuracy}),
                timestamp=timezone.now(),
                session_id=session_id,
            )
    if status == SessionStatus.STARTED:
        number = first_round + len(accuracies)
        current = Round.objects.create(number=number, round_id=str(number), session=session)
        Session.objects.filter(pk=session.pk).update(current_round=current)
    session.refresh_from_db()
    return session


def make_network(clients: int = 3) -> Combiner:
    """Two combiners: north serves `clients` clients (one of them offline), south none."""
    north = Combiner.objects.create(
        name="north", address="north.local", port=12080, last_report_at=timezone.now(), max_clients=30
    )
    Combiner.objects.create(name="south", address="south.local", port=12081)
    Client.objects.bulk_create(
        Client(
            name=f"c{index}",
            combiner=north,
            status=ClientStatus.OFFLINE if index == 0 else ClientStatus.ONLINE,
        )
        for index in range(clients)
    )
    return north


def make_events(count: int) -> None:
    start = timezone.now() - dt.timedelta(minutes=10)
    Status.objects.bulk_create(
        Status(
            sender_name=f"client-{index}",
            status=f"event {index} " + ("x" * 200 if index == count - 1 else "done"),
            log_level=LogLevel.ERROR if index == count - 1 else LogLevel.INFO,
            type=StatusType.LOG,
            timestamp=start + dt.timedelta(seconds=index),
        )
        for index in range(count)
    )


def panel(client: HttpClient) -> str:
    response = client.get(reverse(PANEL))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    return response.content.decode()


def test_an_anonymous_visitor_is_sent_to_the_login_page(client: HttpClient) -> None:
    response = client.get(reverse(PANEL))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert 'id="fp-session"' not in response.content.decode()


def test_a_user_who_is_not_staff_is_refused(client: HttpClient) -> None:
    user = get_user_model().objects.create_user("visitor", "visitor@example.org", "a-password-1")
    client.force_login(user)
    response = client.get(reverse(PANEL))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_get_the_panel_alone_and_never_cached(client: HttpClient) -> None:
    staff = get_user_model().objects.create_user(
        "watcher", "watcher@example.org", "a-password-1", is_staff=True
    )
    client.force_login(staff)
    response = client.get(reverse(PANEL))
    body = response.content.decode()
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    # A fragment: the panel's modules without the page around them.
    assert 'id="fp-session"' in body and 'id="fp-network"' in body
    assert "<html" not in body and "<head" not in body and 'id="header"' not in body


def test_the_running_session_shows_its_progress_and_a_point_per_validated_round(
    admin_client: HttpClient,
) -> None:
    make_session("older", status=SessionStatus.FINISHED, rounds=2, accuracies=[(0.4, 0.5)] * 2)
    running = make_session(
        "digits-live",
        status=SessionStatus.STARTED,
        rounds=5,
        accuracies=[(0.5, 0.7), (0.8, 0.9)],
        first_round=3,
    )
    body = panel(admin_client)
    assert 'data-session-active="true"' in body
    assert "Running session" in body
    assert reverse("admin:fl_sessions_session_change", args=[running.pk]) in body
    assert "2/5 rounds completed" in body
    assert '<span class="fp-badge fp-info">Started</span>' in body
    assert 'title="2 of 5"' in body and "width:40%" in body  # the progress bar
    assert "round 5: Waiting for combiner reports" in body
    # The main metric (accuracy first), the mean of two clients per round, on the live session only.
    chart = body[body.index('id="fp-dashboard-chart"') :]
    assert "test_accuracy" in chart
    assert [(int(r), float(v)) for r, v in POINT.findall(chart)] == [(3, 0.6), (4, 0.85)]
    # The axis spans the five rounds the session asked for, so points are added as rounds end.
    assert ">7</text>" in chart


def test_a_long_sessions_chart_fits_the_rounds_done(admin_client: HttpClient) -> None:
    make_session("long-run", status=SessionStatus.STARTED, rounds=500, accuracies=[(0.5, 0.7), (0.8, 0.9)])
    chart = panel(admin_client).split('id="fp-dashboard-chart"')[1]
    assert len(POINT.findall(chart)) == 2
    # Round labels 1 and 2 only: an axis to round 500 would squeeze both points against its left end.
    assert re.findall(r'class="fp-axis" text-anchor="middle">(\d+)</text>', chart) == ["1", "2"]


def test_without_a_running_session_the_latest_one_is_shown_and_polled_slowly(
    admin_client: HttpClient,
) -> None:
    earlier = timezone.now() - dt.timedelta(hours=1)
    make_session(
        "first", status=SessionStatus.FINISHED, rounds=1, accuracies=[(0.1, 0.2)], committed_at=earlier
    )
    make_session("second", status=SessionStatus.STOPPED, rounds=6, accuracies=[(0.5, 0.6)] * 2, first_round=2)
    body = panel(admin_client)
    assert 'data-session-active="false"' in body
    assert "Latest session" in body and "second" in body and ">first<" not in body
    assert "2/6 rounds completed" in body
    assert '<span class="fp-badge fp-muted">Stopped</span>' in body
    assert "Checks for a new session every 15 s" in body


def test_before_any_session_the_panel_says_so(admin_client: HttpClient) -> None:
    body = panel(admin_client)
    assert 'data-session-active="false"' in body
    assert "No session yet" in body and "No combiner has registered yet" in body and "No events yet" in body


def test_combiners_list_their_online_clients_each_linked(admin_client: HttpClient) -> None:
    north = make_network(clients=4)
    body = panel(admin_client)
    combiners = body[body.index('id="fp-combiners"') : body.index('id="fp-events"')]
    assert f'<a href="{reverse("admin:combiners_combiner_change", args=[north.pk])}">north</a>' in combiners
    online = f"{reverse('admin:clients_client_changelist')}?combiner__id__exact={north.pk}&amp;status__exact={ClientStatus.ONLINE.value}"
    assert f'<a href="{online}">3</a>' in combiners
    assert re.search(r">south</a></td>\s*<td><a href=\"[^\"]+\">0</a>", combiners)
    assert "reporting" in combiners and "no report yet" in combiners


def test_recent_events_are_the_last_ten_newest_first_linked_and_shortened(admin_client: HttpClient) -> None:
    make_events(RECENT_EVENTS + 5)
    body = panel(admin_client)
    events = body[body.index('id="fp-events"') :]
    assert f'href="{reverse("admin:fl_sessions_status_changelist")}"' in events
    senders = re.findall(r"<td>(client-\d+)</td>", events)
    assert senders == [f"client-{index}" for index in range(RECENT_EVENTS + 4, 4, -1)]
    newest = Status.objects.order_by("-timestamp").first()
    assert newest is not None
    assert reverse("admin:fl_sessions_status_change", args=[newest.pk]) in events
    assert '<span class="fp-badge fp-bad">ERROR</span>' in events
    assert "x" * 200 not in events and "xxx…" in events
    assert "event 4 done" not in events  # the eleventh newest


def test_the_index_draws_the_panel_and_loads_the_script_from_static_files(admin_client: HttpClient) -> None:
    make_session("digits-live", status=SessionStatus.STARTED, rounds=3, accuracies=[(0.5, 0.7)])
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert f'data-panel-url="{reverse(PANEL)}"' in body
    assert 'data-live-seconds="3"' in body and 'data-idle-seconds="15"' in body
    assert f'<script src="{static("console/dashboard.js")}" defer></script>' in body
    assert finders.find("console/dashboard.js")
    # The index page draws the same panel the script fetches.
    wrapper = body[body.index('id="fp-dashboard"') :]
    assert 'data-session-active="true"' in wrapper and "1/3 rounds completed" in wrapper


def count_panel_queries(client: HttpClient) -> int:
    client.get(reverse(PANEL))  # the first request fills the admin's own caches
    with CaptureQueriesContext(connection) as captured:
        panel(client)
    return len(captured.captured_queries)


def test_the_panel_takes_as_many_queries_for_a_large_network_as_for_a_small_one(
    admin_client: HttpClient,
) -> None:
    north = make_network(clients=2)
    make_events(3)
    make_session("digits-live", status=SessionStatus.STARTED, rounds=9, accuracies=[(0.5, 0.7)])
    small = count_panel_queries(admin_client)

    Client.objects.bulk_create(
        Client(name=f"more-{index}", combiner=north, status=ClientStatus.ONLINE) for index in range(200)
    )
    Combiner.objects.bulk_create(
        Combiner(name=f"extra-{index}", address=f"extra-{index}.local", port=13000 + index)
        for index in range(20)
    )
    make_events(300)
    Session.objects.filter(session_id="digits-live").delete()
    make_session("digits-big", status=SessionStatus.STARTED, rounds=9, accuracies=[(0.5, 0.7)] * 6)
    assert count_panel_queries(admin_client) == small
    assert small <= 15
