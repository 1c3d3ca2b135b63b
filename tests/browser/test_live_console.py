"""The operator console during real sessions, in a browser: the dashboard advances by itself while a
session trains (no page reload), and a session is stopped from the admin.

A whole federation runs as users run it: the controller under gunicorn with static files collected
and served by the application (WhiteNoise), a Celery worker and beat, one combiner and two digits
clients (tests/e2e/harness.py). Screenshots go to var/screenshots/dashboard-live-*.png.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.browser.served import ServedController
from tests.browser.test_admin_browser import (
    BROWSER_TIMEOUT_MS,
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    SCREENSHOTS,
    Browsing,
    log_in,
)
from tests.e2e.conftest import running_federation
from tests.e2e.harness import Federation

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no /usr/bin/chromium: install Debian's chromium (apt-get install -y chromium)",
    ),
    pytest.mark.timeout(300),
]

CLIENTS = {"client-1": "combiner-a", "client-2": "combiner-a"}
# A round of the digits example takes 0.5-2 s here: enough rounds that the session outlasts
# several of the dashboard's refreshes (every 3 s) and it sees rounds end between them.
LIVE_ROUNDS = 30
# The idle dashboard looks for a new session every 15 s (apps/console/dashboard.py).
PICKUP_TIMEOUT = 30.0
# Seconds: each wait on the console ends by then.
PROGRESS_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
ROUNDS_COMPLETED = re.compile(r"(\d+)/(\d+) rounds completed")
T = TypeVar("T")


@contextlib.contextmanager
def served_federation(var_dir: Path) -> Iterator[Federation]:
    """The e2e federation with its controller under gunicorn, and an operator who may log in."""
    with running_federation(var_dir, combiners=["combiner-a"], clients=CLIENTS, gunicorn=True) as federation:
        made = federation.manage(
            "createsuperuser",
            "--noinput",
            "--username",
            "operator",
            "--email",
            "op@example.org",
            timeout=120,
            extra_env={"DJANGO_SUPERUSER_PASSWORD": PASSWORD},
        )
        assert made.returncode == 0, made.stderr
        yield federation


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with served_federation(tmp_path_factory.mktemp("live-console")) as running:
        yield running


@pytest.fixture
def browsing() -> Iterator[Browsing]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=BROWSER_TIMEOUT_MS
        )
        try:
            # One context, so a second tab shares the operator's login.
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            yield Browsing(page)
        finally:
            browser.close()


def served(federation: Federation) -> ServedController:
    """The federation's controller as the browser tests' log_in knows a served controller."""
    return ServedController(
        url=federation.url, static_root=federation.var_dir / "static", log=Path(os.devnull)
    )


def wait_until(federation: Federation, what: str, probe: Callable[[], T], timeout: float) -> T:
    """Poll `probe` every half second until it returns something truthy, with the federation's logs
    in the failure."""
    return federation.wait_for(what, probe, timeout, interval=0.5, watch=("controller", "worker"))


def panel_state(page: Any) -> tuple[int, int, str]:
    """What the dashboard shows now: rounds completed, points on its chart, the session's badge.
    Read in one evaluation, without waiting: the panel may hold no session yet."""
    text, points, status = page.evaluate(
        """() => {
            const session = document.querySelector("#fp-session");
            const badge = document.querySelector("#fp-session .fp-session-line .fp-badge");
            return [
                session ? session.innerText : "",
                document.querySelectorAll("#fp-dashboard-chart circle.fp-point").length,
                badge ? badge.innerText : "",
            ];
        }"""
    )
    found = ROUNDS_COMPLETED.search(text)
    return (int(found.group(1)) if found else -1, points, status)


def follow(page: Any, seen: list[tuple[int, int, str]]) -> Callable[[], tuple[int, int, str]]:
    """A probe that reads the dashboard and keeps each state it differs from the one before."""
    started = time.monotonic()

    def probe() -> tuple[int, int, str]:
        state = panel_state(page)
        if not seen or seen[-1] != state:
            seen.append(state)
            print(f"{time.monotonic() - started:5.1f} s: {state[0]} rounds, {state[1]} points, {state[2]}")
        return state

    return probe


def test_the_dashboard_follows_a_running_session_without_reloading(
    federation: Federation, browsing: Browsing
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browsing.page
    federation.start_session(
        "live-1", rounds=LIVE_ROUNDS, round_timeout=60, min_clients=2, requested_clients=len(CLIENTS)
    )
    federation.wait_training("live-1")
    log_in(browsing, served(federation))
    scripts = [r.url for r in browsing.responses if r.request.resource_type == "script"]
    browsing.assert_admin_styled()
    page.evaluate("window.__fpMarker = 1")
    assert page.locator("#fp-session").get_attribute("data-session-active") == "true"

    seen: list[tuple[int, int, str]] = []
    probe = follow(page, seen)

    def advanced() -> bool:
        probe()
        if len(seen) == 2:
            page.screenshot(path=str(SCREENSHOTS / "dashboard-live-1.png"), full_page=True)
        completed = {rounds for rounds, _, status in seen if status == "Started"}
        points = {count for _, count, status in seen if status == "Started" and count > 0}
        return len(completed) >= 2 and len(points) >= 2

    wait_until(
        federation, "the dashboard to show rounds ending while the session runs", advanced, PROGRESS_TIMEOUT
    )
    assert page.evaluate("window.__fpMarker") == 1, "the page was reloaded"
    page.screenshot(path=str(SCREENSHOTS / "dashboard-live-2.png"), full_page=True)
    # Never backwards: the panel counts rounds and points up as they come.
    assert [state[:2] for state in seen] == sorted(state[:2] for state in seen), seen

    # Waits go through the page: Playwright answers the page's routed requests only while called.
    wait_until(
        federation,
        "the dashboard to show the session finished",
        lambda: probe()[2] == "Finished",
        PROGRESS_TIMEOUT,
    )
    assert federation.api.get_session("live-1")["status"] == "Finished"
    assert probe()[:2] == (LIVE_ROUNDS, LIVE_ROUNDS)
    assert page.locator("#fp-session").get_attribute("data-session-active") == "false"
    assert page.evaluate("window.__fpMarker") == 1, "the page was reloaded"
    assert int(page.locator("#fp-dashboard").get_attribute("data-refreshes") or 0) >= 3
    # Combiners and events come with each refresh too.
    combiners = page.locator("#fp-combiners").inner_text()
    assert re.search(r"combiner-a\s+2 of at most", combiners), combiners
    assert page.locator("#fp-events tbody tr").count() == 10
    page.screenshot(path=str(SCREENSHOTS / "dashboard-live-3.png"), full_page=True)
    # The script came from the application's own static files, under its collected (hashed) name.
    assert any(re.search(r"/static/console/dashboard\.[0-9a-f]{12}\.js$", url) for url in scripts), scripts
    assert not browsing.blocked, f"requests to other hosts: {browsing.blocked}"


def test_a_session_is_stopped_from_the_admin(federation: Federation, browsing: Browsing) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browsing.page
    log_in(browsing, served(federation))
    page.evaluate("window.__fpMarker = 1")
    assert page.locator("#fp-session").get_attribute("data-session-active") == "false"

    # The idle dashboard notices a session started elsewhere within its slow period.
    federation.start_session("live-long", rounds=200, round_timeout=60, min_clients=2, requested_clients=2)
    seen: list[tuple[int, int, str]] = []
    probe = follow(page, seen)
    wait_until(
        federation,
        "the dashboard to pick the new session up and show a round ended",
        lambda: (state := probe())[2] == "Started" and state[0] >= 1,
        PICKUP_TIMEOUT,
    )
    assert "live-long" in page.locator("#fp-session").inner_text()

    # The sessions list's action, as an operator runs it: tick the session, pick the action, Go.
    admin = page.context.new_page()
    admin.set_default_timeout(BROWSER_TIMEOUT_MS)
    admin.goto(f"{federation.url}/admin/fl_sessions/session/")
    admin.locator("#result_list tbody tr", has_text="live-long").locator("input.action-select").check()
    admin.select_option("select[name=action]", "stop_sessions")
    admin.click("button[name=index]")
    assert "Session live-long is stopping." in admin.locator(".messagelist").inner_text()
    admin.screenshot(path=str(SCREENSHOTS / "dashboard-live-stop-action.png"), full_page=True)

    # The dashboard left open in the first tab shows the stop by itself.
    wait_until(federation, "the dashboard to show the stop", lambda: probe()[2] == "Stopped", STOP_TIMEOUT)
    session = federation.api.get_session("live-long")
    assert session["status"] == "Stopped", session
    assert 0 < session["rounds_completed"] < 200, session
    assert page.evaluate("window.__fpMarker") == 1, "the page was reloaded"
    assert "Stopped on request." in page.locator("#fp-session").inner_text()
    assert page.locator("#fp-session").get_attribute("data-session-active") == "false"
    page.screenshot(path=str(SCREENSHOTS / "dashboard-live-stopped.png"), full_page=True)

    # Logged out elsewhere: the next refresh meets the login page, keeps the panel and stops asking.
    page.context.clear_cookies()
    wait_until(
        federation,
        "the dashboard to stop refreshing once logged out",
        lambda: page.locator("#fp-dashboard").get_attribute("data-refresh") == "stopped",
        PICKUP_TIMEOUT,
    )
    assert probe()[2] == "Stopped" and page.evaluate("window.__fpMarker") == 1
