"""What the OpenAPI schema says beyond each view's own annotations: the read routes' bodies and
the error answers every route can give."""

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers

from controlplane.api.serializers import ErrorSerializer

# The tag of FEDn 0.9.5's flat routes (/add_client, /list_models, ...).
FEDN_TAG = "FEDn 0.9.5 routes"

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_MEANINGS = {
    400: "The input was refused.",
    401: "Authentication is on and the token is missing, invalid, expired, revoked or of another role.",
    403: "The token speaks for another client or combiner, or a browser session failed its CSRF check.",
    404: "No such object.",
    409: "The request conflicts with the object's state.",
    413: "The request body is larger than the controller accepts.",
}
UNSAFE_METHODS = {"post", "put", "patch", "delete"}
# Components made by or_failure end with this; add_error_responses relaxes their oneOf to anyOf.
FAILURE_SUFFIX = "OrFailure"


def error(code: int, description: str | None = None) -> OpenApiResponse:
    """An error answer, `{"success": false, "message": ...}`."""
    return OpenApiResponse(ErrorSerializer, description=description or ERROR_MEANINGS[code])


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: error(code) for code in codes}


def typed_or_raw(typed: type[serializers.Serializer], raw: type[serializers.Serializer], name: str) -> Any:
    """FEDn's X-Skip-Typing: the typed document by default, the stored camelCase one on request."""
    return PolymorphicProxySerializer(
        component_name=name, serializers=[typed, raw], resource_type_field_name=None, many=False
    )


SKIP_TYPING = OpenApiParameter(
    "X-Skip-Typing",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description='"true" answers the documents in the camelCase form the combiner forwarded.',
)


def read_routes(document: Any, *, skip_typing: bool = False) -> Callable[[type], type]:
    """The bodies of a FednReadViewSet's list, POST list and get routes, each item a `document`."""

    def many() -> Any:
        if isinstance(document, PolymorphicProxySerializer):
            return PolymorphicProxySerializer(
                component_name=document.component_name,
                serializers=document.serializers,
                resource_type_field_name=None,
                many=True,
            )
        return document(many=True)

    parameters = [SKIP_TYPING] if skip_typing else []
    return extend_schema_view(
        list=extend_schema(parameters=parameters, responses={200: many()}),
        list_post=extend_schema(parameters=parameters, responses={200: many()}),
        retrieve=extend_schema(parameters=parameters, responses={200: document}),
    )


def _takes_input(operation: dict[str, Any]) -> bool:
    """A body, or query or header parameters: what a route may refuse with 400."""
    if "requestBody" in operation:
        return True
    return any(parameter.get("in") != "path" for parameter in operation.get("parameters", []))


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Postprocessing hook: the error answers no view declares one by one.

    401 wherever a token is asked for; 403 on every unsafe method (identity and CSRF checks);
    400 where the route takes parameters or a body; 404 where the path names an object; 413 where
    a body is read. A view's own declaration of a code wins.
    """
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    if "Error" not in schemas:
        raise RuntimeError("the Error component is missing: no view declares an error answer")
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            codes: set[int] = set()
            if any(requirement for requirement in operation.get("security", [])) and {} not in operation.get(
                "security", []
            ):
                codes.add(401)
            if method in UNSAFE_METHODS:
                codes.add(403)
            if _takes_input(operation):
                codes.add(400)
            if "{" in path:
                codes.add(404)
            if "requestBody" in operation:
                codes.add(413)
            responses = operation.setdefault("responses", {})
            for code in sorted(codes):
                responses.setdefault(
                    str(code),
                    {
                        "content": {"application/json": {"schema": ERROR_REF}},
                        "description": ERROR_MEANINGS[code],
                    },
                )
    # An answer or FEDn's failure (see or_failure): a success answer may also fit the loose Error
    # shape, so "one of" would refuse it; "any of" says what is meant.
    for name, component in schemas.items():
        if name.endswith(FAILURE_SUFFIX) and "oneOf" in component:
            component["anyOf"] = component.pop("oneOf")
    return result


# ---------------------------------------------------------------- FEDn's flat routes


def fedn_route(**kwargs: Any) -> Callable[[Any], Any]:
    """extend_schema for one of FEDn's flat routes, tagged as such."""
    return extend_schema(tags=[FEDN_TAG], **kwargs)


class FednSuccessSerializer(serializers.Serializer):
    """FEDn's logical success: `{"success": true, "message": ...}`."""

    success = serializers.BooleanField(help_text="Always true.")
    message = serializers.CharField()


def or_failure(answer: Any, name: str) -> PolymorphicProxySerializer:
    """A 200 that is either `answer` or FEDn's logical failure (`success: false`, still 200)."""
    if not name.endswith(FAILURE_SUFFIX):
        raise ValueError(f"{name}: an answer-or-failure component's name ends with {FAILURE_SUFFIX!r}")
    return PolymorphicProxySerializer(
        component_name=name, serializers=[answer, ErrorSerializer], resource_type_field_name=None
    )


# FEDn's legacy paging: applied only when both are given.
LEGACY_PAGING = [
    OpenApiParameter("limit", int, required=False, description="Page size; only with skip."),
    OpenApiParameter("skip", int, required=False, description="Offset; only with limit."),
]


def query(name: str, description: str = "", *, required: bool = False, kind: Any = str) -> OpenApiParameter:
    return OpenApiParameter(name, kind, OpenApiParameter.QUERY, required=required, description=description)
