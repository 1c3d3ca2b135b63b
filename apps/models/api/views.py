from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from apps.models.api.serializers import ModelSerializer, model_doc
from apps.models.filtersets import ModelFilterSet
from apps.models.models import Model
from apps.models.services import DEFAULT_LINEAGE_LIMIT, model_ancestors, model_descendants, model_parameters
from controlplane import artifacts
from controlplane.api.pagination import header_int
from controlplane.api.schema import error, read_routes
from controlplane.api.viewsets import FednReadViewSet

# /parameters answers with every weight as JSON; past this size that is no longer useful.
MAX_PARAMETERS_BYTES = 64 * 1024 * 1024


@read_routes(ModelSerializer)
class ModelViewSet(FednReadViewSet):
    queryset = Model.objects.all()
    serializer_class = ModelSerializer
    filterset_class = ModelFilterSet
    entity_name = "Model"
    default_sort_key = "committed_at"
    sort_fields = {"committed_at": "committed_at", "model": "model_id", "session_id": "session_id"}

    @extend_schema(
        parameters=[
            OpenApiParameter("include_self", bool, required=False),
            OpenApiParameter("X-Limit", int, OpenApiParameter.HEADER, required=False),
            OpenApiParameter("X-Reverse", bool, OpenApiParameter.HEADER, required=False),
        ],
        responses={200: ModelSerializer(many=True)},
    )
    # A bare list, not a page: no pagination_class, so the schema does not wrap it.
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def ancestors(self, request: Request, pk: Any = None) -> Response:
        """Parent chain of a model, nearest first (a bare list)."""
        model = self.get_object()
        include_self = request.query_params.get("include_self", "false").lower() == "true"
        limit = header_int(request, "X-Limit") or DEFAULT_LINEAGE_LIMIT
        lineage = [model_doc(m) for m in model_ancestors(model, limit=limit, include_self=include_self)]
        if request.headers.get("X-Reverse", "").lower() == "true":
            lineage.reverse()
        return Response(lineage)

    @extend_schema(
        parameters=[OpenApiParameter("X-Limit", int, OpenApiParameter.HEADER, required=False)],
        responses={200: ModelSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def descendants(self, request: Request, pk: Any = None) -> Response:
        """Child chain of a model, deepest first (a bare list)."""
        model = self.get_object()
        limit = header_int(request, "X-Limit") or DEFAULT_LINEAGE_LIMIT
        return Response([model_doc(m) for m in model_descendants(model, limit=limit)])

    # Unlike FEDn 0.9.5, the model files need an admin token too: weights are the federation's data.
    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    @action(detail=True, methods=["get"], filter_backends=[])
    def download(self, request: Request, pk: Any = None) -> StreamingHttpResponse:
        """The model's .npz, streamed as an attachment."""
        model = self.get_object()
        return artifacts.streaming_response(model.artifact.name, str(model.model_id), model.size)

    @extend_schema(
        responses={
            200: {
                "type": "object",
                "properties": {"array": {"type": "array", "description": "Each layer as nested lists."}},
                "required": ["array"],
            },
            400: error(400, "The model is too large to list its weights; download it instead."),
        }
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def parameters(self, request: Request, pk: Any = None) -> Response:
        """The model's weights as nested lists, layer by layer."""
        model = self.get_object()
        if model.size > MAX_PARAMETERS_BYTES:
            raise ValidationError(
                f"The model is {model.size} bytes; download it instead of listing its weights."
            )
        return Response({"array": model_parameters(model=model, max_bytes=MAX_PARAMETERS_BYTES)})
