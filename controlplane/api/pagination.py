"""Paging by FEDn's X-Limit/X-Skip headers or DRF's ?limit=&offset=, answered as {count, result}."""

import functools
import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.core.cache import cache
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import F, OrderBy, QuerySet
from django.db.models.expressions import RawSQL
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

# How many compiled lists a process keeps (ListPlan): a list asked for again with the same filters,
# columns and order runs its SQL without its queryset being built and compiled again. A list named
# by longer filter values than KEPT_NAMES_MAX characters is compiled each time, so the kept plans
# stay small whatever a caller sends.
PLANS_KEPT = 1_024
KEPT_NAMES_MAX = 2_000


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


def _counting(queryset: QuerySet) -> tuple[str, tuple[Any, ...]] | None:
    """The SQL counting the queryset's rows (None: it can match nothing)."""
    compiled = _compiled(queryset.order_by())
    if compiled is None:
        return None
    sql, params = compiled
    # What QuerySet.count() asks of a sliced or distinct queryset; the database reads the same
    # index as for a plain COUNT(*), without the subquery's columns.
    return f"SELECT COUNT(*) FROM ({sql}) counted", tuple(params)


Row = Sequence[Any]
# One column's conversions as Django applies them: its position, the functions in turn, its expression.
Converter = tuple[int, tuple[Callable[..., Any], ...], Any]


@dataclass(frozen=True)
class ReadPlan:
    """A values_list queryset as Django compiles it: its SQL and parameters, and the converters
    Django applies to its rows. Run with a slice, it gives the rows `queryset[skip:skip + limit]`
    gives, from the same SQL, without the queryset being built or compiled again.
    """

    db: str
    sql: str | None  # None: the queryset can match nothing
    params: tuple[Any, ...]
    converters: tuple[Converter, ...]

    @classmethod
    def of(cls, queryset: QuerySet) -> "ReadPlan | None":
        """The plan of an unsliced values_list queryset; None for any other (it is run as it is)."""
        query = queryset.query
        if queryset._iterable_class is not ValuesListIterable or query.is_sliced or query.combinator:
            return None
        compiler = query.get_compiler(using=queryset.db)
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet:
            return cls(queryset.db, None, (), ())
        columns = [select[0] for select in compiler.select[: compiler.col_count]]
        if compiler.has_extra_select or compiler.has_composite_fields(columns):
            return None  # rows Django trims or regroups after reading them
        plan = cls(
            queryset.db,
            sql,
            tuple(params),
            tuple(
                (position, tuple(functions), expression)
                for position, (functions, expression) in compiler.get_converters(columns).items()
            ),
        )
        # A slice is the backend's LIMIT/OFFSET clause after the rest: where a backend writes it
        # otherwise, the queryset is run as it is.
        sliced = _compiled(queryset[1:3])
        if sliced != (plan.sliced_sql(1, 2), params):
            return None
        return plan

    def sliced_sql(self, skip: int, limit: int) -> str:
        limits = connections[self.db].ops.limit_offset_sql(skip, skip + limit)
        return f"{self.sql} {limits}"

    def rows(self, skip: int, limit: int) -> list[Row]:
        """Rows skip..skip+limit, as the queryset's [skip:skip + limit] gives them."""
        if self.sql is None:
            return []
        connection = connections[self.db]
        with connection.cursor() as cursor:
            cursor.execute(self.sliced_sql(skip, limit), self.params)
            rows = cursor.fetchall()
        if not self.converters:
            return rows
        converted: list[Row] = []
        for row in rows:
            values = list(row)
            for position, functions, expression in self.converters:
                value = values[position]
                for convert in functions:
                    value = convert(value, expression, connection)
                values[position] = value
            converted.append(tuple(values))
        return converted


class _Wanted:
    """A plan's key and, until the plan is built, how to build it. Hashed and compared by the key
    alone; the builder is dropped once used, so a kept key holds no request."""

    __slots__ = ("build", "key")

    def __init__(self, key: Hashable, build: Callable[[], Any]) -> None:
        self.key = key
        self.build: Callable[[], Any] | None = build

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Wanted) and self.key == other.key


