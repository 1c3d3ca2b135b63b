from typing import Any

from rest_framework import serializers

from apps.models.models import Model
from controlplane.api.fields import as_http_date


def model_doc(instance: Model) -> dict[str, Any]:
    return {
        "id": str(instance.pk),
        "key": "models",
        "model": str(instance.model_id),
        "parent_model": str(instance.parent_id) if instance.parent_id else None,
        "session_id": instance.session_id,
        "committed_at": as_http_date(instance.committed_at),
        "active": instance.active,
        "size": instance.size,
        "checksum": instance.sha256,
    }


class ModelSerializer(serializers.ModelSerializer):
    """FEDn's model doc: {id, key, model, parent_model, session_id, committed_at}."""

    class Meta:
        model = Model
        fields = ["model_id"]

    def to_representation(self, instance: Model) -> dict[str, Any]:
        return model_doc(instance)
