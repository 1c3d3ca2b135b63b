from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from controlplane.api.serializers import HttpDateField, PlainDateTimeField


class ClientSerializer(serializers.Serializer):
    """FEDn's client doc: {id, name, combiner, combiner_preferred, ip, status, updated_at, last_seen}."""

    id = serializers.CharField(source="pk", read_only=True)
    name = serializers.CharField(read_only=True)
    combiner = serializers.CharField(source="combiner.name", read_only=True, allow_null=True)
    combiner_preferred = serializers.SerializerMethodField(
        help_text="The combiner the client asked for, or false when it asked for none."
    )
    ip = serializers.CharField(read_only=True)
    status = serializers.ChoiceField(choices=ClientStatus.choices, read_only=True)
    updated_at = PlainDateTimeField()
    last_seen = HttpDateField(allow_null=True)

    @extend_schema_field(
        {"oneOf": [{"type": "string", "minLength": 1}, {"type": "boolean", "enum": [False]}]}
    )
    def get_combiner_preferred(self, instance: Client) -> str | bool:
        return instance.combiner_preferred or False
