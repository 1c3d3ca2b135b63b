"""The console's pages answer in a fixed number of queries, however large the federation.

Each page is requested as a superuser on a small network and on a large one (1,000 clients,
10,000 statuses, a session of 20 rounds validated by 10 clients each): the count must stay
within the page's bound and be the same on both, or some query runs once per row.
"""

import datetime as dt
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection, transaction
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.combiners.models import Combiner
from apps.models.models import Model
from apps.sessions.choices import (
    ControllerStateValue,
    LogLevel,
    Role,
    RoundStatus,
    SessionStatus,
    StatusType,
)
from apps.sessions.models import CombinerReport, ControllerState, Round, Session, Status, Validation

# The pages are measured once, by a module fixture; the mark makes pytest-django create the database.
pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Scale:
    combiners: int
    clients: int  # half of them online
    statuses: int
    rounds: int  # each committed a model, chained from a seed
    validators: int  # clients that validated each round's model


SMALL = Scale(combiners=2, clients=10, statuses=30, rounds=3, validators=2)
LARGE = Scale(combiners=5, clients=1_000, statuses=10_000, rounds=20, validators=10)


@dataclass(frozen=True)
class Network:
    session: Session
    middle_model: Model  # the model of round 2: ancestors above it, every later round's below it
    last_round: Round  # reported by every combiner
    combiner: Combiner


def admin_page(name: str, pk_of: Callable[[Network], int]) -> Callable[[Network], str]:
    return lambda net: reverse(f"admin:{name}", args=[pk_of(net)])


def admin_list(name: str, session_only: bool = False) -> Callable[[Network], str]:
    def url(net: Network) -> str:
        query = f"?session_id={net.session.session_id}" if session_only else ""
        return reverse(f"admin:{name}_changelist") + query

    return url


# Each page: the most queries it may take, and its address. A page's queries are the admin's own
# (session, user, the list's count, its filters' choices, its date drill-down) and one per panel;
# none is per row. The dashboard, session and model pages, still gaining panels, get more room.
PAGES: dict[str, tuple[int, Callable[[Network], str]]] = {
    "dashboard": (16, lambda net: reverse("admin:index")),
    "dashboard panel": (15, lambda net: reverse("admin:console_dashboard_panel")),
    "session change": (14, admin_page("fl_sessions_session_change", lambda net: net.session.pk)),
    "sessions": (10, admin_list("fl_sessions_session")),
    "clients": (10, admin_list("clients_client")),
    "rounds": (10, admin_list("fl_sessions_round")),
    "round change": (7, admin_page("fl_sessions_round_change", lambda net: net.last_round.pk)),
    "statuses": (9, admin_list("fl_sessions_status")),
    "statuses of the session": (9, admin_list("fl_sessions_status", session_only=True)),
    "validations": (9, admin_list("fl_sessions_validation")),
    "validations of the session": (9, admin_list("fl_sessions_validation", session_only=True)),
    "models": (10, admin_list("mlmodels_model")),
    "model change": (14, admin_page("mlmodels_model_change", lambda net: net.middle_model.pk)),
    "combiners": (9, admin_list("combiners_combiner")),
    "combiner change": (5, admin_page("combiners_combiner_change", lambda net: net.combiner.pk)),
    "controller state": (7, admin_list("fl_sessions_controllerstate")),
}


