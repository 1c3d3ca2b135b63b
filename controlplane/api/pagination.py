"""Paging by FEDn's X-Limit/X-Skip headers or DRF's ?limit=&offset=, answered as {count, result}."""

import hashlib
from collections.abc import Callable
from functools import cached_property
from typing import Any

from django.core.cache import cache
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import F, OrderBy, QuerySet
from django.db.models.fields.tuple_lookups import (
    TupleGreaterThan,
    TupleGreaterThanOrEqual,
    TupleLessThan,
    TupleLessThanOrEqual,
)
from django.db.models.query import ModelIterable, ValuesListIterable
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response

# A hard ceiling, so one call never materialises an unbounded table.
MAX_PAGE_SIZE = 10_000


# Past this many skipped rows, a page's keys are read first (from the sort index alone) and then
# only its rows: the database steps over index entries for the offset, not over whole rows. Where
# such a page and the next one start is kept for COUNT_CACHE_SECONDS, so reading on from there (or
# the same page again) reads a range of the index instead of stepping over the offset again.
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


def _compiled(queryset: QuerySet) -> tuple[str, tuple[Any, ...]] | None:
    """The queryset's SQL and parameters on its database (None: it can match nothing)."""
    try:
        return queryset.query.get_compiler(using=queryset.db).as_sql()
    except EmptyResultSet:
        return None


class Listing:
    """A list's rows as a request asks for them: its queryset, written out without its ordering at
    most once. That SQL is what is counted; writing it costs as much as running a page.

    The cached total and the cached page positions are keyed by `names`, when the caller can name
    the rows without the SQL (a viewset: its entity and the request's filters), else by the SQL.
    """

    def __init__(self, queryset: QuerySet, names: tuple[Any, ...] | None = None) -> None:
        self.queryset = queryset
        self.names = names

    @cached_property
    def unordered_sql(self) -> tuple[str, tuple[Any, ...]] | None:
        return _compiled(self.queryset.order_by())

    @cached_property
    def digest(self) -> str | None:
        """A key naming the list's rows (None: it can match nothing)."""
        label = self.queryset.model._meta.label
        if self.names is not None:
            return hashlib.sha256(f"{label}|{self.names!r}".encode()).hexdigest()
        if self.unordered_sql is None:
            return None
        sql, params = self.unordered_sql
        return hashlib.sha256(f"{label}|{sql}|{params!r}".encode()).hexdigest()

    def count(self) -> int:
        """The list's size; a large one is served from a cache of a few seconds (CACHED_COUNT_FLOOR)."""
        if self.digest is None:
            return 0
        key = f"fedplane:count:{self.digest}"
        cached = cache.get(key)
        if cached is not None:
            return int(cached)
        if self.unordered_sql is None:
            return 0
        sql, params = self.unordered_sql
        # What QuerySet.count() asks of a sliced or distinct queryset; the database reads the same
        # index as for a plain COUNT(*), without the subquery's columns.
        with connections[self.queryset.db].cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM ({sql}) counted", params)
            (count,) = cursor.fetchone()
        if count >= CACHED_COUNT_FLOOR:
            cache.set(key, count, COUNT_CACHE_SECONDS)
        return count


def count_of(queryset: QuerySet, names: tuple[Any, ...] | None = None) -> int:
    """The queryset's size; a large one is served from a cache of a few seconds (CACHED_COUNT_FLOOR)."""
    return Listing(queryset, names).count()


def sort_key(queryset: QuerySet) -> tuple[str, bool] | None:
    """(field, descending) of a list ordered by one field without NULLs and then the primary key in
    the same direction, as FednReadViewSet.sort_queryset orders one; None for any other order."""
    order = queryset.query.order_by
    if len(order) != 2 or not all(
        isinstance(item, OrderBy) and isinstance(item.expression, F) for item in order
    ):
        return None
    first, last = order
    if first.nulls_first or first.nulls_last or last.expression.name != "pk":
        return None
    if first.descending != last.descending:
        return None
    return first.expression.name, first.descending


# Where a deep page starts: the sort key and id of its first row, and whether that row is included.
Anchor = tuple[Any, Any, bool]


