"""Input no column can store is refused before any view sees it: one place for the whole API.

The JSON, form and multipart parsers (parsers.py) check bodies; this middleware checks what
arrives outside the body: the path, the query string (filters, paging) and the header values.
PostgreSQL refuses NUL in text, and UTF-8 cannot encode an unpaired surrogate; either would
reach the database as a 500 instead of a 400.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from controlplane.api.parsers import UNSTORABLE


def unstorable_part(request: HttpRequest) -> str | None:
    """The name of the first part of the request outside its body holding unstorable text."""
    if UNSTORABLE.search(request.path_info):
        return "the path"
    for key, values in request.GET.lists():
        if UNSTORABLE.search(key) or any(UNSTORABLE.search(value) for value in values):
            return "the query string"
    for key, value in request.META.items():
        if key.startswith("HTTP_") and isinstance(value, str) and UNSTORABLE.search(value):
            return f"the header {key[5:].replace('_', '-').title()}"
    return None


class RefuseUnstorableInput:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        part = unstorable_part(request)
        if part is not None:
            return JsonResponse(
                {
                    "success": False,
                    "message": f"NUL characters and unpaired surrogates are refused in {part}",
                },
                status=400,
            )
        return self.get_response(request)
