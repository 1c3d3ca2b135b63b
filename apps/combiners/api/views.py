from apps.combiners.api.serializers import CombinerSerializer
from apps.combiners.filtersets import CombinerFilterSet
from apps.combiners.models import Combiner
from controlplane.api.schema import read_routes
from controlplane.api.viewsets import FednReadViewSet


@read_routes(CombinerSerializer)
class CombinerViewSet(FednReadViewSet):
    queryset = Combiner.objects.all()
    serializer_class = CombinerSerializer
    filterset_class = CombinerFilterSet
    entity_name = "Combiner"
    default_sort_key = "updated_at"
    sort_fields = {
        "updated_at": "updated_at",
        "name": "name",
        "address": "address",
        "ip": "ip",
        "port": "port",
    }
