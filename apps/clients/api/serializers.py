from typing import Any

from rest_framework import serializers

from apps.clients.models import Client
from controlplane.api.fields import as_http_date, as_plain


class ClientSerializer(serializers.ModelSerializer):
    """FEDn's client doc: {id, name, combiner, combiner_preferred, ip, status, updated_at, last_seen}."""

    class Meta:
        model = Client
        fields = ["name"]

    def to_representation(self, instance: Client) -> dict[str, Any]:
        return {
            "id": str(instance.pk),
            "name": instance.name,
            "combiner": instance.combiner.name if instance.combiner else None,
            "combiner_preferred": instance.combiner_preferred or False,
            "ip": instance.ip,
            "status": instance.status,
            "updated_at": as_plain(instance.updated_at),
            "last_seen": as_http_date(instance.last_seen),
        }
