"""Compiled lists: a list asked for again with the same filters, order and shape runs the SQL Django
wrote for it the first time, and a page whose total is not cached is read with its total by one query.
"""

import datetime as dt
import gc
import weakref
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from django.core.cache import cache
from django.db import connection
from django.db.models import F
from django.db.models.sql.compiler import SQLCompiler
from django.test.utils import CaptureQueriesContext

from apps.sessions.choices import StatusType
from apps.sessions.models import Session, Status
from controlplane.api import pagination

pytestmark = pytest.mark.django_db

START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def no_kept_plans() -> Iterator[None]:
    """Each test starts with no compiled list kept, and no cached total or position."""
    pagination._kept.cache_clear()
    cache.clear()
    yield
    pagination._kept.cache_clear()


@pytest.fixture
def statuses() -> None:
    """30 updates and 10 logs from client-a, 5 updates from client-b; one per second."""
    rows = [("client-a", StatusType.MODEL_UPDATE)] * 30 + [("client-a", StatusType.LOG)] * 10
    rows += [("client-b", StatusType.MODEL_UPDATE)] * 5
    Status.objects.bulk_create(
        Status(
            sender_name=sender,
            type=kind,
            status=f"event {index}",
            timestamp=START + dt.timedelta(seconds=index),
            session_id="s1",
        )
        for index, (sender, kind) in enumerate(rows)
    )


