"""The controller under gunicorn, over plain HTTP: collected static files answer with long cache
headers, the API docs reference only the server's own files, and an insecure deployment is refused."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.browser.served import (
    START_TIMEOUT,
    ServedController,
    served_env,
    start_gunicorn,
    stop_gunicorn,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]
ONE_YEAR = 365 * 24 * 3600


def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()


class Resources(HTMLParser):
    """Every URL a page loads or links: src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_a_collected_stylesheet_is_served_with_a_long_cache_header(served: ServedController) -> None:
    hashed = served.manifest_name("admin/css/base.css")
    assert re.fullmatch(r"admin/css/base\.[0-9a-f]{12}\.css", hashed)

    status, headers, body = fetch(f"{served.url}/static/{hashed}")
    assert status == 200
    assert headers["content-type"].startswith("text/css")
    cache = headers["cache-control"]
    max_age = int(re.search(r"max-age=(\d+)", cache).group(1))  # type: ignore[union-attr]
    assert max_age >= ONE_YEAR and "immutable" in cache
    assert b"--header-bg" in body

    # The compressed copy collectstatic made is what a browser asking for gzip gets.
    status, headers, _ = fetch(f"{served.url}/static/{hashed}", **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("content-encoding") == "gzip"

    # The admin's pages link the hashed name, so browsers never keep a stale stylesheet.
    _, _, login_page = fetch(f"{served.url}/admin/login/")
    assert f"/static/{hashed}".encode() in login_page


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_api_docs_reference_only_the_servers_own_static_files(served: ServedController, path: str) -> None:
    status, headers, body = fetch(f"{served.url}{path}")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = Resources()
    page.feed(body.decode())
    assert page.urls, f"{path} loads nothing"
    outside = [url for url in page.urls if not url.startswith("/static/")]
    assert not outside, f"{path} loads from elsewhere: {outside}"
    for url in page.urls:
        assert fetch(f"{served.url}{url}")[0] == 200, url


def test_gunicorn_refuses_the_demo_defaults_outside_the_demo(
    served: ServedController, tmp_path: Path
) -> None:
    env = served_env(served.static_root.parent, FEDPLANE_DEMO="0")
    env.pop("DJANGO_SECRET_KEY", None)
    log = tmp_path / "gunicorn.log"
    process = start_gunicorn(env, log)
    try:
        process.wait(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"gunicorn kept serving an insecure deployment:\n{log.read_text(errors='replace')}")
    finally:
        stop_gunicorn(process)
    assert process.returncode != 0
    assert "Refusing to serve an insecure deployment" in log.read_text(errors="replace")
