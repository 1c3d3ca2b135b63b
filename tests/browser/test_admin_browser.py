"""The operator console in a real browser: log in, look at the dashboard and a session page.

Drives Debian's /usr/bin/chromium through Playwright (no downloaded browser build) against
pytest-django's live_server, and keeps screenshots under var/screenshots/ for a person to look at.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from apps.models.tests.test_admin import make_seed
from apps.packages.tests.test_admin import make_package
from apps.sessions.tests.test_admin import build_finished_session

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
# Milliseconds; every browser wait ends by then.
BROWSER_TIMEOUT_MS = 20_000

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no /usr/bin/chromium: install Debian's chromium (apt-get install -y chromium)",
    ),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    # Playwright's sync API runs an event loop in this thread; the test's ORM calls are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=BROWSER_TIMEOUT_MS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def test_dashboard_and_session_page_in_chromium(
    live_server: Any, browser_page: Any, django_user_model: Any, fs_storage: Any
) -> None:
    django_user_model.objects.create_superuser("operator", "operator@example.org", "a-long-password")
    make_package("digits")
    make_seed()
    session = build_finished_session()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser_page

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "a-long-password")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    dashboard = page.locator("#fp-dashboard")
    assert dashboard.is_visible()
    assert "digits" in dashboard.inner_text()
    assert "digits-run" in dashboard.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "admin_dashboard.png"), full_page=True)

    page.goto(f"{live_server.url}/admin/fl_sessions/session/{session.pk}/change/")
    charts = page.locator("#fp-session-charts svg")
    assert charts.count() == 2
    for index in range(2):
        box = charts.nth(index).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 150
    assert page.locator("#fp-session-charts polyline").count() == 3
    assert page.locator("#fp-session-rounds tbody tr").count() == 4
    page.screenshot(path=str(SCREENSHOTS / "admin_session.png"), full_page=True)
    assert (SCREENSHOTS / "admin_session.png").stat().st_size > 10_000

    # From the rounds table to a round and its combiner reports.
    page.locator("#fp-session-rounds tbody tr").first.locator("a").first.click()
    page.wait_for_url("**/admin/fl_sessions/round/*/change/")
    assert "north" in page.locator("#reports-group").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "admin_round.png"), full_page=True)
