"""Times in the console read to the second with their time zone, on lists and detail pages alike."""

import datetime as dt
import re
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from apps.sessions.choices import LogLevel, StatusType
from apps.sessions.models import Status

pytestmark = pytest.mark.django_db

WHEN = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)


@pytest.fixture
def event() -> Status:
    return Status.objects.create(
        sender_name="c1",
        status="trained",
        log_level=LogLevel.INFO,
        type=StatusType.LOG,
        timestamp=WHEN,
        session_id="s1",
    )


def test_the_status_list_and_page_show_seconds_and_the_time_zone(
    admin_client: HttpClient, event: Status
) -> None:
    listed = admin_client.get(reverse("admin:fl_sessions_status_changelist")).content.decode()
    shown = admin_client.get(reverse("admin:fl_sessions_status_change", args=[event.pk])).content.decode()
    for page in (listed, shown):
        assert "2026-03-04 05:06:07 UTC" in page
        # No locale-style time ("March 4, 2026, 5:06 a.m.") is left anywhere on the page.
        assert not re.search(r"\d{1,2}:\d{2} [ap]\.m\.", page)


def test_a_configured_time_zone_is_named(admin_client: HttpClient, event: Status, settings: Any) -> None:
    settings.TIME_ZONE = "Europe/Stockholm"
    page = admin_client.get(reverse("admin:fl_sessions_status_change", args=[event.pk])).content.decode()
    assert "2026-03-04 06:06:07 CET" in page
