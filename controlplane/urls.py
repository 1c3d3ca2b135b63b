import os
from typing import Any

from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, URLResolver, include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from apps.clients.api import legacy as client_routes
from apps.clients.api.presence import CombinerPresenceViewSet
from apps.clients.api.views import ClientViewSet
from apps.combiners.api import legacy as combiner_routes
from apps.identity.api.views import RevokedTokensView
from apps.models.api import legacy as model_routes
from apps.models.api.views import ModelViewSet
from apps.packages.api import legacy as package_routes
from apps.packages.api.views import ComputePackageViewSet
from apps.sessions.api import legacy as session_routes
from apps.sessions.api.views import RoundViewSet, SessionViewSet, StatusViewSet, ValidationViewSet
from controlplane.api.routers import OptionalSlashRouter

# FEDn's clients call some routes with a trailing slash and some without: accept both.
router = OptionalSlashRouter()
router.register("clients", ClientViewSet, basename="client")
router.register("combiners", CombinerPresenceViewSet, basename="combiner")
router.register("models", ModelViewSet, basename="model")
router.register("packages", ComputePackageViewSet, basename="package")
router.register("rounds", RoundViewSet, basename="round")
router.register("sessions", SessionViewSet, basename="session")
router.register("statuses", StatusViewSet, basename="status")
router.register("validations", ValidationViewSet, basename="validation")

LEGACY_ROUTES = {
    "health": session_routes.health,
    "add_client": client_routes.add_client,
    "list_clients": client_routes.list_clients,
    "get_active_clients": client_routes.get_active_clients,
    "get_client_config": client_routes.get_client_config,
    "add_combiner": combiner_routes.add_combiner,
    "list_combiners": combiner_routes.list_combiners,
    "get_combiner": combiner_routes.get_combiner,
    "list_combiners_data": client_routes.list_combiners_data,
    "set_package": package_routes.set_package,
    "get_package": package_routes.get_package,
    "list_compute_packages": package_routes.list_compute_packages,
    "download_package": package_routes.download_package,
    "get_package_checksum": package_routes.get_package_checksum,
    "set_active_package": package_routes.set_active_package,
    "get_model_trail": model_routes.get_model_trail,
    "get_model_ancestors": model_routes.get_model_ancestors,
    "get_model_descendants": model_routes.get_model_descendants,
    "list_models": model_routes.list_models,
    "get_model": model_routes.get_model,
    "delete_model_trail": model_routes.delete_model_trail,
    "get_latest_model": model_routes.get_latest_model,
    "get_initial_model": model_routes.get_initial_model,
    "set_current_model": model_routes.set_current_model,
    "set_initial_model": model_routes.set_initial_model,
    "start_session": session_routes.start_session,
    "list_sessions": session_routes.list_sessions,
    "get_session": session_routes.get_session,
    "list_rounds": session_routes.list_rounds,
    "get_round": session_routes.get_round,
    "get_events": session_routes.get_events,
    "list_validations": session_routes.list_validations,
    "get_controller_status": session_routes.get_controller_status,
    "get_plot_data": session_routes.get_plot_data,
}


def documented(view: Any) -> Any:
    """A flat FEDn route; it must declare its input and answers (extend_schema on the @api_view)."""
    if "schema" not in getattr(view.cls, "kwargs", {}):
        raise ImproperlyConfigured(f"The FEDn route {view.cls.__name__} declares no schema (extend_schema).")
    return view


api_patterns: list[URLPattern | URLResolver] = [
    # The revocation list combiners fetch; its path and shape are a contract with combiner_node.
    re_path(r"^api/v1/tokens/revoked/?$", RevokedTokensView.as_view(), name="tokens-revoked"),
    # Before the flat routes (none of which starts with api/), so a /api/v1/ call is not first
    # tried against each of them.
    path("api/v1/", include(router.urls)),
]
api_patterns += [
    re_path(rf"^{name}/?$", documented(view), name=f"legacy-{name.replace('_', '-')}")
    for name, view in LEGACY_ROUTES.items()
]

urlpatterns: list[URLPattern | URLResolver] = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api-auth/", include("rest_framework.urls")),
    *api_patterns,
]

# FEDn serves every route a second time under FEDN_CUSTOM_URL_PREFIX.
_prefix = os.environ.get("FEDN_CUSTOM_URL_PREFIX", "").strip("/")
if _prefix:
    urlpatterns.append(path(f"{_prefix}/", include((api_patterns, "prefixed"))))

handler400 = "controlplane.api.errors.json_bad_request"
handler403 = "controlplane.api.errors.json_forbidden"
handler404 = "controlplane.api.errors.json_not_found"
handler500 = "controlplane.api.errors.json_server_error"