@functools.lru_cache(maxsize=PLANS_KEPT)
def _kept(wanted: _Wanted) -> Any:
    build, wanted.build = wanted.build, None
    if build is None:
        raise RuntimeError("a kept plan is built once")
    return build()


def kept_plan(key: Hashable, build: Callable[[], Any]) -> Any:
    """The plan kept under `key`, built by `build` when there is none (a build that raises keeps none)."""
    return _kept(_Wanted(key, build))


@dataclass(frozen=True)
class ListPlan:
    """What a list's pages need, compiled once: its rows' plan, its count's SQL, its sort key
    (sort_key) and where a row stands in that order (_position_of)."""

    rows: ReadPlan
    # The rows with the list's total after their columns, counted by the same statement: a page of a
    # list whose total is not cached costs one query, not two.
    counted_rows: ReadPlan | None
    counting: tuple[str, tuple[Any, ...]] | None
    sorted_by: tuple[str, bool] | None
    position: Callable[[Any], tuple[Any, Any]] | None

    @classmethod
    def of(cls, queryset: QuerySet) -> "ListPlan | None":
        rows = ReadPlan.of(queryset)
        if rows is None:
            return None
        counting = _counting(queryset)
        counted_rows = None
        if counting is not None:
            counted_rows = ReadPlan.of(queryset.annotate(listing_total=RawSQL(*counting)))
        sorted_by = sort_key(queryset)
        position = None if sorted_by is None else _position_of(queryset, sorted_by[0])
        return cls(rows, counted_rows, counting, sorted_by, position)