class Compiles:
    """How many statements Django compiled (SQLCompiler.as_sql calls) while it was entered."""

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> "Compiles":
        original = SQLCompiler.as_sql

        def counted(compiler: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(compiler, *args, **kwargs)

        self._patch = mock.patch.object(SQLCompiler, "as_sql", counted)
        self._patch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._patch.stop()


def listed(api: Any, path: str, **headers: str) -> dict[str, Any]:
    answer = api.get(path, **headers)
    assert answer.status_code == 200, answer.content
    return answer.json()


def test_a_list_asked_for_again_is_not_compiled_again(api: Any, statuses: None) -> None:
    path = "/api/v1/statuses/?sender.name=client-a&type=MODEL_UPDATE&limit=10"
    with Compiles() as first:
        first_answer = listed(api, path)
    with Compiles() as again:
        second_answer = listed(api, path)
    assert first.count > 0
    assert again.count == 0
    assert second_answer == first_answer
    assert first_answer["count"] == 30
    assert [row["status"] for row in first_answer["result"]] == [f"event {n}" for n in range(29, 19, -1)]

    # Another value of the same filter is another list: compiled for itself, with its own rows.
    with Compiles() as other:
        other_answer = listed(api, "/api/v1/statuses/?sender.name=client-b&type=MODEL_UPDATE&limit=10")
    assert other.count > 0
    assert other_answer["count"] == 5
    assert {row["sender"]["name"] for row in other_answer["result"]} == {"client-b"}


def test_every_page_of_a_compiled_list_is_the_slice_of_the_ordered_list(api: Any, statuses: None) -> None:
    expected = list(
        Status.objects.filter(sender_name="client-a")
        .order_by("-timestamp", "-id")
        .values_list("status", flat=True)
    )
    for skip in range(0, 45, 7):
        body = listed(api, f"/api/v1/statuses/?sender.name=client-a&limit=7&offset={skip}")
        assert [row["status"] for row in body["result"]] == expected[skip : skip + 7]
        assert body["count"] == 40


def test_rows_written_after_a_list_was_compiled_are_listed(api: Any, statuses: None) -> None:
    path = "/api/v1/statuses/?sender.name=client-b&limit=3"
    assert listed(api, path)["count"] == 5
    Status.objects.create(
        sender_name="client-b", type=StatusType.LOG, status="late", timestamp=START + dt.timedelta(days=1)
    )
    body = listed(api, path)
    assert body["count"] == 6
    assert body["result"][0]["status"] == "late"


def test_a_page_and_its_uncached_total_are_one_query(api: Any, statuses: None) -> None:
    path = "/api/v1/statuses/?sender.name=client-a&type=MODEL_UPDATE&limit=10"
    listed(api, path)  # compiled
    with CaptureQueriesContext(connection) as queries:
        body = listed(api, path)
    assert body["count"] == 30
    assert len(body["result"]) == 10
    assert len(queries.captured_queries) == 1, [query["sql"] for query in queries.captured_queries]
    assert "COUNT(*)" in queries.captured_queries[0]["sql"]


def test_a_cached_total_is_not_counted_again_with_the_page(
    api: Any, statuses: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pagination, "CACHED_COUNT_FLOOR", 20)
    path = "/api/v1/statuses/?sender.name=client-a&limit=10"
    assert listed(api, path)["count"] == 40  # counted with its page, and kept: 40 >= 20
    with CaptureQueriesContext(connection) as queries:
        body = listed(api, path)
    assert body["count"] == 40
    assert len(queries.captured_queries) == 1
    assert "COUNT(*)" not in queries.captured_queries[0]["sql"]


def test_refused_filters_and_sort_keys_are_refused_every_time(api: Any, statuses: None) -> None:
    for path, headers in [
        ("/api/v1/statuses/?sender_nam=client-a", {}),
        ("/api/v1/statuses/?timestamp=not-a-day", {}),
        ("/api/v1/statuses/", {"HTTP_X_SORT_KEY": "nonsense"}),
    ]:
        for _ in range(3):
            answer = api.get(path, **headers)
            assert answer.status_code == 400, (path, answer.content)
            assert answer["Content-Type"].startswith("application/json")


def test_lists_differing_only_in_method_order_or_shape_are_kept_apart(api: Any, statuses: None) -> None:
    # A comma is any-of in a POSTed filter, and part of the value in a query string.
    assert listed(api, "/api/v1/statuses/?sender_name=client-a,client-b")["count"] == 0
    posted = api.post("/api/v1/statuses/list", {"sender_name": "client-a,client-b"}, format="json")
    assert posted.status_code == 200, posted.content
    assert posted.json()["count"] == 45

    newest = listed(api, "/api/v1/statuses/?sender.name=client-b")["result"]
    oldest = listed(api, "/api/v1/statuses/?sender.name=client-b", HTTP_X_SORT_ORDER="asc")["result"]
    assert [row["id"] for row in oldest] == [row["id"] for row in reversed(newest)]

    typed = listed(api, "/api/v1/statuses/?sender.name=client-b")["result"][0]
    raw = listed(api, "/api/v1/statuses/?sender.name=client-b", HTTP_X_SKIP_TYPING="true")["result"][0]
    assert "log_level" in typed and "logLevel" not in typed
    assert "logLevel" in raw and "log_level" not in raw


def test_a_plan_runs_the_sql_django_writes_for_each_slice() -> None:
    """The plan's SQL with a slice is Django's own SQL for that slice, and its rows are Django's rows,
    converted as Django converts them (a JSON column here, on either database)."""
    for number in range(12):
        Session.objects.create(session_id=f"plan-{number:02d}", extra_config={"n": number, "tag": ["x"]})
    queryset = Session.objects.order_by(F("session_id").desc(), F("pk").desc()).values_list(
        "pk", "session_id", "extra_config"
    )
    plan = pagination.ReadPlan.of(queryset)
    assert plan is not None
    assert plan.converters, "the JSON column is converted"
    for skip, limit in [(0, 5), (5, 5), (10, 5), (3, 1), (0, 100), (12, 5)]:
        sql, params = queryset[skip : skip + limit].query.get_compiler(using=queryset.db).as_sql()
        assert plan.sliced_sql(skip, limit) == sql
        assert plan.params == tuple(params)
        assert plan.rows(skip, limit) == list(queryset[skip : skip + limit])


def test_a_list_that_can_match_nothing_is_planned_as_empty(api: Any, statuses: None) -> None:
    empty = Status.objects.none().order_by("-timestamp").values_list("pk")
    plan = pagination.ReadPlan.of(empty)
    assert plan is not None and plan.sql is None
    assert plan.rows(0, 10) == []


def test_a_kept_plan_is_built_once_and_keeps_nothing_of_its_builder() -> None:
    class Request:
        pass

    request = Request()
    alive = weakref.ref(request)
    builds: list[str] = []

    def build(seen: Request = request) -> str:
        builds.append("built")
        return "plan"

    assert pagination.kept_plan(("key", 1), build) == "plan"
    del request, build
    gc.collect()
    assert alive() is None, "the kept key still holds what its builder closed over"
    assert pagination.kept_plan(("key", 1), lambda: "another") == "plan"
    assert builds == ["built"]


def test_a_build_that_raises_keeps_nothing() -> None:
    def refuse() -> str:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        pagination.kept_plan(("refused", 1), refuse)
    assert pagination.kept_plan(("refused", 1), lambda: "built") == "built"


def test_a_list_named_by_long_filter_values_is_not_kept(api: Any, statuses: None) -> None:
    long_name = "client-" + "x" * pagination.KEPT_NAMES_MAX
    for _ in range(2):
        with Compiles() as compiles:
            body = listed(api, f"/api/v1/statuses/?sender.name={long_name}")
        assert body == {"count": 0, "result": []}
        assert compiles.count > 0
    assert pagination._kept.cache_info().currsize == 0
