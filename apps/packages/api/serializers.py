from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.packages.models import ComputePackage
from controlplane.api.serializers import HttpDateField


class ComputePackageSerializer(serializers.Serializer):
    """FEDn's typed package: {id, key, committed_at, description, file_name, helper, name, storage_file_name, active}."""

    id = serializers.UUIDField(source="package_id", read_only=True)
    key = serializers.SerializerMethodField()
    committed_at = HttpDateField()
    description = serializers.CharField(read_only=True, allow_null=True)
    file_name = serializers.CharField(read_only=True)
    helper = serializers.CharField(read_only=True)
    name = serializers.CharField(read_only=True, allow_null=True)
    storage_file_name = serializers.CharField(read_only=True)
    active = serializers.BooleanField(read_only=True)
    size = serializers.IntegerField(read_only=True, help_text="Bytes of the archive.")
    checksum = serializers.CharField(source="sha256", read_only=True, help_text="sha256 of the archive.")

    @extend_schema_field({"type": "string", "enum": ["active", "package_trail"]})
    def get_key(self, instance: ComputePackage) -> str:
        return "active" if instance.active else "package_trail"


class PackageUploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    helper = serializers.CharField(max_length=64)
    name = serializers.CharField(max_length=255, required=False, allow_blank=True, allow_null=True)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