def build_network(scale: Scale) -> Network:
    """Every row in a few bulk inserts, so the large network takes seconds to build."""
    now = timezone.now()
    start = now - dt.timedelta(hours=2)
    combiners = Combiner.objects.bulk_create(
        Combiner(name=f"combiner-{index}", address=f"combiner-{index}.local", port=12080 + index)
        for index in range(scale.combiners)
    )
    Client.objects.bulk_create(
        Client(
            name=f"client-{index:04d}",
            combiner=combiners[index % scale.combiners],
            status=ClientStatus.ONLINE if index % 2 == 0 else ClientStatus.OFFLINE,
            ip=f"10.0.{index // 250}.{index % 250}",
            last_seen=now - dt.timedelta(seconds=index),
        )
        for index in range(scale.clients)
    )

    # A plain parent_id: the chain is linked by uuid before any row is saved.
    models = [Model(model_id=uuid.uuid4(), artifact="models/seed.npz", sha256="0" * 64)]
    for number in range(1, scale.rounds + 1):
        models.append(
            Model(
                model_id=uuid.uuid4(),
                parent_id=models[-1].model_id,
                session_id="large-run",
                artifact=f"models/round-{number}.npz",
                sha256="0" * 64,
                size=1_000 * number,
            )
        )
    models[-1].active = True
    Model.objects.bulk_create(models)

    session = Session.objects.create(
        session_id="large-run",
        status=SessionStatus.STARTED,
        rounds=scale.rounds + 5,
        rounds_completed=scale.rounds,
        model_id=str(models[0].model_id),
        started_at=start,
    )
    ControllerState.objects.update_or_create(
        singleton=True, defaults={"state": ControllerStateValue.MONITORING, "session": session}
    )
    Round.objects.bulk_create(
        Round(
            number=number,
            round_id=str(number),
            session=session,
            status=RoundStatus.SUCCESS,
            model_id=str(models[number].model_id),
            started_at=start + dt.timedelta(minutes=number),
            finished_at=start + dt.timedelta(minutes=number, seconds=2 + number % 5),
        )
        for number in range(1, scale.rounds + 1)
    )
    rounds = list(Round.objects.filter(session=session).order_by("number"))
    CombinerReport.objects.bulk_create(
        CombinerReport(
            round=item,
            combiner=combiner.name,
            model_id=str(uuid.uuid4()),
            num_examples=500,
            report={"status": "Success"},
        )
        for item in rounds
        for combiner in combiners
    )
    Validation.objects.bulk_create(
        Validation(
            sender_name=f"client-{validator:04d}",
            receiver_name=combiners[validator % scale.combiners].name,
            receiver_role=Role.COMBINER,
            model_id=item.model_id,
            data=json.dumps(
                {"test_accuracy": 0.8 + item.number / 200 + validator / 1000, "test_loss": 1 / item.number}
            ),
            timestamp=item.finished_at + dt.timedelta(seconds=validator),
            session_id=session.session_id,
        )
        for item in rounds
        for validator in range(scale.validators)
    )
    types, levels = list(StatusType), list(LogLevel)
    Status.objects.bulk_create(
        Status(
            sender_name=f"client-{index % scale.clients:04d}",
            type=types[index % len(types)],
            log_level=levels[index % len(levels)],
            status=f"event {index}",
            timestamp=start + dt.timedelta(milliseconds=500 * index),
            session_id=session.session_id,
        )
        for index in range(scale.statuses)
    )
    return Network(
        session=session,
        middle_model=Model.objects.get(model_id=models[2].model_id),
        last_round=rounds[-1],
        combiner=combiners[0],
    )


@dataclass(frozen=True)
class Measured:
    status_code: int
    statements: list[str]
    rows: int | None  # a changelist's matches, so a list is known to hold the data it was meant to
    body: str

    @property
    def count(self) -> int:
        return len(self.statements)


def measure_pages(scale: Scale) -> dict[str, Measured]:
    """Each page's second request: the first fills the admin's own caches (content types)."""
    network = build_network(scale)
    user = get_user_model().objects.create_superuser("operator", "operator@example.com", "operator")
    browser = HttpClient()
    browser.force_login(user)
    cache.clear()
    measured = {}
    for page, (_, url_of) in PAGES.items():
        url = url_of(network)
        browser.get(url)
        with CaptureQueriesContext(connection) as captured:
            response = browser.get(url)
        changelist = (response.context or {}).get("cl")
        measured[page] = Measured(
            status_code=response.status_code,
            statements=[query["sql"] for query in captured.captured_queries],
            rows=changelist.result_count if changelist is not None else None,
            body=response.content.decode(),
        )
    return measured


