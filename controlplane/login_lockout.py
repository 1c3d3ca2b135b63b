"""The answer to a login refused by django-axes: an admin page or JSON, with when to retry."""

import math
from typing import Any

from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import admin
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.utils import timezone


def seconds_until_unlocked(request: HttpRequest, username: str) -> int | None:
    """Seconds left on the lock of this username and address; None while no cool-off is set."""
    cool_off = get_cool_off(request)
    if not cool_off:
        return None
    # The lock is per username and address (AXES_LOCKOUT_PARAMETERS); it ends a cool-off after
    # the last counted failure.
    last = AccessAttempt.objects.filter(
        username=username, ip_address=getattr(request, "axes_ip_address", None)
    ).aggregate(last=Max("attempt_time"))["last"]
    if last is None:
        return math.ceil(cool_off.total_seconds())
    return max(1, math.ceil((last + cool_off - timezone.now()).total_seconds()))


def lockout_response(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict[str, Any] | None = None,
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: axes calls it for every login it refuses."""
    username = get_client_username(request, credentials) or ""
    failure_limit = get_failure_limit(request, credentials)
    retry_after = seconds_until_unlocked(request, username)
    message = f"Login locked after {failure_limit} failed attempts for this username from this address."
    if retry_after is None:
        message += " An operator has to remove the lock."
    else:
        minutes = math.ceil(retry_after / 60)
        message += f" Try again in {minutes} minute{'s' if minutes != 1 else ''}, or ask an operator to remove the lock."

    status = settings.AXES_HTTP_RESPONSE_CODE
    response: HttpResponse
    wants_json = request.get_preferred_type(["text/html", "application/json"]) == "application/json"
    if wants_json or request.headers.get("x-requested-with") == "XMLHttpRequest":
        response = JsonResponse({"success": False, "message": message}, status=status)
    else:
        context = {
            # The admin's header and title, so the page reads as part of the console.
            **admin.site.each_context(request),
            "title": "Login locked",
            "message": message,
            "username": username,
        }
        response = TemplateResponse(request, "admin/login_locked_out.html", context, status=status)
        response.render()
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response
