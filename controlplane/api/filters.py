"""Filters in FEDn's style: exact string matches under snake_case, camelCase and dotted names.

In POST /list and /count bodies a value with commas means any-of, as in FEDn.
"""

import copy
import datetime as dt
import re
from collections.abc import Collection
from typing import Any, ClassVar

import django_filters
from django import forms
from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.db.models import QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.http import QueryDict
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import translate_validation
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from controlplane.api.pagination import MAX_DB_INT

# An integer as the databases take it: ASCII digits (int() also takes "٣", "1_000" and spaces).
INTEGER = re.compile(r"-?[0-9]+")


def target_field(model: type[models.Model], path: str) -> models.Field | None:
    """The model field a filter's `field_name` (which may follow relations) ends on."""
    field: Any = None
    for name in path.split(LOOKUP_SEP):
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            return None
        if field.is_relation and field.related_model is not None:
            model = field.related_model
    return field


def may_be_null(model: type[models.Model], path: str) -> bool:
    """Whether a field path can yield NULL: a nullable column, or a nullable relation on the way."""
    for name in path.split(LOOKUP_SEP):
        try:
            field: Any = model._meta.get_field(name)
        except FieldDoesNotExist:
            return True
        if field.null:
            return True
        if field.is_relation and field.related_model is not None:
            model = field.related_model
    return False


def strict_integer(value: str, name: str) -> int:
    """An integer filter value, or a 400: a value past the database's range is an error there."""
    if not INTEGER.fullmatch(value) or not -MAX_DB_INT - 1 <= int(value) <= MAX_DB_INT:
        raise ValidationError({name: f"'{value}' is not an integer the database can hold"})
    return int(value)


class FednFilter(django_filters.CharFilter):
    """Exact match; any-of for comma-separated values posted in a filter body.

    The value is matched as sent, spaces included (FEDn hands it to MongoDB as it is); a form
    field would otherwise strip it, and ` client-1` would match `client-1`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("strip", False)
        super().__init__(*args, **kwargs)

    def filter(self, qs: QuerySet, value: Any) -> QuerySet:
        if value in (None, ""):
            return qs
        request = getattr(self.parent, "request", None)
        any_of = request is not None and request.method == "POST" and "," in value
        values: list[Any] = [item for item in value.split(",") if item != ""] if any_of else [value]
        if isinstance(target_field(qs.model, self.field_name), models.IntegerField):
            values = [strict_integer(item, self.field_name) for item in values]
        try:
            if any_of:
                return qs.filter(**{f"{self.field_name}__in": values})
            return super().filter(qs, values[0])
        except (DjangoValidationError, ValueError, TypeError):
            # Not a value the column can hold (e.g. a non-uuid model id): like FEDn's string match, no hits.
            return qs.none()


class FednDateTimeFilter(django_filters.CharFilter):
    """A day (`2024-05-22`) matches that date; a full timestamp matches exactly."""

    def filter(self, qs: QuerySet, value: Any) -> QuerySet:
        if value in (None, ""):
            return qs
        refusal = ValidationError({self.field_name: f"'{value}' is not a date or timestamp"})
        try:
            # A bare day first: parse_datetime would read "2024-05-22" as that day's midnight.
            day = parse_date(value)
            moment = None if day is not None else parse_datetime(value.replace(" ", "T", 1))
        except ValueError as exc:  # well-formed but no such day or time, e.g. "2024-13-45"
            raise refusal from exc
        if day is not None:
            return qs.filter(**{f"{self.field_name}__date": day})
        if moment is not None:
            if timezone.is_naive(moment):
                moment = timezone.make_aware(moment, dt.UTC)  # FEDn's plain timestamps are UTC
            try:
                moment = moment.astimezone(dt.UTC)
            except OverflowError as exc:  # e.g. 9999-12-31T23:59-05:00 is past year 9999 in UTC
                raise refusal from exc
            return qs.filter(**{self.field_name: moment})
        raise refusal


def add_aliases(filterset: type[django_filters.FilterSet], aliases: dict[str, str]) -> None:
    """Serve each filter also under FEDn's other spellings (`sessionId`, `sender.name`)."""
    for alias, target in aliases.items():
        filterset.base_filters[alias] = filterset.base_filters[target]


# Query parameters that steer paging or rendering rather than filter.
NON_FILTER_PARAMS = frozenset({"format", "limit", "offset", "skip"})


class FednFilterSet(django_filters.FilterSet):
    """A FilterSet whose form class is built once per filterset class (and set of filters), not on
    every request, and whose filters are copied per request without a deep copy of each.

    With `only`, the filterset holds just the named filters: those a request sends. A filter given
    no value filters nothing, so the others need no form field to clean and no call to make.
    """

    _form_classes: ClassVar[dict[tuple[type, tuple[str, ...]], type[forms.Form]]] = {}

    def __init__(
        self,
        data: Any = None,
        queryset: QuerySet | None = None,
        *,
        request: Request | None = None,
        prefix: str | None = None,
        only: Collection[str] | None = None,
    ) -> None:
        # As django-filter's BaseFilterSet.__init__, which deep-copies every filter (with its form
        # field and arguments) per request. A request sets only `model` and `parent` on its
        # filters, so a shallow copy of each keeps requests apart.
        if queryset is None:
            queryset = self._meta.model._default_manager.all()
        self.is_bound = data is not None
        self.data = data or QueryDict()
        self.queryset = queryset
        self.request = request
        self.form_prefix = prefix
        self.filters = {
            name: copy.copy(filter_)
            for name, filter_ in self.base_filters.items()
            if only is None or name in only
        }
        for filter_ in self.filters.values():
            filter_.model = queryset.model
            filter_.parent = self

    def get_form_class(self) -> type[forms.Form]:
        # The form's fields come from the declared filters alone, so one class serves every request
        # with the same filters.
        key = (type(self), tuple(self.filters))
        form_class = self._form_classes.get(key)
        if form_class is None:
            form_class = self._form_classes[key] = super().get_form_class()
        return form_class


class FednFilterBackend(DjangoFilterBackend):
    """Reads filters from the query string, or from the JSON/form body on POST."""

    def filter_queryset(self, request: Request, queryset: QuerySet, view: Any) -> QuerySet:
        values = self.filter_values(request)
        if not values:
            # Nothing to filter by (checked like any filter body): the filterset would change nothing.
            return queryset
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is None:
            return queryset
        kwargs = self.get_filterset_kwargs(request, queryset, view)
        if issubclass(filterset_class, FednFilterSet):
            kwargs["only"] = frozenset(values)
        filterset = filterset_class(**kwargs)
        if not filterset.is_valid() and self.raise_exception:
            raise translate_validation(filterset.errors)
        return filterset.qs

    def filter_values(self, request: Request) -> dict[str, Any]:
        if request.method == "POST":
            return body_filters(request)
        return {name: value for name, value in request.query_params.items() if name not in NON_FILTER_PARAMS}

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
