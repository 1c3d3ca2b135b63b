"""FEDn's legacy session, round, event and controller routes."""

import json
from collections import defaultdict
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema_field
from rest_framework import serializers, status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from apps.sessions import metrics
from apps.sessions.api.serializers import (
    SESSION_CONFIG_SCHEMA,
    CombinerReportDocSerializer,
    SenderSerializer,
    report_doc,
    status_doc,
    validation_doc,
)
from apps.sessions.choices import ControllerStateValue
from apps.sessions.filtersets import StatusFilterSet, ValidationFilterSet
from apps.sessions.models import Round, Session, Status, Validation
from apps.sessions.records import controller_state, session_config
from apps.sessions.services import (
    PreconditionFailed,
    session_start_legacy,
)
from controlplane.api.fields import as_http_date
from controlplane.api.legacy import failure, required_param, window
from controlplane.api.schema import LEGACY_PAGING, error, errors, fedn_route, or_failure, query
from controlplane.api.serializers import Rfc3339Field


@extend_schema_field(SESSION_CONFIG_SCHEMA)
class SessionConfigSchemaField(serializers.JSONField):
    pass


class LegacySessionStartedSerializer(serializers.Serializer):
    success = serializers.BooleanField(help_text="Always true.")
    message = serializers.CharField()
    config = SessionConfigSchemaField()


class SessionConfigListSerializer(serializers.Serializer):
    result = serializers.ListField(child=SessionConfigSchemaField())
    count = serializers.IntegerField()


class LegacyRoundSerializer(serializers.Serializer):
    round_id = serializers.CharField()
    combiners = CombinerReportDocSerializer(many=True)


class EventSerializer(serializers.Serializer):
    """A status as the combiner forwarded it (camelCase), without its id."""

    sender = SenderSerializer()
    status = serializers.CharField()
    logLevel = serializers.CharField()
    data = serializers.CharField()
    correlationId = serializers.CharField()
    timestamp = Rfc3339Field()
    type = serializers.CharField()
    extra = serializers.CharField()
    sessionId = serializers.CharField()


class EventListSerializer(serializers.Serializer):
    result = EventSerializer(many=True)
    count = serializers.IntegerField()


class ControllerStatusSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=ControllerStateValue.choices)


class PlotDataSerializer(serializers.Serializer):
    valid_metrics = serializers.ListField(child=serializers.CharField())
    box_plot = serializers.CharField(
        allow_null=True, help_text="A Plotly figure as JSON text; null without metrics."
    )


START_SESSION_BODY = {
    "type": "object",
    "description": "FEDn's start_session keyword arguments; on GET, the same as query parameters.",
    "properties": {
        "session_id": {"type": "string", "nullable": True},
        "aggregator": {"type": "string"},
        "aggregator_kwargs": {"type": "object", "additionalProperties": True, "nullable": True},
        "model_id": {"type": "string", "nullable": True},
        "rounds": {"type": "integer"},
        "round_timeout": {"type": "integer"},
        "round_buffer_size": {"type": "integer"},
        "delete_models": {"type": "boolean"},
        "validate": {"type": "boolean"},
        "helper": {"type": "string"},
        "min_clients": {"type": "integer"},
        "requested_clients": {"type": "integer"},
        "round_retries": {"type": "integer"},
    },
    "additionalProperties": False,
}
LEGACY_ROUND_SCHEMA = {
    "type": "object",
    "properties": {
        "reducer": {"type": "object", "additionalProperties": True, "description": "The round's round_data."},
        "combiners": {"type": "array", "items": {"$ref": "#/components/schemas/CombinerReportDoc"}},
    },
    "required": ["reducer", "combiners"],
}
LEGACY_VALIDATION_SCHEMA = {
    "type": "object",
    "properties": {
        "model_id": {"type": "string"},
        "data": {"type": "string", "description": "JSON text of the metrics."},
        "timestamp": {"type": "string", "format": "date-time"},
        "meta": {"type": "string"},
        "sender": {"$ref": "#/components/schemas/Sender"},
        "receiver": {"$ref": "#/components/schemas/Receiver"},
    },
    "required": ["model_id", "data", "timestamp", "meta", "sender", "receiver"],
}


def _filters(filterset_class: Any) -> list[Any]:
    """FEDn's event and validation filters: every query parameter but the paging is one."""
    return [query(name) for name in sorted(filterset_class.base_filters)]


def legacy_config(session: Session) -> dict[str, Any]:
    config = session_config(session)
    config["committed_at"] = as_http_date(session.committed_at)
    return config


@fedn_route(
    request={"application/json": START_SESSION_BODY},
    responses={
        200: or_failure(LegacySessionStartedSerializer, "SessionStartedOrFailure"),
        400: error(400, "Arguments FEDn does not take, or values the session refuses."),
    },
)
@api_view(["GET", "POST"])
def start_session(request: Request) -> Response:
    """Create and start a session from FEDn's start_session keyword arguments."""
    body = request.data if request.method == "POST" else request.query_params.dict()
    if hasattr(body, "dict"):
        body = body.dict()
    if not isinstance(body, dict):
        raise ValidationError("The body must be a JSON object of start_session arguments.")
    try:
        session = session_start_legacy(body)
    except PreconditionFailed as exc:
        # FEDn answers a start its preconditions refuse with 200 and success false.
        return failure(str(exc))
    return Response(
        {"success": True, "message": "Session started successfully.", "config": legacy_config(session)}
    )


