from typing import Any

from rest_framework import serializers

from apps.models.models import Model
from controlplane.api.serializers import ConstantField, HttpDateField


class ModelSerializer(serializers.Serializer):
    """FEDn's model doc: {id, key, model, parent_model, session_id, committed_at}, and the file's facts."""

    id = serializers.CharField(source="pk", read_only=True)
    key = ConstantField("models")
    model = serializers.UUIDField(source="model_id", read_only=True)
    parent_model = serializers.UUIDField(source="parent_id", read_only=True, allow_null=True)
    session_id = serializers.CharField(read_only=True, allow_null=True)
    committed_at = HttpDateField()
    active = serializers.BooleanField(read_only=True)
    size = serializers.IntegerField(read_only=True, help_text="Bytes of the .npz file.")
    checksum = serializers.CharField(source="sha256", read_only=True, help_text="sha256 of the .npz file.")


def model_doc(instance: Model) -> dict[str, Any]:
    return dict(ModelSerializer(instance).data)
