"""The admin site of the operator console: Django's admin with a live dashboard on its index page."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path

from apps.console.dashboard import dashboard_context

# The federated-learning apps in the order an operator follows a federation; Django's own and the
# libraries' (users, Celery results, schedules, lockouts) come after them, alphabetically.
FEDERATION_APPS = ("fl_sessions", "mlmodels", "clients", "combiners", "packages", "identity")
DASHBOARD_PANEL_TEMPLATE = "admin/console/dashboard_panel.html"


class FedplaneAdminSite(admin.AdminSite):
    site_header = "fedplane control plane"
    site_title = "fedplane"
    index_title = "Operator console"

    def get_urls(self) -> list[URLPattern | URLResolver]:
        # admin_view: staff only (others go to the login page), never cached, CSRF-protected.
        panel = path(
            "dashboard/panel/", self.admin_view(self.dashboard_panel), name="console_dashboard_panel"
        )
        return [panel, *super().get_urls()]

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        # The index template (apps/console/templates/admin/index.html) draws the dashboard panel.
        return super().index(request, extra_context={**dashboard_context(), **(extra_context or {})})

    def dashboard_panel(self, request: HttpRequest) -> TemplateResponse:
        """The dashboard panel alone, as HTML: the index page's script swaps it in while a session runs."""
        return TemplateResponse(request, DASHBOARD_PANEL_TEMPLATE, dashboard_context())

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        apps = super().get_app_list(request, app_label)
        order = {label: position for position, label in enumerate(FEDERATION_APPS)}
        return sorted(apps, key=lambda app: (order.get(app["app_label"], len(order)), app["name"].lower()))
