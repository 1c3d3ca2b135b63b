"""FEDn's legacy model routes."""

from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers, status
from rest_framework.decorators import api_view, parser_classes
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from apps.models.models import Model
from apps.models.services import (
    DEFAULT_LINEAGE_LIMIT,
    model_ancestors,
    model_create_seed,
    model_descendants,
    model_get_active,
    model_get_initial,
    model_set_active,
    model_trail,
)
from controlplane.api.fields import as_http_date, as_plain
from controlplane.api.legacy import failure, int_param, success, window
from controlplane.api.schema import (
    LEGACY_PAGING,
    FednSuccessSerializer,
    error,
    errors,
    fedn_route,
    or_failure,
    query,
)


class LineageItemSerializer(serializers.Serializer):
    model = serializers.UUIDField()
    committed_at = serializers.CharField(help_text="RFC 822 date.")
    session_id = serializers.CharField(allow_null=True)
    parent_model = serializers.UUIDField(allow_null=True)


class LineageSerializer(serializers.Serializer):
    result = LineageItemSerializer(many=True)


class LegacyModelSerializer(serializers.Serializer):
    committed_at = serializers.CharField(help_text="RFC 822 date.")
    model = serializers.UUIDField()
    session_id = serializers.CharField(allow_null=True)
    active = serializers.BooleanField(required=False, help_text="Only with include_active=true.")


class LegacyModelListSerializer(serializers.Serializer):
    result = LegacyModelSerializer(many=True)
    count = serializers.IntegerField()


class ModelIdSerializer(serializers.Serializer):
    model_id = serializers.UUIDField()


class InitialModelSerializer(serializers.Serializer):
    model_id = serializers.UUIDField(allow_null=True, help_text="null until a seed model is set.")


class NotImplementedSerializer(serializers.Serializer):
    message = serializers.CharField()


MODEL_TRAIL_SCHEMA = {
    "type": "object",
    "description": "When each model of the trail was committed, by model id.",
    "additionalProperties": {"type": "string", "example": "2024-05-22 14:49:40.123456"},
}

LINEAGE_OR_FAILURE = or_failure(LineageSerializer, "LineageOrFailure")
LINEAGE_PARAMETERS = [
    query("model", "The model's id.", required=True),
    query("limit", "How many models at most (default 10).", kind=int),
]


def lineage_item(model: Model) -> dict[str, Any]:
    return {
        "model": str(model.model_id),
        "committed_at": as_http_date(model.committed_at),
        "session_id": model.session_id,
        "parent_model": str(model.parent_id) if model.parent_id else None,
    }


@fedn_route(
    responses={
        200: OpenApiResponse(
            {"oneOf": [MODEL_TRAIL_SCHEMA, {"$ref": "#/components/schemas/Error"}]},
            description="The trail, or success false when there is none.",
        )
    }
)
@api_view(["GET"])
def get_model_trail(request: Request) -> Response:
    trail = model_trail()
    if not trail:
        return failure("No model trail available.")
    # FEDn pushes str(datetime) onto the trail: `2024-05-22 14:49:40.123456`, no offset.
    return Response({str(m.model_id): as_plain(m.committed_at) for m in trail})


def _lineage(request: Request, walk: Any) -> Response:
    identifier = request.query_params.get("model")
    if not identifier:
        return failure("Missing model id.")
    model = Model.objects.find(identifier)
    if model is None:
        return failure(f"Model {identifier} not found.", status.HTTP_404_NOT_FOUND)
    limit = int_param(request, "limit") or DEFAULT_LINEAGE_LIMIT
    lineage = walk(model, limit=limit)
    if not lineage:
        return failure("No models found.")
    return Response({"result": [lineage_item(m) for m in lineage]})


@fedn_route(
    parameters=LINEAGE_PARAMETERS,
    responses={
        200: LINEAGE_OR_FAILURE,
        **errors(400),
        404: error(404, "No such model."),
    },
)
@api_view(["GET"])
def get_model_ancestors(request: Request) -> Response:
    return _lineage(request, model_ancestors)


