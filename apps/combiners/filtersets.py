from apps.combiners.models import Combiner
from controlplane.api.filters import FednDateTimeFilter, FednFilter, FednFilterSet


class CombinerFilterSet(FednFilterSet):
    name = FednFilter()
    address = FednFilter()
    ip = FednFilter()
    fqdn = FednFilter()
    port = FednFilter()
    updated_at = FednDateTimeFilter()

    class Meta:
        model = Combiner
        fields: list[str] = []
