from collections.abc import Callable
from typing import Any, ClassVar

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from apps.sessions.api.serializers import (
    RoundReportSerializer,
    RoundSerializer,
    SessionCreateSerializer,
    SessionSerializer,
    SessionStartSerializer,
    StatusRawSerializer,
    StatusSerializer,
    ValidationRawSerializer,
    ValidationSerializer,
    session_doc,
)
from apps.sessions.choices import SessionStatus
from apps.sessions.filtersets import RoundFilterSet, SessionFilterSet, StatusFilterSet, ValidationFilterSet
from apps.sessions.ingestion import (
    forwarded_batch_record,
    round_record_report,
    statuses_record,
    validations_record,
)
from apps.sessions.models import Round, Session, Status, Validation
from apps.sessions.services import session_create, session_start, session_stop
from controlplane.api.auth import IsCombinerRole, bound_subject, require_speaks_for
from controlplane.api.schema import error, read_routes, typed_or_raw
from controlplane.api.viewsets import FednReadViewSet


def as_documents(data: Any) -> list[dict[str, Any]]:
    docs = data if isinstance(data, list) else [data]
    if not docs or not all(isinstance(doc, dict) for doc in docs):
        raise ValidationError("Send one JSON object or a non-empty list of objects.")
    return docs


@read_routes(SessionSerializer)
class SessionViewSet(FednReadViewSet):
    queryset = Session.objects.all()
    serializer_class = SessionSerializer
    filterset_class = SessionFilterSet
    entity_name = "Session"
    default_sort_key = "session_id"
    sort_fields = {"session_id": "session_id", "committed_at": "committed_at", "status": "status"}

    @extend_schema(request=SessionCreateSerializer, responses={201: SessionSerializer})
    def create(self, request: Request) -> Response:
        """Create a session from a session_config (FEDn 0.9.4+); it starts with POST /sessions/start."""
        payload = SessionCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        session = session_create(
            session_id=payload.validated_data.get("session_id"),
            config=payload.validated_data["session_config"],
        )
        return Response(session_doc(session), status=status.HTTP_201_CREATED)

    @extend_schema(
        request=SessionStartSerializer,
        responses={
            200: inline_serializer(
                "SessionStarted",
                {"message": serializers.CharField(), "session_id": serializers.CharField()},
            ),
            400: error(400, "Not a start the session can take: bad rounds, not Created, or a precondition."),
            404: error(404, "No such session."),
        },
    )
    @action(detail=False, methods=["post"], filter_backends=[])
    def start(self, request: Request) -> Response:
        """Start a created session."""
        payload = SessionStartSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        session = Session.objects.find(payload.validated_data["session_id"])
        if session is None:
            raise NotFound(f"Session {payload.validated_data['session_id']} not found")
        session_start(session=session, rounds=payload.validated_data.get("rounds"))
        return Response({"message": "Session started", "session_id": session.session_id})

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "SessionStopAnswer",
                {
                    "message": serializers.CharField(),
                    "status": serializers.ChoiceField(choices=SessionStatus.choices),
                },
            ),
            400: error(400, "The session has already ended."),
        },
    )
    @action(detail=True, methods=["post"], filter_backends=[])
    def stop(self, request: Request, pk: Any = None) -> Response:
        """Ask a running session to stop after its current step."""
        session = session_stop(session=self.get_object())
        return Response(
            {"message": f"Session {session.session_id} is {session.status}.", "status": session.status}
        )


@read_routes(RoundSerializer)
class RoundViewSet(FednReadViewSet):
    queryset = Round.objects.select_related("session").prefetch_related("reports")
    serializer_class = RoundSerializer
    filterset_class = RoundFilterSet
    entity_name = "Round"
    default_sort_key = "round_id"
    sort_fields = {"round_id": "number", "status": "status", "created_at": "created_at"}

    @extend_schema(
        request=RoundReportSerializer,
        responses={
            201: inline_serializer("ReportAccepted", {"accepted": serializers.BooleanField()}),
            409: error(409, "A report the round cannot take: late, of another attempt, or a second one."),
        },
    )
    @action(detail=True, methods=["post"], permission_classes=[IsCombinerRole], filter_backends=[])
    def reports(self, request: Request, pk: Any = None) -> Response:
        """A combiner's report of its part of a round; a combiner token reports only as itself."""
        found = self.get_object()
        payload = RoundReportSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        require_speaks_for(request, payload.validated_data["combiner"])
        round_record_report(round=found, report=payload.validated_data)
        return Response({"accepted": True}, status=status.HTTP_201_CREATED)


class CombinerForwardedViewSet(FednReadViewSet):
    """Read routes, plus POST of documents a combiner forwards (role `combiner`).

    The read routes answer `serializer_class`'s typed documents, or with FEDn's `X-Skip-Typing: true`
    `raw_serializer_class`'s: the document as the combiner forwarded it.
    """

    record: ClassVar[Callable[..., int]]
    raw_serializer_class: ClassVar[type[serializers.Serializer]]

    def get_serializer_class(self) -> type[serializers.Serializer]:
        if self.request.headers.get("X-Skip-Typing", "").lower() == "true":
            return self.raw_serializer_class
        return self.serializer_class

    def get_permissions(self) -> list[Any]:
        if self.action == "create":
            return [IsCombinerRole()]
        return super().get_permissions()

    @extend_schema(
        request={
            "application/json": {
                "oneOf": [
                    {"type": "object", "additionalProperties": True},
                    {
                        "type": "array",
                        "items": {"type": "object", "additionalProperties": True},
                        "minItems": 1,
                    },
                ]
            }
        },
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="The batch's key (1-64 of A-Z a-z 0-9 - _): a batch sent again under the "
                "key it was stored with stores nothing and answers created 0.",
            )
        ],
        responses={201: inline_serializer("DocumentsCreated", {"created": serializers.IntegerField()})},
    )
    def create(self, request: Request) -> Response:
        """Documents forwarded by a combiner, in FEDn's camelCase MessageToDict form."""
        docs = as_documents(request.data)
        record = type(self).record
        key = request.headers.get("Idempotency-Key")
        if key is None:
            created = record(docs=docs)
        else:
            sender = bound_subject(request) or ""
            created = forwarded_batch_record(sender=sender, key=key, docs=docs, record=record)
        return Response({"created": created}, status=status.HTTP_201_CREATED)


@read_routes(typed_or_raw(StatusSerializer, StatusRawSerializer, "StatusDocument"), skip_typing=True)
class StatusViewSet(CombinerForwardedViewSet):
    queryset = Status.objects.all()
    serializer_class = StatusSerializer
    raw_serializer_class = StatusRawSerializer
    filterset_class = StatusFilterSet
    record = staticmethod(statuses_record)
    entity_name = "Status"
    default_sort_key = "timestamp"
    sort_fields = {
        "timestamp": "timestamp",
        "type": "type",
        "sender.name": "sender_name",
        "log_level": "log_level",
    }


@read_routes(
    typed_or_raw(ValidationSerializer, ValidationRawSerializer, "ValidationDocument"), skip_typing=True
)
class ValidationViewSet(CombinerForwardedViewSet):
    queryset = Validation.objects.all()
    serializer_class = ValidationSerializer
    raw_serializer_class = ValidationRawSerializer
    filterset_class = ValidationFilterSet
    record = staticmethod(validations_record)
    entity_name = "Validation"
    default_sort_key = "timestamp"
    sort_fields = {"timestamp": "timestamp", "model_id": "model_id", "sender.name": "sender_name"}
