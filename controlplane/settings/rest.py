from fedplane.roundreport import ReportStatus

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.identity.authentication.RevocableJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["controlplane.api.auth.IsAdminRole"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "controlplane.api.pagination.HeaderLimitOffsetPagination",
    "DEFAULT_RENDERER_CLASSES": [
        "controlplane.api.renderers.FastJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "controlplane.api.parsers.BoundedJSONParser",
        "controlplane.api.parsers.StorableFormParser",
        "controlplane.api.parsers.StorableMultiPartParser",
    ],
    "EXCEPTION_HANDLER": "controlplane.api.errors.json_exception_handler",
    # Views that name DRF's stock parsers get the bounded ones too (controlplane/api/parsers.py).
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "controlplane.api.parsers.HardenedContentNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "fedplane control plane API",
    "DESCRIPTION": "FEDn 0.9.5-compatible network API: legacy routes and /api/v1/.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Statuses of different things, each its own enum component.
    "ENUM_NAME_OVERRIDES": {
        "ClientStatusEnum": "apps.clients.choices.ClientStatus",
        "SessionStatusEnum": "apps.sessions.choices.SessionStatus",
        "RoundStatusEnum": "apps.sessions.choices.RoundStatus",
        "ReportStatusEnum": [status.value for status in ReportStatus],
    },
    # Enum components first (drf-spectacular's default), then the error answers of every route.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "controlplane.api.schema.add_error_responses",
    ],
    # The UIs' files come from drf_spectacular_sidecar's static files, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
