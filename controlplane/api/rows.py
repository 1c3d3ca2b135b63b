"""A read serializer's documents built straight from database rows, for list pages.

DRF serializes a page by building a model instance per row and then asking every field of every
row for its attribute and rendering; for a page of 100 statuses that is most of the request's time.
For a serializer made only of plain fields (a column rendered by a function of its value, and
nested serializers of the same row, `source="*"`), `row_reader` compiles the same documents from
`values_list` rows: the same keys in the same order, None where DRF gives None, and each value
rendered by the function the field itself renders with. Any other serializer gets no reader and
keeps DRF's path.
"""

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from rest_framework import serializers

from controlplane.api.fields import as_http_date, as_plain, as_rfc3339
from controlplane.api.serializers import HttpDateField, PlainDateTimeField, Rfc3339Field

Row = Sequence[Any]
Document = dict[str, Any]

# Fields whose rendering is a function of the value alone, by exact class (a subclass may render
# otherwise): the function each one's to_representation applies.
RENDERERS: dict[type[serializers.Field], Callable[[Any], Any]] = {
    serializers.CharField: str,
    serializers.IntegerField: int,
    serializers.ReadOnlyField: lambda value: value,
    HttpDateField: as_http_date,
    PlainDateTimeField: as_plain,
    Rfc3339Field: as_rfc3339,
}


@dataclass(frozen=True)
class RowReader:
    """The columns to read (for `values_list`) and how one row of them becomes a document."""

    columns: tuple[str, ...]
    document: Callable[[Row], Document]

    def documents(self, rows: Sequence[Row]) -> list[Document]:
        build = self.document
        return [build(row) for row in rows]


@functools.cache
def row_reader(serializer_class: type[serializers.Serializer], model: type[models.Model]) -> RowReader | None:
    """A reader giving `serializer_class`'s documents from rows of `model`; None if it has fields
    a row cannot render the same way (methods, relations, custom to_representation)."""
    columns: list[str] = []
    document = _compile(serializer_class(), model, columns)
    return None if document is None else RowReader(tuple(columns), document)


def _plain_serializer(serializer: serializers.BaseSerializer) -> bool:
    return (
        isinstance(serializer, serializers.Serializer)
        and type(serializer).to_representation is serializers.Serializer.to_representation
    )


def _column(model: type[models.Model], source: str) -> bool:
    """Whether `source` names a column values_list returns as the instance attribute holds it."""
    if source == "pk":
        return True
    try:
        field = model._meta.get_field(source)
    except FieldDoesNotExist:
        return False
    return bool(field.concrete) and not field.is_relation


def _compile(
    serializer: serializers.BaseSerializer, model: type[models.Model], columns: list[str]
) -> Callable[[Row], Document] | None:
    if not _plain_serializer(serializer):
        return None
    # (key, column index or None for a nested document, renderer or nested builder)
    parts: list[tuple[str, int | None, Callable[[Any], Any]]] = []
    for name, field in serializer.fields.items():
        if field.write_only:
            continue
        if isinstance(field, serializers.BaseSerializer):
            nested = _compile(field, model, columns) if field.source == "*" else None
            if nested is None:
                return None
            parts.append((name, None, nested))
            continue
        render = RENDERERS.get(type(field))
        if render is None or not _column(model, field.source):
            return None
        columns.append(field.source)
        parts.append((name, len(columns) - 1, render))

    def document(row: Row) -> Document:
        built: Document = {}
        for name, index, render in parts:
            if index is None:
                built[name] = render(row)
            else:
                value = row[index]
                # As DRF: a None attribute is None, never rendered.
                built[name] = None if value is None else render(value)
        return built

    return document
