"""Paging by FEDn's X-Limit/X-Skip headers or DRF's ?limit=&offset=, answered as {count, result}."""

import hashlib
from typing import Any

from django.core.cache import cache
from django.core.exceptions import EmptyResultSet
from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response

# A hard ceiling, so one call never materialises an unbounded table.
MAX_PAGE_SIZE = 10_000


# Past this many skipped rows, a page's keys are read first (from the sort index alone) and then
# only its rows: the database steps over index entries for the offset, not over whole rows.
DEFERRED_JOIN_SKIP = 1_000
# A count this large is kept for a moment: paging through a large list asks the same count per page,
# and a total that is a second or two old reads the same there. Smaller counts are always exact.
CACHED_COUNT_FLOOR = 10_000
COUNT_CACHE_SECONDS = 2


# The databases' largest integer: a larger LIMIT or OFFSET is a database error, not an empty page.
MAX_DB_INT = 2**63 - 1


def _ascii_digits(value: str) -> bool:
    # str.isdigit alone also accepts digits such as "²" that int() refuses.
    return value.isascii() and value.isdigit()


def parse_count(value: str, name: str) -> int:
    """A non-negative integer written in ASCII digits and within the database's range; else 400."""
    if not _ascii_digits(value):
        raise ValidationError({name: "must be a non-negative integer"})
    number = int(value)
    if number > MAX_DB_INT:
        raise ValidationError({name: f"must be at most {MAX_DB_INT}"})
    return number


def header_int(request: Request, name: str) -> int:
    """FEDn's parsing: a positive integer string counts; anything else means 0."""
    value = request.headers.get(name, "")
    return parse_count(value, name) if _ascii_digits(value) else 0


def query_int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    return parse_count(value, name)


def page_window(request: Request) -> tuple[int, int]:
    """(limit, skip); limit 0 means no limit below the ceiling."""
    limit = header_int(request, "X-Limit")
    skip = header_int(request, "X-Skip")
    if not limit:
        limit = query_int(request, "limit") or 0
    if not skip:
        skip = query_int(request, "offset") or query_int(request, "skip") or 0
    return min(limit or MAX_PAGE_SIZE, MAX_PAGE_SIZE), skip


def count_of(queryset: QuerySet) -> int:
    """The queryset's size; a large one is served from a cache of a few seconds (CACHED_COUNT_FLOOR)."""
    try:
        sql, params = queryset.query.sql_with_params()
    except EmptyResultSet:
        return 0
    digest = hashlib.sha256(f"{queryset.model._meta.label}|{sql}|{params!r}".encode()).hexdigest()
    key = f"fedplane:count:{digest}"
    cached = cache.get(key)
    if cached is not None:
        return int(cached)
    count = queryset.count()
    if count >= CACHED_COUNT_FLOOR:
        cache.set(key, count, COUNT_CACHE_SECONDS)
    return count


def read_page(queryset: QuerySet, skip: int, limit: int) -> list[Any]:
    """Rows skip..skip+limit of an ordered queryset."""
    if skip < DEFERRED_JOIN_SKIP:
        return list(queryset[skip : skip + limit])
    keys = list(queryset.values_list("pk", flat=True)[skip : skip + limit])
    # The second read keeps the queryset's ordering, joins and prefetches; a row deleted in between
    # is left out, as it would be a moment later anyway.
    return list(queryset.filter(pk__in=keys)) if keys else []


class HeaderLimitOffsetPagination(BasePagination):
    def paginate_queryset(self, queryset: QuerySet, request: Request, view: Any = None) -> list[Any]:
        if not queryset.ordered:
            raise ValueError("Refusing to paginate an unordered queryset")
        limit, skip = page_window(request)
        page = read_page(queryset, skip, limit)
        # A page that ends before its limit ends the list, so the total is known without counting.
        if len(page) < limit and (page or skip == 0):
            self.count = skip + len(page)
        else:
            self.count = count_of(queryset)
        return page

    def get_paginated_response(self, data: list[Any]) -> Response:
        return Response({"count": self.count, "result": data})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["count", "result"],
            "properties": {"count": {"type": "integer"}, "result": schema},
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer"}},
            {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer"}},
            {"name": "X-Limit", "in": "header", "required": False, "schema": {"type": "integer"}},
            {"name": "X-Skip", "in": "header", "required": False, "schema": {"type": "integer"}},
            {"name": "X-Sort-Key", "in": "header", "required": False, "schema": {"type": "string"}},
            {"name": "X-Sort-Order", "in": "header", "required": False, "schema": {"type": "string"}},
        ]