@fedn_route(
    parameters=LINEAGE_PARAMETERS,
    responses={
        200: LINEAGE_OR_FAILURE,
        **errors(400),
        404: error(404, "No such model."),
    },
)
@api_view(["GET"])
def get_model_descendants(request: Request) -> Response:
    return _lineage(request, model_descendants)


@fedn_route(
    parameters=[
        *LEGACY_PAGING,
        query("session_id", "Only models of this session."),
        query("include_active", '"true" adds each model\'s `active`.'),
    ],
    responses={200: LegacyModelListSerializer, **errors(400)},
)
@api_view(["GET"])
def list_models(request: Request) -> Response:
    models = Model.objects.order_by("-committed_at", "-pk")
    if request.query_params.get("session_id"):
        models = models.filter(session_id=request.query_params["session_id"])
    include_active = request.query_params.get("include_active") == "true"
    result = []
    for model in window(models, request):
        item = {
            "committed_at": as_http_date(model.committed_at),
            "model": str(model.model_id),
            "session_id": model.session_id,
        }
        if include_active:
            item["active"] = model.active
        result.append(item)
    return Response({"result": result, "count": models.count()})


@fedn_route(
    parameters=[query("model", "The model's id.", required=True)],
    responses={200: LineageItemSerializer, **errors(400), 404: error(404, "No such model.")},
)
@api_view(["GET"])
def get_model(request: Request) -> Response:
    identifier = request.query_params.get("model")
    if not identifier:
        return failure("Missing model id.", status.HTTP_400_BAD_REQUEST)
    model = Model.objects.find(identifier)
    if model is None:
        return failure("No model found.", status.HTTP_404_NOT_FOUND)
    item = lineage_item(model)
    return Response({k: item[k] for k in ("committed_at", "parent_model", "model", "session_id")})


@fedn_route(
    request=None,
    responses={501: OpenApiResponse(NotImplementedSerializer, description="Not implemented, as in FEDn.")},
)
@api_view(["GET", "POST"])
def delete_model_trail(request: Request) -> Response:
    return Response({"message": "Not implemented"}, status=status.HTTP_501_NOT_IMPLEMENTED)


@fedn_route(responses={200: or_failure(ModelIdSerializer, "LatestModelOrFailure")})
@api_view(["GET"])
def get_latest_model(request: Request) -> Response:
    model = model_get_active()
    if model is None:
        return failure("No initial model set.")
    return Response({"model_id": str(model.model_id)})


@fedn_route(responses={200: InitialModelSerializer})
@api_view(["GET"])
def get_initial_model(request: Request) -> Response:
    model = model_get_initial()
    return Response({"model_id": str(model.model_id) if model else None})


@fedn_route(
    request=None,
    parameters=[query("id", "The model's id.", required=True)],
    responses={200: FednSuccessSerializer, **errors(400)},
)
@api_view(["PUT", "POST"])
def set_current_model(request: Request) -> Response:
    identifier = request.query_params.get("id")
    if not identifier:
        return failure("Missing model id.", status.HTTP_400_BAD_REQUEST)
    model = Model.objects.find(identifier)
    if model is None:
        return failure("Failed to set active model.", status.HTTP_400_BAD_REQUEST)
    model_set_active(model=model)
    return success("Active model set.")


@fedn_route(
    request={
        "multipart/form-data": {
            "type": "object",
            "properties": {"file": {"type": "string", "format": "binary"}},
            "required": ["file"],
        }
    },
    responses={
        200: FednSuccessSerializer,
        400: error(400, "No file, or a file that is not a model the federation can take."),
    },
)
@api_view(["POST"])
@parser_classes([MultiPartParser, FormParser])
def set_initial_model(request: Request) -> Response:
    """Upload a seed model (.npz, numpyhelper layout) and make it the active model."""
    upload = request.FILES.get("file")
    if upload is None:
        return failure("Missing file.", status.HTTP_400_BAD_REQUEST)
    model_create_seed(upload=upload)
    return success("Initial model added successfully.")
