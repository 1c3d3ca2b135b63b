from rest_framework import serializers

from controlplane.api.serializers import ConstantField, PlainDateTimeField


class CombinerConfigSerializer(serializers.Serializer):
    max_clients = serializers.IntegerField(read_only=True)


class CombinerSerializer(serializers.Serializer):
    """FEDn's combiner doc: {id, name, address, fqdn, port, ip, parent, certificate, key, config, updated_at}."""

    id = serializers.CharField(source="pk", read_only=True)
    name = serializers.CharField(read_only=True)
    address = serializers.CharField(read_only=True)
    fqdn = serializers.CharField(read_only=True, allow_null=True)
    port = serializers.IntegerField(read_only=True)
    ip = serializers.CharField(read_only=True)
    parent = ConstantField({"name": "api"})
    certificate = serializers.CharField(
        read_only=True, allow_null=True, help_text="Base64 PEM, when TLS is on."
    )
    key = serializers.CharField(read_only=True, allow_null=True)
    config = CombinerConfigSerializer(source="*", read_only=True)
    secure_grpc = serializers.BooleanField(read_only=True)
    updated_at = PlainDateTimeField()
