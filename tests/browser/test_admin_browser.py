"""The operator console in a real browser, served as users run it (gunicorn, static files from the
application): log in, look at the dashboard, a session and a round with their stylesheets loaded,
and read the API docs with every request to another host blocked.

Drives Debian's /usr/bin/chromium through Playwright (no downloaded browser build) and keeps
screenshots under var/screenshots/ for a person to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.combiners.models import Combiner
from apps.models.models import Model
from apps.models.tests.test_admin import make_seed
from apps.packages.tests.test_admin import make_package
from apps.sessions.choices import LogLevel, StatusType
from apps.sessions.models import Round, Status
from apps.sessions.tests.test_admin import build_finished_session
from apps.sessions.tests.test_admin_overview import build_timed_session
from tests.browser.served import ServedController

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
PASSWORD = "a-long-password"
LOOPBACK = {"127.0.0.1", "localhost"}
# collectstatic's hashed names: base.96c479cedf7a.css
HASHED_CSS = re.compile(r"/static/.+\.[0-9a-f]{12}\.css$")
TRANSPARENT = "rgba(0, 0, 0, 0)"

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no /usr/bin/chromium: install Debian's chromium (apt-get install -y chromium)",
    ),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
]


class Browsing:
    """A page that refuses every request to a host other than the server's, and keeps the answers."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.blocked: list[str] = []
        self.responses: list[Any] = []
        page.route("**/*", self.only_loopback)
        page.on("response", self.keep)

    def only_loopback(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def keep(self, response: Any) -> None:
        self.responses.append(response)

    def stylesheets(self) -> list[Any]:
        return [r for r in self.responses if r.request.resource_type == "stylesheet"]

    def assert_admin_styled(self) -> None:
        """The admin's stylesheets arrived as CSS under hashed names and took effect."""
        page = self.page
        page.wait_for_load_state("load")
        sheets = self.stylesheets()
        assert sheets, "the page asked for no stylesheet"
        for sheet in sheets:
            assert sheet.status == 200, f"{sheet.url} answered {sheet.status}"
            assert sheet.headers.get("content-type", "").startswith("text/css"), sheet.url
            assert HASHED_CSS.search(urlsplit(sheet.url).path), f"{sheet.url} is not a collected name"
        assert any("/static/admin/css/base." in sheet.url for sheet in sheets)
        assert page.evaluate("document.styleSheets.length") >= 1
        # base.css colours the header; an unstyled page leaves it transparent.
        header = page.evaluate("getComputedStyle(document.querySelector('#header')).backgroundColor")
        assert header != TRANSPARENT, "the admin header has no background: base.css did not apply"
        font = page.evaluate("getComputedStyle(document.body).fontFamily")
        assert "Times" not in font, f"the body keeps the browser's default font ({font})"
        assert not self.blocked, f"requests to other hosts: {self.blocked}"
        self.responses.clear()


@pytest.fixture
def browsing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browsing]:
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
            yield Browsing(page)
        finally:
            browser.close()


def create_operator(django_user_model: Any) -> None:
    """A superuser whose password the served controller can check: the test settings hash with MD5,
    which the production settings do not accept."""
    user = django_user_model.objects.create_superuser("operator", "operator@example.org")
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(PASSWORD, hasher.salt())
    user.save(update_fields=["password"])


def log_in(browsing: Browsing, served: ServedController) -> None:
    page = browsing.page
    page.goto(f"{served.url}/admin/login/?next=/admin/")
    browsing.assert_admin_styled()
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{served.url}/admin/")


def test_admin_pages_are_styled_by_the_served_static_files(
    served: ServedController, browsing: Browsing, django_user_model: Any, fs_storage: Any
) -> None:
    create_operator(django_user_model)
    make_package("digits")
    make_seed()
    session = build_finished_session()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browsing.page

    log_in(browsing, served)
    browsing.assert_admin_styled()
    dashboard = page.locator("#fp-dashboard")
    assert dashboard.is_visible()
    assert "digits" in dashboard.inner_text()
    assert "digits-run" in dashboard.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "admin_dashboard.png"), full_page=True)

    page.goto(f"{served.url}/admin/fl_sessions/session/{session.pk}/change/")
    browsing.assert_admin_styled()
    charts = page.locator("#fp-session-charts svg")
    assert charts.count() == 4  # a chart per metric (three) and the round durations
    for index in range(4):
        box = charts.nth(index).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 150
    assert page.locator("#fp-session-charts polyline").count() == 3
    assert page.locator("#fp-session-rounds tbody tr").count() == 4
    page.screenshot(path=str(SCREENSHOTS / "admin_session.png"), full_page=True)
    assert (SCREENSHOTS / "admin_session.png").stat().st_size > 10_000

    # From the rounds table to a round and its combiner reports.
    page.locator("#fp-session-rounds tbody tr").first.locator("a").first.click()
    page.wait_for_url("**/admin/fl_sessions/round/*/change/")
    browsing.assert_admin_styled()
    assert "north" in page.locator("#reports-group").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "admin_round.png"), full_page=True)

    page.goto(f"{served.url}/admin/fl_sessions/round/")
    browsing.assert_admin_styled()
    page.screenshot(path=str(SCREENSHOTS / "admin_round_list.png"), full_page=True)


