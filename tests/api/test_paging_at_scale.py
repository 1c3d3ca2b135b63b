"""Lists at scale: deep pages read through the sort index, totals counted only when needed, and the
sort order PostgreSQL can take from a composite index (no sort of the whole table)."""

import datetime as dt
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.sessions.choices import StatusType
from apps.sessions.models import Status
from controlplane.api import pagination

pytestmark = pytest.mark.django_db

ROWS = 2_500
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def statuses() -> list[int]:
    """ROWS statuses, several per timestamp, so only the id breaks ties; ids in the API's order."""
    types = [StatusType.MODEL_UPDATE, StatusType.LOG]
    Status.objects.bulk_create(
        Status(
            sender_name=f"client-{index % 7}",
            type=types[index % 2],
            status=f"event {index}",
            timestamp=START + dt.timedelta(seconds=index // 3),
            session_id="s1",
        )
        for index in range(ROWS)
    )
    cache.clear()
    return list(Status.objects.order_by("-timestamp", "-id").values_list("id", flat=True))


def plan_of(sql: str) -> str:
    """PostgreSQL's plan for `sql`. A table this small would otherwise be scanned, or its few matches
    fetched and sorted: with both discouraged, a plan still sorts only if no index gives the order."""
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_sort = off")
        cursor.execute(f"EXPLAIN {sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_sort")
        cursor.execute("RESET enable_seqscan")
    return plan


def page(api: Any, skip: int, limit: int, **headers: str) -> tuple[int, list[int]]:
    answer = api.get("/api/v1/statuses/", HTTP_X_SKIP=str(skip), HTTP_X_LIMIT=str(limit), **headers)
    assert answer.status_code == 200, answer.content
    body = answer.json()
    return body["count"], [int(row["id"]) for row in body["result"]]


@pytest.mark.parametrize("skip", [0, 999, 1_000, 1_700, ROWS - 10, ROWS])
def test_every_page_is_the_slice_of_the_ordered_list(api: Any, statuses: list[int], skip: int) -> None:
    count, ids = page(api, skip, 100)
    assert count == ROWS
    assert ids == statuses[skip : skip + 100]


def test_deep_pages_ascending_and_filtered_match_the_database_order(api: Any, statuses: list[int]) -> None:
    ascending = list(reversed(statuses))
    assert page(api, 1_200, 50, HTTP_X_SORT_ORDER="asc")[1] == ascending[1_200:1_250]
    updates = list(
        Status.objects.filter(type=StatusType.MODEL_UPDATE)
        .order_by("-timestamp", "-id")
        .values_list("id", flat=True)
    )
    answer = api.get("/api/v1/statuses/?type=MODEL_UPDATE", HTTP_X_SKIP="1100", HTTP_X_LIMIT="40")
    body = answer.json()
    assert (body["count"], [int(row["id"]) for row in body["result"]]) == (len(updates), updates[1_100:1_140])


def test_a_last_page_is_answered_without_counting(api: Any, statuses: list[int]) -> None:
    with CaptureQueriesContext(connection) as queries:
        count, ids = page(api, ROWS - 30, 100)
    assert (count, ids) == (ROWS, statuses[-30:])
    assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    # A full page cannot tell where the list ends: that one counts.
    with CaptureQueriesContext(connection) as queries:
        assert page(api, 0, 100)[0] == ROWS
    assert [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]


def test_a_page_past_the_end_still_reports_the_total(api: Any, statuses: list[int]) -> None:
    assert page(api, ROWS + 5, 100) == (ROWS, [])
    assert page(api, 2**63 - 1, 100) == (ROWS, [])


def test_small_counts_are_always_exact_and_large_ones_are_kept_briefly(
    api: Any, statuses: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = Status(sender_name="late", timestamp=START, session_id="s1")
    assert api.get("/api/v1/statuses/count").json() == ROWS
    extra.save()
    assert api.get("/api/v1/statuses/count").json() == ROWS + 1  # below the floor: never cached

    monkeypatch.setattr(pagination, "CACHED_COUNT_FLOOR", 100)
    assert api.get("/api/v1/statuses/count").json() == ROWS + 1
    Status.objects.filter(pk=extra.pk).delete()
    # Within COUNT_CACHE_SECONDS the large total is the cached one; a new filter counts afresh.
    assert api.get("/api/v1/statuses/count").json() == ROWS + 1
    assert api.get("/api/v1/statuses/count?session_id=s1").json() == ROWS
    cache.clear()
    assert api.get("/api/v1/statuses/count").json() == ROWS


@pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's query plans")
@pytest.mark.parametrize(
    "query",
    ["", "?session_id=s1", "?type=LOG", "?sender_name=client-3&type=LOG"],
)
def test_postgresql_reads_each_filtered_page_in_index_order(
    api: Any, statuses: list[int], query: str
) -> None:
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE fl_sessions_status")
    with CaptureQueriesContext(connection) as queries:
        assert api.get(f"/api/v1/statuses/{query}", HTTP_X_LIMIT="100").status_code == 200
    (listing,) = [q["sql"] for q in queries.captured_queries if "ORDER BY" in q["sql"]]
    assert "NULLS" not in listing
    plan = plan_of(listing)
    assert "Index" in plan, plan
    assert "Sort Key" not in plan.replace("Presorted Key", ""), plan


def test_paging_on_from_a_deep_page_reads_from_where_it_ended(api: Any, statuses: list[int]) -> None:
    with CaptureQueriesContext(connection) as first:
        assert page(api, 1_000, 100)[1] == statuses[1_000:1_100]
    for skip in range(1_100, ROWS + 100, 100):
        with CaptureQueriesContext(connection) as queries:
            assert page(api, skip, 100)[1] == statuses[skip : skip + 100]
        # From where the page before ended: a range of the index, no offset.
        assert not [q for q in queries.captured_queries if "OFFSET" in q["sql"].upper()]
    assert [q for q in first.captured_queries if "OFFSET" in q["sql"].upper()]


def test_a_deep_pages_position_is_kept_as_briefly_as_the_total(api: Any, statuses: list[int]) -> None:
    ascending = list(reversed(statuses))
    assert page(api, 1_500, 50, HTTP_X_SORT_ORDER="asc")[1] == ascending[1_500:1_550]
    # A row sorting first moves every row one place on. Within the moment the page's position is
    # kept, the page starts where it did; after it, at the new position.
    Status.objects.create(sender_name="early", timestamp=START - dt.timedelta(days=1), session_id="s1")
    assert page(api, 1_500, 50, HTTP_X_SORT_ORDER="asc")[1] == ascending[1_500:1_550]
    cache.clear()
    assert page(api, 1_500, 50, HTTP_X_SORT_ORDER="asc")[1] == ascending[1_499:1_549]


def test_cached_totals_and_positions_are_kept_apart_per_filter_and_route(
    api: Any, statuses: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pagination, "CACHED_COUNT_FLOOR", 100)
    monkeypatch.setattr(pagination, "DEFERRED_JOIN_SKIP", 50)
    by_sender = {
        name: list(
            Status.objects.filter(sender_name=name).order_by("-timestamp", "-id").values_list("id", flat=True)
        )
        for name in ("client-0", "client-4")  # 358 and 357 rows
    }
    for _ in range(2):  # the second pass reads the totals and positions the first one kept
        for name, ids in by_sender.items():
            got = api.get("/api/v1/statuses/", {"sender_name": name}, HTTP_X_SKIP="100", HTTP_X_LIMIT="60")
            assert got.json() == {"count": len(ids), "result": got.json()["result"]}
            assert [int(row["id"]) for row in got.json()["result"]] == ids[100:160]
            posted = api.post(
                "/api/v1/statuses/list",
                {"sender_name": name},
                format="json",
                HTTP_X_SKIP="160",
                HTTP_X_LIMIT="60",
            ).json()
            assert (posted["count"], [int(row["id"]) for row in posted["result"]]) == (len(ids), ids[160:220])
            assert api.get("/api/v1/statuses/count", {"sender_name": name}).json() == len(ids)
        assert api.get("/api/v1/validations/count").json() == 0
    assert api.get("/api/v1/statuses/count").json() == ROWS


@pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's query plans")
@pytest.mark.parametrize("query", ["", "?type=LOG", "?sender_name=client-3&type=LOG"])
def test_a_page_read_from_a_kept_position_is_one_range_of_the_index(
    api: Any, statuses: list[int], query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pagination, "DEFERRED_JOIN_SKIP", 50)  # the filtered lists hold 179 rows
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE fl_sessions_status")
    path = f"/api/v1/statuses/{query}"
    assert api.get(path, HTTP_X_SKIP="60", HTTP_X_LIMIT="50").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert api.get(path, HTTP_X_SKIP="110", HTTP_X_LIMIT="50").status_code == 200
    (listing,) = [q["sql"] for q in queries.captured_queries if "ORDER BY" in q["sql"]]
    plan = plan_of(listing)
    # The position bounds the index scan itself (an Index Cond), not a filter over the rows read.
    index_condition = [line for line in plan.splitlines() if "Index Cond" in line]
    assert any("ROW(" in line and "timestamp" in line for line in index_condition), plan
    assert "Sort Key" not in plan.replace("Presorted Key", ""), plan
