from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from apps.combiners.api.serializers import ClientReportSerializer, CombinerSerializer
from apps.combiners.filtersets import CombinerFilterSet
from apps.combiners.models import Combiner
from apps.combiners.services import CombinerError, combiner_report_clients
from controlplane.api.auth import IsCombinerRole, require_speaks_for
from controlplane.api.viewsets import FednReadViewSet


class CombinerViewSet(FednReadViewSet):
    queryset = Combiner.objects.all()
    serializer_class = CombinerSerializer
    filterset_class = CombinerFilterSet
    entity_name = "Combiner"
    natural_key = "name"
    default_sort_key = "updated_at"
    sort_fields = {
        "updated_at": "updated_at",
        "name": "name",
        "address": "address",
        "ip": "ip",
        "port": "port",
    }

    @extend_schema(request=ClientReportSerializer, responses={200: {"type": "object"}})
    @action(detail=True, methods=["post"], permission_classes=[IsCombinerRole], filter_backends=[])
    def clients(self, request: Request, pk: Any = None) -> Response:
        """A combiner's presence report (a snapshot, or transitions); a combiner token reports only its own."""
        combiner = self.get_object()
        require_speaks_for(request, combiner.name)
        payload = ClientReportSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            result = combiner_report_clients(
                combiner=combiner,
                clients=payload.validated_data["clients"],
                complete=payload.validated_data["complete"],
            )
        except CombinerError as exc:
            raise ValidationError(str(exc)) from exc
        if payload.validated_data["complete"]:
            return Response({"updated": result.updated, "offline": result.offline})
        return Response({"updated": result.updated})