def test_api_docs_render_from_the_servers_own_files(served: ServedController, browsing: Browsing) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browsing.page

    page.goto(f"{served.url}/api/docs/")
    # Operations appear only once Swagger UI's script ran and read the schema.
    operations = page.locator(".swagger-ui .opblock")
    operations.first.wait_for(state="visible")
    assert operations.count() > 20
    assert "fedplane control plane API" in page.locator(".swagger-ui .info .title").inner_text()
    assert any("/static/drf_spectacular_sidecar/swagger-ui-dist/" in r.url for r in browsing.stylesheets())
    page.screenshot(path=str(SCREENSHOTS / "api_docs.png"))
    assert not browsing.blocked, f"Swagger UI asked other hosts for {browsing.blocked}"

    page.goto(f"{served.url}/api/redoc/")
    page.locator("redoc h1", has_text="fedplane control plane API").wait_for(state="visible")
    assert page.locator("redoc [role=menuitem]").count() > 20
    page.screenshot(path=str(SCREENSHOTS / "api_redoc.png"))
    assert not browsing.blocked, f"ReDoc asked other hosts for {browsing.blocked}"


def test_session_charts_and_model_lineage(
    served: ServedController, browsing: Browsing, django_user_model: Any
) -> None:
    """The session page charts a point per round that made a model and a bar per ended round; the
    model page draws its lineage, linked; screenshots of every page an operator walks through."""
    create_operator(django_user_model)
    session = build_timed_session("timed-run", first_number=11, produced=6)
    combiner = Combiner.objects.create(name="north", address="north.local", port=12080)
    for name in ("c1", "c2", "c3"):
        Client.objects.create(name=name, combiner=combiner, status=ClientStatus.ONLINE)
    for number in range(12):
        Status.objects.create(
            sender_name=f"c{number % 3 + 1}",
            status=f"Model update {number} sent",
            log_level=LogLevel.INFO,
            type=StatusType.MODEL_UPDATE,
            timestamp=session.committed_at,
            session_id=session.session_id,
        )
    produced = Round.objects.filter(session=session).exclude(model_id=None).count()
    ended = Round.objects.filter(session=session, finished_at__isnull=False).count()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browsing.page
    log_in(browsing, served)

    page.goto(f"{served.url}/admin/fl_sessions/session/{session.pk}/change/")
    browsing.assert_admin_styled()
    metric_charts = page.locator('#fp-session-charts svg[data-chart="line"]')
    assert metric_charts.count() == 3  # test_accuracy, test_loss, f1_score
    for index in range(3):
        points = metric_charts.nth(index).locator("circle.fp-point[data-round]")
        assert points.count() == produced
        rounds = [int(points.nth(i).get_attribute("data-round") or 0) for i in range(points.count())]
        assert rounds == list(range(11, 11 + produced))
    bars = page.locator('#fp-session-charts svg[data-chart="bar"] rect.fp-bar')
    assert bars.count() == ended
    seconds = [float(bars.nth(i).get_attribute("data-value") or 0) for i in range(ended)]
    assert all(value > 0 for value in seconds)
    for index in range(ended):
        box = bars.nth(index).bounding_box()
        assert box is not None and box["height"] > 0
    took = page.locator("#fp-session-rounds tbody tr td:last-child").all_inner_texts()
    assert [text for text in took if text != "-"] and all(text not in ("0.0 s", "") for text in took)
    assert "3 clients validated each round's model (18 validations)" in page.inner_text(
        "#fp-session-overview"
    )
    page.screenshot(path=str(SCREENSHOTS / "admin_session_charts.png"), full_page=True)
    # At the browser's own resolution, to read ticks and legends.
    page.locator("#fp-session-charts").screenshot(path=str(SCREENSHOTS / "admin_session_charts_detail.png"))

    page.locator("#fp-session-rounds tbody tr").first.locator("a").first.click()
    page.wait_for_url("**/admin/fl_sessions/round/*/change/")
    browsing.assert_admin_styled()
    page.screenshot(path=str(SCREENSHOTS / "admin_round_timed.png"), full_page=True)

    middle = Model.objects.get(model_id=Round.objects.get(number=13).model_id)
    parent = Model.objects.get(model_id=middle.parent_id)
    child = Model.objects.get(parent=middle)
    page.goto(f"{served.url}/admin/mlmodels/model/{middle.pk}/change/")
    browsing.assert_admin_styled()
    lineage = page.locator("#fp-model-lineage svg.fp-lineage")
    assert lineage.is_visible()
    current = lineage.locator('a[data-relation="current"]')
    assert current.get_attribute("data-model-id") == str(middle.model_id)
    assert "timed-run · round 13" in current.text_content()
    parent_link = lineage.locator(f'a[data-relation="parent"][data-model-id="{parent.model_id}"]')
    child_link = lineage.locator(f'a[data-relation="child"][data-model-id="{child.model_id}"]')
    assert parent_link.get_attribute("href") == f"/admin/mlmodels/model/{parent.pk}/change/"
    assert "test_accuracy" in (child_link.text_content() or "")
    page.screenshot(path=str(SCREENSHOTS / "admin_model.png"), full_page=True)
    lineage.screenshot(path=str(SCREENSHOTS / "admin_model_lineage_detail.png"))
    child_link.click()
    page.wait_for_url(f"**/admin/mlmodels/model/{child.pk}/change/")
    assert (
        page.locator(
            f'#fp-model-lineage a[data-relation="parent"][data-model-id="{middle.model_id}"]'
        ).count()
        == 1
    )

    for name, path in (
        ("admin_model_list", "/admin/mlmodels/model/"),
        ("admin_client_list", "/admin/clients/client/"),
        ("admin_status_list", "/admin/fl_sessions/status/"),
        ("admin_validation_list", "/admin/fl_sessions/validation/"),
    ):
        page.goto(f"{served.url}{path}")
        browsing.assert_admin_styled()
        assert page.locator("#result_list tbody tr").count() > 0, path
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
