"""The admin site of the operator console: Django's admin with a dashboard on its index page."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

from apps.console.dashboard import dashboard_context


class FedplaneAdminSite(admin.AdminSite):
    site_header = "fedplane control plane"
    site_title = "fedplane"
    index_title = "Operator console"

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        # The index template (apps/console/templates/admin/index.html) draws the dashboard panel.
        return super().index(request, extra_context={**dashboard_context(), **(extra_context or {})})
