"""Shared bits of FEDn's flat legacy routes (/add_client, /list_models, ...)."""

from typing import Any

from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api.pagination import MAX_DB_INT, parse_count


def failure(message: str, http_status: int = status.HTTP_200_OK, **extra: Any) -> Response:
    """FEDn's logical failure: often HTTP 200 with success false."""
    return Response({"success": False, "message": message, **extra}, status=http_status)


def success(message: str, **extra: Any) -> Response:
    return Response({"success": True, "message": message, **extra})


def required_param(request: Request, name: str, message: str | None = None) -> str:
    value = request.query_params.get(name)
    if not value:
        raise ValidationError(message or f"Missing {name}.")
    return value


def int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    return parse_count(value, name)


def json_body(request: Request, allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:
    """A JSON object body with only the keys FEDn's function accepts."""
    data = request.data
    if hasattr(data, "dict"):
        data = data.dict()
    if not isinstance(data, dict):
        raise ValidationError("The body must be a JSON object.")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError(f"Unexpected keys: {', '.join(unknown)}")
    missing = sorted(key for key in required if key not in data)
    if missing:
        raise ValidationError(f"Missing keys: {', '.join(missing)}")
    return data


def window(items: Any, request: Request) -> Any:
    """FEDn's legacy paging: only when both limit and skip are given."""
    limit, skip = int_param(request, "limit"), int_param(request, "skip")
    if limit is not None and skip is not None:
        return items[skip : min(skip + limit, MAX_DB_INT)]
    return items
