from apps.clients.models import Client
from controlplane.api.filters import FednDateTimeFilter, FednFilter, FednFilterSet, add_aliases


class ClientFilterSet(FednFilterSet):
    name = FednFilter()
    combiner = FednFilter(field_name="combiner__name")
    combiner_preferred = FednFilter()
    ip = FednFilter()
    status = FednFilter()
    updated_at = FednDateTimeFilter()
    last_seen = FednDateTimeFilter()

    class Meta:
        model = Client
        fields: list[str] = []


add_aliases(
    ClientFilterSet,
    {"combinerPreferred": "combiner_preferred", "updatedAt": "updated_at", "lastSeen": "last_seen"},
)
