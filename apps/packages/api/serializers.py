from typing import Any

from rest_framework import serializers

from apps.packages.models import ComputePackage
from controlplane.api.fields import as_http_date


class ComputePackageSerializer(serializers.ModelSerializer):
    """FEDn's typed package: {id, key, committed_at, description, file_name, helper, name, storage_file_name, active}."""

    class Meta:
        model = ComputePackage
        fields = ["package_id"]

    def to_representation(self, instance: ComputePackage) -> dict[str, Any]:
        return {
            "id": str(instance.package_id),
            "key": "active" if instance.active else "package_trail",
            "committed_at": as_http_date(instance.committed_at),
            "description": instance.description,
            "file_name": instance.file_name,
            "helper": instance.helper,
            "name": instance.name,
            "storage_file_name": instance.storage_file_name,
            "active": instance.active,
            "size": instance.size,
            "checksum": instance.sha256,
        }


class PackageUploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    helper = serializers.CharField(max_length=64)
    name = serializers.CharField(max_length=255, required=False, allow_blank=True, allow_null=True)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
