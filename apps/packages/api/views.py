from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from apps.packages.api.serializers import ComputePackageSerializer
from apps.packages.filtersets import ComputePackageFilterSet
from apps.packages.models import ComputePackage
from apps.packages.services import package_get_active
from controlplane.api.schema import error, read_routes
from controlplane.api.viewsets import FednReadViewSet


@read_routes(ComputePackageSerializer)
class ComputePackageViewSet(FednReadViewSet):
    queryset = ComputePackage.objects.all()
    serializer_class = ComputePackageSerializer
    filterset_class = ComputePackageFilterSet
    entity_name = "Package"
    default_sort_key = "committed_at"
    sort_fields = {
        "committed_at": "committed_at",
        "name": "name",
        "file_name": "file_name",
        "helper": "helper",
        "id": "package_id",
    }

    @extend_schema(responses={200: ComputePackageSerializer, 404: error(404, "No package is active.")})
    @action(detail=False, methods=["get"])
    def active(self, request: Request) -> Response:
        """The active compute package."""
        package = package_get_active()
        if package is None:
            raise NotFound("No active compute package.")
        return Response(self.get_serializer(package).data)
