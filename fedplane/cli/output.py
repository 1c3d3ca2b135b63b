"""Output: plain-text tables and documents, or JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

MAX_CELL_WIDTH = 48


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
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        print(f"{str(key).ljust(width)}  {text}", file=out)
