"""Paging by FEDn's X-Limit/X-Skip headers or DRF's ?limit=&offset=, answered as {count, result}."""

from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response

# A hard ceiling, so one call never materialises an unbounded table.
MAX_PAGE_SIZE = 10_000


def header_int(request: Request, name: str) -> int:
    """FEDn's parsing: a positive integer string counts; anything else means 0."""
    value = request.headers.get(name, "")
    return int(value) if value.isdigit() else 0


def query_int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise ValidationError({name: "must be a non-negative integer"})
    return int(value)


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
