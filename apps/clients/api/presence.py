"""The combiner routes, with the presence report a combiner sends about its clients.

The report writes clients, so its route lives with the clients app, on the combiners' viewset; the
combiners app itself knows nothing of clients.
"""

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.clients.choices import ClientStatus
from apps.clients.presence import combiner_report_clients
from apps.combiners.api.views import CombinerViewSet
from controlplane.api.auth import IsCombinerRole, require_speaks_for
from controlplane.api.serializers import StrictSerializer


class ClientTransitionSerializer(StrictSerializer):
    name = serializers.CharField(max_length=128)
    # A combiner knows only whether it holds the client; "available" is the controller's word.
    status = serializers.ChoiceField(choices=[ClientStatus.ONLINE.value, ClientStatus.OFFLINE.value])
    last_seen = serializers.DateTimeField(required=False)


class ClientReportSerializer(StrictSerializer):
    """A batch of transitions, or with `complete` a snapshot: every online client is listed."""

    clients = ClientTransitionSerializer(many=True)
    complete = serializers.BooleanField(required=False, default=False)


class CombinerPresenceViewSet(CombinerViewSet):
    @extend_schema(
        request=ClientReportSerializer,
        responses={
            200: inline_serializer(
                "ClientReportApplied",
                {
                    "updated": serializers.IntegerField(),
                    "offline": serializers.IntegerField(
                        required=False, help_text="With `complete`: clients set offline as not listed."
                    ),
                },
            )
        },
    )
    @action(detail=True, methods=["post"], permission_classes=[IsCombinerRole], filter_backends=[])
    def clients(self, request: Request, pk: Any = None) -> Response:
        """A combiner's presence report (a snapshot, or transitions); a combiner token reports only its own."""
        combiner = self.get_object()
        require_speaks_for(request, combiner.name)
        payload = ClientReportSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        result = combiner_report_clients(
            combiner=combiner,
            clients=payload.validated_data["clients"],
            complete=payload.validated_data["complete"],
        )
        if payload.validated_data["complete"]:
            return Response({"updated": result.updated, "offline": result.offline})
        return Response({"updated": result.updated})
