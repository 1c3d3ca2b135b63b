"""Request parsers: DRF's, with bounds that keep hostile bodies a 4xx."""

import json
import re
from typing import Any

from django.http import QueryDict
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import BaseParser, DataAndFiles, FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request

# Text no database column can hold: NUL (PostgreSQL) and unpaired surrogates (UTF-8 itself).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def refuse_unstorable_strings(data: Any, what: str = "JSON strings") -> None:
    """ParseError when any key or string in `data` could not be stored as text."""
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if UNSTORABLE.search(item):
                raise ParseError(f"{what} may not contain NUL characters or unpaired surrogates")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, QueryDict):
            for key, values in item.lists():
                pending.append(key)
                pending.extend(values)
        elif isinstance(item, list):
            pending.extend(item)


class UnstorableJSON(ValueError):
    """JSON text nested past the stack or holding strings no column can store."""


def loads_storable(text: str | bytes) -> Any:
    """json.loads for JSON that arrives inside a form field: the same bounds as the JSON parser.

    Raises ValueError (json's own, or UnstorableJSON) for anything the parser would refuse.
    """
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise UnstorableJSON("nested too deeply") from exc
    try:
        refuse_unstorable_strings(data)
    except ParseError as exc:
        raise UnstorableJSON(str(exc.detail)) from exc
    return data


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


class StorableFormParser(FormParser):
    """URL-encoded form fields that no column could hold are a 400, as in JSON."""

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None
    ) -> Any:
        data = super().parse(stream, media_type, parser_context)
        refuse_unstorable_strings(data, "form fields")
        return data


class StorableMultiPartParser(MultiPartParser):
    """Multipart fields that no column could hold are a 400, as in JSON."""

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None
    ) -> DataAndFiles:
        parsed = super().parse(stream, media_type, parser_context)
        # File names need no check: Django drops their non-printable characters.
        refuse_unstorable_strings(parsed.data, "form fields")
        refuse_unstorable_strings(list(parsed.files), "form fields")
        return parsed


# DRF's stock parsers and their bounded versions: a view that names the stock ones still gets these.
HARDENED_PARSERS: dict[type[BaseParser], type[BaseParser]] = {
    JSONParser: BoundedJSONParser,
    FormParser: StorableFormParser,
    MultiPartParser: StorableMultiPartParser,
}


class HardenedContentNegotiation(DefaultContentNegotiation):
    """Every view's body goes through the bounded parsers, whatever its parser_classes say."""

    def select_parser(self, request: Request, parsers: list[BaseParser]) -> BaseParser | None:
        parser = super().select_parser(request, parsers)
        hardened = HARDENED_PARSERS.get(type(parser))
        return hardened() if hardened is not None else parser
