"""The console is the admin site: every app's ModelAdmin lands on it, and its index is the dashboard."""

import pytest
from django.contrib import admin
from django.test import Client as HttpClient
from django.urls import reverse

from apps.console.sites import FedplaneAdminSite
from apps.sessions.choices import ControllerStateValue
from apps.sessions.models import ControllerState


def test_the_default_site_is_the_console() -> None:
    assert isinstance(admin.site._wrapped, FedplaneAdminSite)  # type: ignore[attr-defined]
    registered = {model._meta.label for model in admin.site._registry}
    assert {
        "fl_sessions.Session",
        "clients.Client",
        "combiners.Combiner",
        "identity.IssuedToken",
    } <= registered


@pytest.mark.django_db
def test_index_shows_the_console_title_and_the_controller_state(admin_client: HttpClient) -> None:
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert "<title>Operator console | fedplane</title>" in body and "fedplane control plane" in body
    assert '<span class="fp-badge fp-muted">idle</span>' in body

    ControllerState.objects.filter(singleton=True).update(state=ControllerStateValue.INSTRUCTING)
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert '<span class="fp-badge fp-ok">instructing</span>' in body


@pytest.mark.django_db
def test_the_index_lists_the_federation_apps_first_in_the_order_of_a_federation(
    admin_client: HttpClient,
) -> None:
    labels = [app["app_label"] for app in admin_client.get(reverse("admin:index")).context["app_list"]]
    federation = ["fl_sessions", "mlmodels", "clients", "combiners", "packages", "identity"]
    assert labels[: len(federation)] == federation
    others = labels[len(federation) :]
    assert {"auth", "django_celery_beat"} <= set(others)
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert body.index("Training sessions") < body.index("Authentication and Authorization")