def _from_anchor(queryset: QuerySet, field: str, descending: bool, anchor: Anchor) -> QuerySet:
    """The rows from `anchor` on in the list's order: a range of the sort index, no offset."""
    value, pk, inclusive = anchor
    # One row-value comparison, (field, pk) past (value, pk): PostgreSQL bounds the index scan with
    # it, where "field past value, or equal with pk past" was a filter over the rows read.
    past = {
        (True, True): TupleLessThanOrEqual,
        (True, False): TupleLessThan,
        (False, True): TupleGreaterThanOrEqual,
        (False, False): TupleGreaterThan,
    }[descending, inclusive]
    return queryset.filter(past((F(field), F("pk")), (value, pk)))


def _position_of(queryset: QuerySet, field: str) -> Callable[[Any], tuple[Any, Any]] | None:
    """How to read (sort key, pk) off one of the queryset's rows, if its rows carry both."""
    if issubclass(queryset._iterable_class, ModelIterable):
        return lambda row: (getattr(row, field), row.pk)
    if queryset._iterable_class is ValuesListIterable:
        # A column read through an expression that sorts as the field (`sorts_as`, e.g. the
        # timestamp written as text) gives the field's value as well.
        annotations = queryset.query.annotations
        names = [
            getattr(annotations.get(name), "sorts_as", name) if name in annotations else name
            for name in queryset._fields
        ]
        if field in names and "pk" in names:
            at_field, at_pk = names.index(field), names.index("pk")
            return lambda row: (row[at_field], row[at_pk])
    return None


def read_page(listing: Listing, skip: int, limit: int) -> list[Any]:
    """Rows skip..skip+limit of an ordered list."""
    queryset = listing.queryset
    if skip < DEFERRED_JOIN_SKIP:
        return list(queryset[skip : skip + limit])
    sorted_by = sort_key(queryset)
    if sorted_by is None or listing.digest is None:
        keys = list(queryset.values_list("pk", flat=True)[skip : skip + limit])
        return list(queryset.filter(pk__in=keys)) if keys else []
    field, descending = sorted_by
    # Positions are of the rows in this order: the key names the rows and their sort.
    digest = f"{listing.digest}:{field}:{'desc' if descending else 'asc'}"
    anchor = cache.get(f"fedplane:page:{digest}:{skip}")
    position = _position_of(queryset, field)
    if anchor is not None and position is not None:
        # Where this page starts is known: its rows are a range of the sort index, read at once.
        rows = list(_from_anchor(queryset, field, descending, anchor)[:limit])
        if rows:
            # Where the next page starts, so paging on reads a range too. This page's own position
            # is not renewed: it is at most COUNT_CACHE_SECONDS old.
            cache.set(
                f"fedplane:page:{digest}:{skip + len(rows)}",
                (*position(rows[-1]), False),
                COUNT_CACHE_SECONDS,
            )
        return rows
    if anchor is None:
        pairs = list(queryset.values_list(field, "pk")[skip : skip + limit])
    else:
        pairs = list(_from_anchor(queryset, field, descending, anchor).values_list(field, "pk")[:limit])
    keys = [pk for _, pk in pairs]
    if pairs:
        # Where this page and the next start: paging on (or asking this page again) reads a
        # range of the index instead of stepping over `skip` entries. Kept as briefly as the
        # totals, so a page's position is at most COUNT_CACHE_SECONDS old.
        cache.set_many(
            {
                f"fedplane:page:{digest}:{skip}": (*pairs[0], True),
                f"fedplane:page:{digest}:{skip + len(pairs)}": (*pairs[-1], False),
            },
            COUNT_CACHE_SECONDS,
        )
    # The second read keeps the queryset's ordering, joins and prefetches; a row deleted in between
    # is left out, as it would be a moment later anyway.
    return list(queryset.filter(pk__in=keys)) if keys else []


class HeaderLimitOffsetPagination(BasePagination):
    def paginate_queryset(self, queryset: QuerySet, request: Request, view: Any = None) -> list[Any]:
        if not queryset.ordered:
            raise ValueError("Refusing to paginate an unordered queryset")
        limit, skip = page_window(request)
        names = getattr(view, "listing_names", None)
        listing = Listing(queryset, names() if names is not None else None)
        page = read_page(listing, skip, limit)
        # A page that ends before its limit ends the list, so the total is known without counting.
        if len(page) < limit and (page or skip == 0):
            self.count = skip + len(page)
        else:
            self.count = listing.count()
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
