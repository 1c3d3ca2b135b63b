"""Serializer pieces: write routes refuse unknown keys and loosely typed numbers; read routes
declare every key they answer with, rendered as FEDn renders it."""

import datetime as dt
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane.api.fields import as_http_date, as_plain, as_rfc3339


class StrictSerializer(serializers.Serializer):
    """A serializer that names the keys it does not know instead of silently dropping them."""

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: "unknown key" for key in unknown})
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: strings, booleans and fractions are refused (FEDn: "must be an integer")."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if isinstance(data, float) and not data.is_integer():
            self.fail("invalid")
        return super().to_internal_value(int(data))


# ---------------------------------------------------------------- read fields: FEDn's renderings


class ReadOnlyField(serializers.Field):
    """A response-only field whose text rendering is FEDn's, not DRF's."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        super().__init__(**kwargs)


@extend_schema_field({"type": "string", "example": "Wed, 22 May 2024 14:49:40 GMT"})
class HttpDateField(ReadOnlyField):
    """A datetime as Flask's jsonify writes it."""

    def to_representation(self, value: dt.datetime) -> str | None:
        return as_http_date(value)


@extend_schema_field({"type": "string", "example": "2024-05-22 14:49:40.123456"})
class PlainDateTimeField(ReadOnlyField):
    """A datetime as FEDn's str(datetime.now()): UTC, no offset."""

    def to_representation(self, value: dt.datetime) -> str | None:
        return as_plain(value)


@extend_schema_field({"type": "string", "format": "date-time", "example": "2024-05-22T12:49:40.123456Z"})
class Rfc3339Field(ReadOnlyField):
    """A datetime as protobuf's JSON timestamp."""

    def to_representation(self, value: dt.datetime) -> str | None:
        return as_rfc3339(value)


class ConstantField(ReadOnlyField):
    """A key whose value is fixed (FEDn's `key: "models"`, `parent: {"name": "api"}`)."""

    def __init__(self, value: Any, **kwargs: Any) -> None:
        self.value = value
        kwargs["source"] = "*"
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> Any:
        return self.value


class ConstantFieldSchema(OpenApiSerializerFieldExtension):
    target_class = ConstantField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return constant_schema(self.target.value)


def constant_schema(value: Any) -> dict[str, Any]:
    """The schema of exactly `value`: a one-value enum, or an object of such."""
    if isinstance(value, dict):
        return {
            "type": "object",
            "properties": {key: constant_schema(item) for key, item in value.items()},
            "required": list(value),
        }
    kind = {bool: "boolean", int: "integer", float: "number", str: "string"}[type(value)]
    return {"type": kind, "enum": [value]}


@extend_schema_field({"type": "object", "additionalProperties": True})
class FreeFormObjectField(serializers.JSONField):
    """A stored JSON object returned as it is."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        super().__init__(**kwargs)


class ErrorSerializer(serializers.Serializer):
    """Every error answer: FEDn's `{"success": false, "message": ...}`, and what failed where."""

    success = serializers.BooleanField(help_text="Always false.")
    message = serializers.CharField()
    errors = serializers.JSONField(
        required=False, help_text="The failures by field (an object) or in order (an array)."
    )
