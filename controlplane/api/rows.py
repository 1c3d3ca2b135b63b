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
from django.db.models import Expression, F, Func
from rest_framework import serializers

from controlplane.api.fields import as_http_date, as_plain, as_rfc3339
from controlplane.api.serializers import HttpDateField, PlainDateTimeField, Rfc3339Field

Row = Sequence[Any]
Document = dict[str, Any]
# What values_list reads: a field's name, or an expression over one (Rfc3339Text).
Column = str | Expression

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


class Rfc3339Text(Func):
    """A timestamp column as protobuf's JSON text (as_rfc3339), written by PostgreSQL's to_char.

    Other databases read the column itself, which rfc3339_text then writes out. The text sorts and
    filters as the timestamp does, so a deep page's position may be read from it (`sorts_as`).
    """

    output_field = models.DateTimeField()

    def __init__(self, column: str) -> None:
        super().__init__(F(column))
        self.sorts_as = column

    def as_sql(self, compiler: Any, connection: Any, **extra_context: Any) -> tuple[str, list[Any]]:
        return compiler.compile(self.source_expressions[0])

    def as_postgresql(self, compiler: Any, connection: Any, **extra_context: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"""to_char({sql} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')""", list(params)


def rfc3339_text(value: Any) -> str:
    """An Rfc3339Text column's value: the text PostgreSQL wrote, or a datetime to write out."""
    return value if value.__class__ is str else as_rfc3339(value)


@dataclass(frozen=True)
class RowReader:
    """The columns to read (for `values_list`) and how one row of them becomes a document."""

    columns: tuple[Column, ...]
    document: Callable[[Row], Document]

    def documents(self, rows: Sequence[Row]) -> list[Document]:
        build = self.document
        return [build(row) for row in rows]


@functools.cache
def row_reader(serializer_class: type[serializers.Serializer], model: type[models.Model]) -> RowReader | None:
    """A reader giving `serializer_class`'s documents from rows of `model`; None if it has fields
    a row cannot render the same way (methods, relations, custom to_representation)."""
    columns: list[Column] = []
    document = _compile(serializer_class(), model, columns)
    return None if document is None else RowReader(tuple(columns), document)


def _plain_serializer(serializer: serializers.BaseSerializer) -> bool:
    return (
        isinstance(serializer, serializers.Serializer)
        and type(serializer).to_representation is serializers.Serializer.to_representation
    )


# Renderers that give back a value of the column's own type unchanged: a column that holds no NULL
# is used as read (a text column's value is already the str that str() would return).
UNCHANGED: dict[Callable[[Any], Any], tuple[type[models.Field], ...]] = {
    str: (models.CharField, models.TextField),
    RENDERERS[serializers.ReadOnlyField]: (models.Field,),
}


def _column(model: type[models.Model], source: str) -> models.Field | None:
    """The field of a column values_list returns as the instance attribute holds it, else None."""
    try:
        field = model._meta.pk if source == "pk" else model._meta.get_field(source)
    except FieldDoesNotExist:
        return None
    if field is None or not field.concrete or field.is_relation:
        return None
    return field


def _compile(
    serializer: serializers.BaseSerializer, model: type[models.Model], columns: list[Column]
) -> Callable[[Row], Document] | None:
    """One function building a document from a row: a single dict display per row, compiled once.

    Each value is the column as read where the field's rendering would not change it, the field's
    renderer otherwise, and None for a NULL (as DRF, which never renders None).
    """
    renderers: list[Callable[[Any], Any]] = []
    expression = _expression(serializer, model, columns, renderers)
    if expression is None:
        return None
    namespace = {f"render_{index}": render for index, render in enumerate(renderers)}
    # Only keys (repr) and row positions are written into the source; values stay in `namespace`.
    return eval(f"lambda row: {expression}", namespace)


def _expression(
    serializer: serializers.BaseSerializer,
    model: type[models.Model],
    columns: list[Column],
    renderers: list[Callable[[Any], Any]],
) -> str | None:
    """A Python dict display of `serializer`'s document from `row`, or None if rows cannot give it."""
    if not _plain_serializer(serializer):
        return None
    items: list[str] = []
    for name, field in serializer.fields.items():
        if field.write_only:
            continue
        if isinstance(field, serializers.BaseSerializer):
            nested = _expression(field, model, columns, renderers) if field.source == "*" else None
            if nested is None:
                return None
            items.append(f"{name!r}: {nested}")
            continue
        render = RENDERERS.get(type(field))
        column = _column(model, field.source)
        if render is None or column is None:
            return None
        if render is as_rfc3339 and isinstance(column, models.DateTimeField):
            # Written by the database where it can (PostgreSQL), rather than read into a datetime
            # and written out again here.
            columns.append(Rfc3339Text(field.source))
            render = rfc3339_text
        else:
            columns.append(field.source)
        value = f"row[{len(columns) - 1}]"
        if not column.null and isinstance(column, UNCHANGED.get(render, ())):
            items.append(f"{name!r}: {value}")
            continue
        renderers.append(render)
        rendered = f"render_{len(renderers) - 1}({value})"
        if column.null:
            rendered = f"(None if {value} is None else {rendered})"
        items.append(f"{name!r}: {rendered}")
    return "{" + ", ".join(items) + "}"
