from typing import Any

from rest_framework import serializers

from apps.combiners.models import Combiner
from controlplane.api.fields import as_plain
from controlplane.api.serializers import StrictSerializer


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


class ClientTransitionSerializer(StrictSerializer):
    name = serializers.CharField(max_length=128)
    status = serializers.ChoiceField(choices=["online", "offline"])
    last_seen = serializers.DateTimeField(required=False)


class ClientReportSerializer(StrictSerializer):
    """A batch of transitions, or with `complete` a snapshot: every online client is listed."""

    clients = ClientTransitionSerializer(many=True)
    complete = serializers.BooleanField(required=False, default=False)
