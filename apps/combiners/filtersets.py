import django_filters

from apps.combiners.models import Combiner
from controlplane.api.filters import FednDateTimeFilter, FednFilter


class CombinerFilterSet(django_filters.FilterSet):
    name = FednFilter()
    address = FednFilter()
    ip = FednFilter()
    fqdn = FednFilter()
    port = FednFilter()
    updated_at = FednDateTimeFilter()

    class Meta:
        model = Combiner
        fields: list[str] = []
