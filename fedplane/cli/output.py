"""Output: plain-text tables and documents, or JSON."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

MAX_CELL_WIDTH = 48

# The controller answers in FEDn's formats: ISO 8601 in most places, an HTTP date in some
# (`Mon, 01 Dec 2026 04:52:08 GMT`). Both are printed one way, to the second, in UTC.
ISO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
HTTP_DATE = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")


def format_timestamp(text: str) -> str | None:
    """`text` as `YYYY-MM-DD HH:MM:SS UTC` when it is a timestamp, else None."""
    moment: dt.datetime | None = None
    try:
        if ISO_TIMESTAMP.match(text):
            moment = dt.datetime.fromisoformat(text)
        elif HTTP_DATE.match(text):
            moment = email.utils.parsedate_to_datetime(text)
    except ValueError:
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:  # FEDn's naive timestamps are UTC
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def dig(doc: Any, dotted: str) -> Any:
    """`dig(doc, "sender.name")` → doc["sender"]["name"], or None when any step is missing."""
    value = doc
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) and (timestamp := format_timestamp(value)):
        return timestamp
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = " ".join(text.split())
    return text if len(text) <= MAX_CELL_WIDTH else text[: MAX_CELL_WIDTH - 1] + "…"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def print_json(doc: Any, out: TextIO) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str), file=out)


def print_document(doc: Any, out: TextIO) -> None:
    if not isinstance(doc, Mapping):
        print(format_cell(doc), file=out)
        return
    width = max((len(str(key)) for key in doc), default=0)
    for key in sorted(doc):
        value = doc[key]
        if isinstance(value, str):
            text = format_timestamp(value) or value
        else:
            text = json.dumps(value, sort_keys=True, default=str)
        print(f"{str(key).ljust(width)}  {text}", file=out)
