"""Filters in FEDn's style: exact string matches under snake_case, camelCase and dotted names.

In POST /list and /count bodies a value with commas means any-of, as in FEDn.
"""

import datetime as dt
from typing import Any

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request


class FednFilter(django_filters.CharFilter):
    """Exact match; any-of for comma-separated values posted in a filter body."""

    def filter(self, qs: QuerySet, value: Any) -> QuerySet:
        if value in (None, ""):
            return qs
        request = getattr(self.parent, "request", None)
        try:
            if request is not None and request.method == "POST" and "," in value:
                values = [item for item in value.split(",") if item != ""]
                return qs.filter(**{f"{self.field_name}__in": values})
            return super().filter(qs, value)
        except (DjangoValidationError, ValueError, TypeError):
            # Not a value the column can hold (e.g. a non-uuid model id): like FEDn's string match, no hits.
            return qs.none()


class FednDateTimeFilter(django_filters.CharFilter):
    """A day (`2024-05-22`) matches that date; a full timestamp matches exactly."""

    def filter(self, qs: QuerySet, value: Any) -> QuerySet:
        if value in (None, ""):
            return qs
        # A bare day first: parse_datetime would read "2024-05-22" as that day's midnight.
        day = parse_date(value)
        if day is not None:
            return qs.filter(**{f"{self.field_name}__date": day})
        moment = parse_datetime(value.replace(" ", "T", 1))
        if moment is not None:
            if timezone.is_naive(moment):
                moment = timezone.make_aware(moment, dt.UTC)  # FEDn's plain timestamps are UTC
            return qs.filter(**{self.field_name: moment})
        raise ValidationError({self.field_name: f"'{value}' is not a date or timestamp"})


def add_aliases(filterset: type[django_filters.FilterSet], aliases: dict[str, str]) -> None:
    """Serve each filter also under FEDn's other spellings (`sessionId`, `sender.name`)."""
    for alias, target in aliases.items():
        filterset.base_filters[alias] = filterset.base_filters[target]


# Query parameters that steer paging or rendering rather than filter.
NON_FILTER_PARAMS = frozenset({"format", "limit", "offset", "skip"})


class FednFilterBackend(DjangoFilterBackend):
    """Reads filters from the query string, or from the JSON/form body on POST."""

    def get_filterset_kwargs(self, request: Request, queryset: QuerySet, view: Any) -> dict[str, Any]:
        kwargs = super().get_filterset_kwargs(request, queryset, view)
        if request.method == "POST":
            kwargs["data"] = body_filters(request)
            names = set(kwargs["data"])
        else:
            names = set(request.query_params) - NON_FILTER_PARAMS
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is not None:
            refuse_unknown_filters(names, filterset_class)
        return kwargs


def refuse_unknown_filters(names: set[str], filterset_class: type[django_filters.FilterSet]) -> None:
    """A misspelt filter would otherwise be dropped and the whole table answered."""
    unknown = sorted(names - set(filterset_class.base_filters))
    if unknown:
        allowed = ", ".join(sorted(filterset_class.base_filters))
        raise ValidationError(f"Unknown filter {', '.join(unknown)}; filter by one of: {allowed}")


def body_filters(request: Request) -> dict[str, str]:
    data = request.data
    if hasattr(data, "dict"):
        data = data.dict()
    if not isinstance(data, dict):
        raise ValidationError("The filter body must be a JSON object of strings")
    for key, value in data.items():
        if not isinstance(value, str):
            raise ValidationError({key: "filter values must be strings (comma-separated for any-of)"})
    return data