@fedn_route(parameters=LEGACY_PAGING, responses={200: SessionConfigListSerializer, **errors(400)})
@api_view(["GET"])
def list_sessions(request: Request) -> Response:
    sessions = Session.objects.order_by("-committed_at", "-pk")
    return Response(
        {"result": [legacy_config(s) for s in window(sessions, request)], "count": sessions.count()}
    )


@fedn_route(
    parameters=[query("session_id", "The session's id.", required=True)],
    responses={
        200: OpenApiResponse(
            {
                "type": "object",
                "description": "The session's config under its id, and its status.",
                "properties": {"status": {"type": "string"}},
                "required": ["status"],
                "additionalProperties": SESSION_CONFIG_SCHEMA,
            }
        ),
        **errors(400),
        404: error(404, "No such session."),
    },
)
@api_view(["GET"])
def get_session(request: Request) -> Response:
    identifier = required_param(request, "session_id", "Missing session id.")
    session = Session.objects.find(identifier)
    if session is None:
        return failure(f"Session {identifier} not found.", status.HTTP_404_NOT_FOUND)
    return Response({session.session_id: legacy_config(session), "status": session.status})


def _round_entry(found: Round) -> dict[str, Any]:
    return [report_doc(report) for report in found.reports.all()]


@fedn_route(
    responses={
        200: OpenApiResponse(
            {
                "type": "object",
                "description": "Every round under its id.",
                "additionalProperties": LEGACY_ROUND_SCHEMA,
            }
        )
    }
)
@api_view(["GET"])
def list_rounds(request: Request) -> Response:
    rounds = Round.objects.prefetch_related("reports").order_by("number")
    return Response({r.round_id: {"reducer": r.round_data, "combiners": _round_entry(r)} for r in rounds})


@fedn_route(
    parameters=[query("round_id", "The round's id.", required=True)],
    responses={200: or_failure(LegacyRoundSerializer, "LegacyRoundOrFailure"), **errors(400)},
)
@api_view(["GET"])
def get_round(request: Request) -> Response:
    round_id = required_param(request, "round_id", "Missing round id.")
    found = Round.objects.prefetch_related("reports").filter(round_id=round_id).first()
    if found is None:
        return failure("Round not found.")
    return Response({"round_id": found.round_id, "combiners": _round_entry(found)})


def _filtered(filterset_class: Any, queryset: Any, request: Request) -> Any:
    params = request.query_params.copy()
    for key in ("limit", "skip"):
        params.pop(key, None)
    unknown = sorted(set(params) - set(filterset_class.base_filters))
    if unknown:
        raise ValidationError(f"Unknown filters: {', '.join(unknown)}")
    filterset = filterset_class(data=params, queryset=queryset, request=request)
    if not filterset.is_valid():
        raise ValidationError(filterset.errors)
    return filterset.qs


@fedn_route(
    parameters=[*LEGACY_PAGING, *_filters(StatusFilterSet)],
    responses={200: EventListSerializer, 400: error(400, "An unknown filter, or a value it refuses.")},
)
@api_view(["GET"])
def get_events(request: Request) -> Response:
    events = _filtered(StatusFilterSet, Status.objects.order_by("-timestamp", "-pk"), request)
    result = [status_doc(event, typed=False) for event in window(events, request)]
    for doc in result:
        doc.pop("id", None)
    return Response({"result": result, "count": events.count()})


@fedn_route(
    parameters=_filters(ValidationFilterSet),
    responses={
        200: OpenApiResponse(
            {
                "type": "object",
                "description": "Every matching validation under its id.",
                "additionalProperties": LEGACY_VALIDATION_SCHEMA,
            }
        ),
        400: error(400, "An unknown filter, or a value it refuses."),
    },
)
@api_view(["GET"])
def list_validations(request: Request) -> Response:
    validations = _filtered(ValidationFilterSet, Validation.objects.order_by("-timestamp", "-pk"), request)
    answer = {}
    for validation in validations:
        doc = validation_doc(validation)
        answer[doc.pop("id")] = {
            k: doc[k] for k in ("model_id", "data", "timestamp", "meta", "sender", "receiver")
        }
    return Response(answer)


@fedn_route(responses={200: ControllerStatusSerializer})
@api_view(["GET"])
def get_controller_status(request: Request) -> Response:
    return Response({"state": controller_state().state})


@fedn_route(
    parameters=[query("feature", "The metric to plot; the first one by name without.")],
    responses={200: PlotDataSerializer, 404: error(404, "No validation reports this metric.")},
)
@api_view(["GET"])
def get_plot_data(request: Request) -> Response:
    """Validation metrics for a box plot: the metric names, and a Plotly figure of one of them."""
    values: dict[str, list[float]] = defaultdict(list)
    for data in Validation.objects.values_list("data", flat=True):
        for name, value in metrics.numeric_metrics(data).items():
            values[name].append(value)
    valid_metrics = sorted(values)
    feature = request.query_params.get("feature") or (valid_metrics[0] if valid_metrics else None)
    if feature is not None and feature not in values:
        return failure(f"No validations report the metric {feature}.", status.HTTP_404_NOT_FOUND)
    box_plot = None
    if feature is not None:
        figure = {
            "data": [{"type": "box", "name": feature, "y": values[feature]}],
            "layout": {"title": feature},
        }
        box_plot = json.dumps(figure)
    return Response({"valid_metrics": valid_metrics, "box_plot": box_plot})


@fedn_route(
    responses={(200, "text/plain"): OpenApiResponse({"type": "string", "enum": ["OK"]}, description="Alive.")}
)
@api_view(["GET"])
@permission_classes([AllowAny])
def health(request: Request) -> HttpResponse:
    return HttpResponse("OK", content_type="text/plain")
