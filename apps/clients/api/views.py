from apps.clients.api.serializers import ClientSerializer
from apps.clients.filtersets import ClientFilterSet
from apps.clients.models import Client
from controlplane.api.schema import read_routes
from controlplane.api.viewsets import FednReadViewSet


@read_routes(ClientSerializer)
class ClientViewSet(FednReadViewSet):
    queryset = Client.objects.select_related("combiner")
    serializer_class = ClientSerializer
    filterset_class = ClientFilterSet
    entity_name = "Client"
    default_sort_key = "last_seen"
    sort_fields = {
        "last_seen": "last_seen",
        "updated_at": "updated_at",
        "name": "name",
        "status": "status",
        "combiner": "combiner__name",
        "ip": "ip",
    }
