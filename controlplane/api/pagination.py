"""Paging by FEDn's X-Limit/X-Skip headers or DRF's ?limit=&offset=, answered as {count, result}."""

from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response

# A hard ceiling, so one call never materialises an unbounded table.
MAX_PAGE_SIZE = 10_000


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


class HeaderLimitOffsetPagination(BasePagination):
    def paginate_queryset(self, queryset: QuerySet, request: Request, view: Any = None) -> list[Any]:
        if not queryset.ordered:
            raise ValueError("Refusing to paginate an unordered queryset")
        limit, skip = page_window(request)
        self.count = queryset.count()
        if skip >= self.count:
            return []
        return list(queryset[skip : skip + limit])

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