def measure_and_roll_back(scale: Scale) -> dict[str, Measured]:
    with transaction.atomic():
        try:
            return measure_pages(scale)
        finally:
            transaction.set_rollback(True)


@pytest.fixture(scope="module")
def measured(django_db_setup: None, django_db_blocker: Any) -> Iterator[dict[Scale, dict[str, Measured]]]:
    """Every page on each network, each network built and rolled back on its own."""
    with django_db_blocker.unblock():
        results = {scale: measure_and_roll_back(scale) for scale in (SMALL, LARGE)}
    print(f"\nqueries per page on {connection.vendor} (bound, small network, large network):")
    for page, (bound, _) in PAGES.items():
        print(f"  {page:<28} {bound:>3} {results[SMALL][page].count:>5} {results[LARGE][page].count:>5}")
    yield results


def shape(sql: str) -> str:
    """A statement with its values taken out, so the same query for another row reads the same."""
    sql = re.sub(r"'(?:[^']|'')*'", "?", sql)
    sql = re.sub(r"\b\d+(?:\.\d+)?\b", "?", sql)
    return re.sub(r"IN \((?:\?, )*\?\)", "IN (...)", sql)


def repeated_statements(small: Measured, large: Measured) -> str:
    """The statements the large network ran more often than the small one, with both counts."""
    grown = Counter(map(shape, large.statements)) - Counter(map(shape, small.statements))
    before = Counter(map(shape, small.statements))
    return "\n".join(
        f"  {before[sql]} -> {before[sql] + extra} times: {sql[:300]}" for sql, extra in grown.most_common()
    )


@pytest.mark.parametrize("page", list(PAGES))
def test_a_page_answers_in_a_bounded_number_of_queries_that_does_not_grow_with_the_data(
    measured: dict[Scale, dict[str, Measured]], page: str
) -> None:
    bound = PAGES[page][0]
    small, large = measured[SMALL][page], measured[LARGE][page]
    assert (small.status_code, large.status_code) == (200, 200)
    assert small.count == large.count, (
        f"{page}: {small.count} queries on the small network, {large.count} on the large one; "
        f"repeated:\n{repeated_statements(small, large)}"
    )
    assert large.count <= bound, f"{page}: {large.count} queries, bound {bound}:\n" + "\n".join(
        large.statements
    )


@pytest.mark.parametrize("page", ["statuses of the session", "validations of the session"])
def test_a_filtered_event_list_counts_only_its_matches(
    measured: dict[Scale, dict[str, Measured]], page: str
) -> None:
    """Events grow without end: a page filtered to one session must not count the whole table."""
    counts = [sql for sql in measured[LARGE][page].statements if "COUNT(" in sql.upper()]
    assert counts and all("WHERE" in sql.upper() for sql in counts), counts


def test_the_large_lists_hold_the_whole_network(measured: dict[Scale, dict[str, Measured]]) -> None:
    rows = {page: result.rows for page, result in measured[LARGE].items() if result.rows is not None}
    assert rows == {
        "sessions": 1,
        "clients": LARGE.clients,
        "rounds": LARGE.rounds,
        "statuses": LARGE.statuses,
        "statuses of the session": LARGE.statuses,
        "validations": LARGE.rounds * LARGE.validators,
        "validations of the session": LARGE.rounds * LARGE.validators,
        "models": LARGE.rounds + 1,
        "combiners": LARGE.combiners,
        "controller state": 1,
    }


def test_the_lists_count_per_row_what_they_no_longer_join(measured: dict[Scale, dict[str, Measured]]) -> None:
    """Reports per round and clients per combiner are correlated counts: each row has its own."""
    rounds, combiners = measured[LARGE]["rounds"].body, measured[LARGE]["combiners"].body
    assert rounds.count(f'<td class="field-report_count">{LARGE.combiners}</td>') == LARGE.rounds
    per_combiner = LARGE.clients // LARGE.combiners
    assert combiners.count(f">{per_combiner // 2} / {per_combiner}</a>") == LARGE.combiners
