"""Request parsers: DRF's, with bounds that keep hostile bodies a 4xx."""

import re
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Text no database column can hold: NUL (PostgreSQL) and unpaired surrogates (UTF-8 itself).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def refuse_unstorable_strings(data: Any) -> None:
    """ParseError when any key or string in `data` could not be stored as text."""
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if UNSTORABLE.search(item):
                raise ParseError("JSON strings may not contain NUL characters or unpaired surrogates")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


class BoundedJSONParser(JSONParser):
    """JSON nested past the interpreter's stack, or with strings no column can hold, is a 400."""

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply") from exc
        refuse_unstorable_strings(data)
        return data
