"""Timestamps rendered the way FEDn 0.9.5's JSON renders each one."""

import datetime as dt

from django.utils import timezone
from django.utils.http import http_date


def as_http_date(value: dt.datetime | None) -> str | None:
    """Flask's jsonify of a datetime: `Wed, 22 May 2024 14:49:40 GMT`."""
    return http_date(value.timestamp()) if value else None


def as_plain(value: dt.datetime | None) -> str | None:
    """FEDn's `str(datetime.now())`: `2024-05-22 14:49:40.123456`."""
    if value is None:
        return None
    return timezone.localtime(value, dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def as_rfc3339(value: dt.datetime | None) -> str | None:
    """Protobuf's JSON timestamp: `2024-05-22T12:49:40.123456Z`."""
    if value is None:
        return None
    if value.tzinfo is dt.UTC:
        # As the database hands timestamps back: already in UTC, so only "+00:00" becomes "Z".
        return value.isoformat(timespec="microseconds")[:-6] + "Z"
    return timezone.localtime(value, dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
