from typing import Any

from rest_framework import serializers

from apps.combiners.models import Combiner
from controlplane.api.fields import as_plain


class CombinerSerializer(serializers.ModelSerializer):
    """FEDn's combiner doc: {id, name, address, fqdn, port, ip, parent, certificate, key, config, updated_at}."""

    class Meta:
        model = Combiner
        fields = ["name"]

    def to_representation(self, instance: Combiner) -> dict[str, Any]:
        return {
            "id": str(instance.pk),
            "name": instance.name,
            "address": instance.address,
            "fqdn": instance.fqdn,
            "port": instance.port,
            "ip": instance.ip,
            "parent": {"name": "api"},
            "certificate": instance.certificate,
            "key": instance.key,
            "config": {"max_clients": instance.max_clients},
            "secure_grpc": instance.secure_grpc,
            "updated_at": as_plain(instance.updated_at),
        }