class Listing:
    """A list's rows as a request asks for them, and what its pages need: the rows, the total, the
    sort key. The queryset is built (`make`) and compiled only when it is needed.

    The cached total and the cached page positions are keyed by `names`, when the caller can name
    the rows without the SQL (a viewset: its entity and the request's filters), else by the SQL.

    With `shape` as well (what else the queryset depends on: its columns and order), the list is
    compiled once per process (ListPlan, kept under names and shape): a later request for the same
    list runs that SQL, and the queryset is built only for the first read of a deep page.
    """

    def __init__(
        self,
        queryset: QuerySet | Callable[[], QuerySet],
        names: tuple[Any, ...] | None = None,
        *,
        shape: tuple[Any, ...] | None = None,
    ) -> None:
        self.make = (lambda: queryset) if isinstance(queryset, QuerySet) else queryset
        self.names = names
        # The total, when a page was read with it (ListPlan.counted_rows).
        self.total: int | None = None
        kept = names is not None and shape is not None and len(repr(names)) <= KEPT_NAMES_MAX
        self.plan_key = (names, shape) if kept else None

    @cached_property
    def queryset(self) -> QuerySet:
        return self.make()

    @cached_property
    def plan(self) -> ListPlan | None:
        if self.plan_key is None:
            return None
        plan: ListPlan | None = kept_plan(("list", self.plan_key), lambda: ListPlan.of(self.queryset))
        return plan

    @cached_property
    def counting(self) -> tuple[str, tuple[Any, ...]] | None:
        """The SQL counting the rows (None: the list can match nothing)."""
        return self.plan.counting if self.plan is not None else _counting(self.queryset)

    @cached_property
    def digest(self) -> str | None:
        """A key naming the list's rows (None: it can match nothing)."""
        if self.names is not None:
            # The names are the viewset's and its filters': no queryset is built to name the rows.
            return hashlib.sha256(repr(self.names).encode()).hexdigest()
        if self.counting is None:
            return None
        sql, params = self.counting
        label = self.queryset.model._meta.label
        return hashlib.sha256(f"{label}|{sql}|{params!r}".encode()).hexdigest()

    @cached_property
    def sorted_by(self) -> tuple[str, bool] | None:
        return self.plan.sorted_by if self.plan is not None else sort_key(self.queryset)

    @cached_property
    def position(self) -> Callable[[Any], tuple[Any, Any]] | None:
        """How to read (sort key, pk) off one of the rows, if they carry both."""
        if self.plan is not None:
            return self.plan.position
        return None if self.sorted_by is None else _position_of(self.queryset, self.sorted_by[0])

    def rows(self, skip: int, limit: int) -> list[Any]:
        if self.plan is None:
            return list(self.queryset[skip : skip + limit])
        if self.plan.counted_rows is None or self.count_key is None or cache.get(self.count_key) is not None:
            return self.plan.rows.rows(skip, limit)
        counted = self.plan.counted_rows.rows(skip, limit)
        if counted:
            self.total = counted[0][-1]
        return [row[:-1] for row in counted]

    def rows_from(self, field: str, descending: bool, anchor: "Anchor", limit: int) -> list[Any]:
        """The first `limit` rows from `anchor` on, in the list's order."""
        plan: ReadPlan | None = None
        if self.plan is not None:
            plan = kept_plan(
                ("from", self.plan_key, field, descending, anchor),
                lambda: ReadPlan.of(_from_anchor(self.queryset, field, descending, anchor)),
            )
        if plan is None:
            return list(_from_anchor(self.queryset, field, descending, anchor)[:limit])
        return plan.rows(0, limit)

    @cached_property
    def count_key(self) -> str | None:
        return None if self.digest is None else f"fedplane:count:{self.digest}"

    def count(self) -> int:
        """The list's size; a large one is served from a cache of a few seconds (CACHED_COUNT_FLOOR)."""
        if self.count_key is None:
            return 0
        count = self.total
        if count is None:
            cached = cache.get(self.count_key)
            if cached is not None:
                return int(cached)
            if self.counting is None:
                return 0
            sql, params = self.counting
            db = self.plan.rows.db if self.plan is not None else self.queryset.db
            with connections[db].cursor() as cursor:
                cursor.execute(sql, params)
                (count,) = cursor.fetchone()
        if count >= CACHED_COUNT_FLOOR:
            cache.set(self.count_key, count, COUNT_CACHE_SECONDS)
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
    if skip < DEFERRED_JOIN_SKIP:
        return listing.rows(skip, limit)
    sorted_by = listing.sorted_by
    if sorted_by is None or listing.digest is None:
        queryset = listing.queryset
        keys = list(queryset.values_list("pk", flat=True)[skip : skip + limit])
        return list(queryset.filter(pk__in=keys)) if keys else []
    field, descending = sorted_by
    # Positions are of the rows in this order: the key names the rows and their sort.
    digest = f"{listing.digest}:{field}:{'desc' if descending else 'asc'}"
    anchor = cache.get(f"fedplane:page:{digest}:{skip}")
    position = listing.position
    if anchor is not None and position is not None:
        # Where this page starts is known: its rows are a range of the sort index, read at once.
        rows = listing.rows_from(field, descending, anchor, limit)
        if rows:
            # Where the next page starts, so paging on reads a range too. This page's own position
            # is not renewed: it is at most COUNT_CACHE_SECONDS old.
            cache.set(
                f"fedplane:page:{digest}:{skip + len(rows)}",
                (*position(rows[-1]), False),
                COUNT_CACHE_SECONDS,
            )
        return rows
    queryset = listing.queryset
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
    def paginate_queryset(
        self, queryset: QuerySet | Listing, request: Request, view: Any = None
    ) -> list[Any]:
        """A page of a queryset, or of a Listing (a viewset's list, which may be compiled already)."""
        if isinstance(queryset, Listing):
            listing = queryset
        else:
            if not queryset.ordered:
                raise ValueError("Refusing to paginate an unordered queryset")
            names = getattr(view, "listing_names", None)
            listing = Listing(queryset, names() if names is not None else None)
        limit, skip = page_window(request)
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
