"""Every page of the operator console, served as users run it, in Chromium: each registered model's
list, its add form where adding is allowed, and a change page where a row exists. Each page must
load the collected stylesheets (as CSS, under hashed names, applied) and ask no other host; its
screenshot is kept under var/screenshots/pages/ for a person to look at."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.combiners.models import Combiner
from apps.models.tests.test_admin import make_seed
from apps.packages.tests.test_admin import make_package
from apps.sessions.tests.test_admin import build_finished_session
from tests.browser.served import ServedController
from tests.browser.test_admin_browser import (  # noqa: F401 (browsing is a fixture)
    CHROMIUM,
    SCREENSHOTS,
    Browsing,
    browsing,
    create_operator,
    log_in,
)

PAGES = SCREENSHOTS / "pages"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(600),
]


def console_pages() -> list[tuple[str, str]]:
    """(name, path) of every list, add form and (where a row exists) change page of the admin."""
    operator = get_user_model().objects.get(username="operator")
    request = RequestFactory().get("/admin/")
    request.user = operator
    pages: list[tuple[str, str]] = [("index", reverse("admin:index"))]
    for model, model_admin in sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label):
        meta = model._meta
        prefix = f"admin:{meta.app_label}_{meta.model_name}"
        label = f"{meta.app_label}.{meta.model_name}"
        pages.append((f"{label}.list", reverse(f"{prefix}_changelist")))
        if model_admin.has_add_permission(request):
            with contextlib.suppress(NoReverseMatch):
                pages.append((f"{label}.add", reverse(f"{prefix}_add")))
        first = model_admin.get_queryset(request).order_by("pk").first()
        if first is not None:
            pages.append((f"{label}.change", reverse(f"{prefix}_change", args=[first.pk])))
    return pages


def test_every_console_page_is_styled_and_asks_no_other_host(
    served: ServedController,
    browsing: Browsing,  # noqa: F811 (the fixture imported above)
    django_user_model: Any,
    fs_storage: Any,
) -> None:
    create_operator(django_user_model)
    make_package("digits")
    make_seed()
    build_finished_session()
    Combiner.objects.create(name="north", address="north.local", port=12080)
    Client.objects.create(
        name="client-1",
        combiner=Combiner.objects.get(name="north"),
        status=ClientStatus.ONLINE,
        last_seen=timezone.now(),
    )
    PAGES.mkdir(parents=True, exist_ok=True)
    page = browsing.page
    log_in(browsing, served)

    pages = console_pages()
    # Every app of the console has its list here, not only the federated-learning ones.
    assert {"fl_sessions.session.list", "clients.client.list", "auth.user.add"} <= {name for name, _ in pages}
    for name, path in pages:
        answer = page.goto(f"{served.url}{path}")
        assert answer is not None and answer.status == 200, (
            f"{name} ({path}) answered {answer and answer.status}"
        )
        assert answer.headers.get("content-type", "").startswith("text/html"), name
        browsing.assert_admin_styled()
        # Django's error page or a traceback would still be styled by its own inline CSS.
        assert page.locator("#content").count() == 1, f"{name} has no admin content block"
        page.screenshot(path=str(PAGES / f"{name}.png"))
    assert len(list(PAGES.glob("*.png"))) >= len(pages)
