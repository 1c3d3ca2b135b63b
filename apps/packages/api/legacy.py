"""FEDn's legacy package routes."""

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers, status
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from apps.packages.api.serializers import ComputePackageSerializer, PackageUploadSerializer
from apps.packages.models import ComputePackage
from apps.packages.services import (
    package_activate,
    package_change_refused,
    package_create,
    package_get_active,
)
from controlplane.api.auth import IsClientRole
from controlplane.api.legacy import failure, success, window
from controlplane.api.schema import LEGACY_PAGING, FednSuccessSerializer, error, errors, fedn_route, query
from controlplane.artifacts import streaming_response


class LegacyPackageSerializer(serializers.Serializer):
    """ComputePackageSerializer's document without `key`, and `active` only when asked for."""

    id = serializers.UUIDField()
    committed_at = serializers.CharField(help_text="RFC 822 date.")
    description = serializers.CharField(allow_null=True)
    file_name = serializers.CharField()
    helper = serializers.CharField()
    name = serializers.CharField(allow_null=True)
    storage_file_name = serializers.CharField()
    active = serializers.BooleanField(required=False, help_text="Only with include_active=true.")
    size = serializers.IntegerField()
    checksum = serializers.CharField()


class LegacyPackageListSerializer(serializers.Serializer):
    result = LegacyPackageSerializer(many=True)
    count = serializers.IntegerField()


class ChecksumSerializer(serializers.Serializer):
    checksum = serializers.CharField(help_text="sha256 of the package archive.")


PACKAGE_NAME = query("name", "The package's storage file name, id or name; the active package without.")


def legacy_package_doc(package: ComputePackage, include_active: bool = False) -> dict:
    doc = ComputePackageSerializer(package).data
    doc.pop("key", None)
    if not include_active:
        doc.pop("active", None)
    return doc


@fedn_route(
    request={"multipart/form-data": PackageUploadSerializer},
    responses={
        200: FednSuccessSerializer,
        400: error(400, "A field missing, an archive refused, or a session running."),
    },
)
@api_view(["POST"])
@parser_classes([MultiPartParser, FormParser])
def set_package(request: Request) -> Response:
    """Upload a compute package and make it the active one."""
    refusal = package_change_refused()
    if refusal:
        return failure(refusal, status.HTTP_400_BAD_REQUEST)
    if not request.data.get("helper"):
        return failure("Missing helper type.", status.HTTP_400_BAD_REQUEST)
    if "file" not in request.FILES:
        return failure("Missing file.", status.HTTP_400_BAD_REQUEST)
    payload = PackageUploadSerializer(data=request.data)
    payload.is_valid(raise_exception=True)
    package_create(
        upload=payload.validated_data["file"],
        helper=payload.validated_data["helper"],
        name=payload.validated_data.get("name"),
        description=payload.validated_data.get("description"),
    )
    return success("Compute package set.")


@fedn_route(responses={200: LegacyPackageSerializer, 404: error(404, "No package is active.")})
@api_view(["GET"])
def get_package(request: Request) -> Response:
    package = package_get_active()
    if package is None:
        return failure("No compute package found.", status.HTTP_404_NOT_FOUND)
    return Response(legacy_package_doc(package))


@fedn_route(
    parameters=[*LEGACY_PAGING, query("include_active", '"true" adds each package\'s `active`.')],
    responses={200: LegacyPackageListSerializer, **errors(400), 404: error(404, "No packages at all.")},
)
@api_view(["GET"])
def list_compute_packages(request: Request) -> Response:
    include_active = request.query_params.get("include_active") == "true"
    packages = ComputePackage.objects.order_by("-committed_at", "-pk")
    count = packages.count()
    if count == 0:
        return failure("No compute packages found.", status.HTTP_404_NOT_FOUND)
    result = [legacy_package_doc(p, include_active) for p in window(packages, request)]
    return Response({"result": result, "count": count})


def _requested_package(request: Request) -> ComputePackage:
    name = request.query_params.get("name")
    package = ComputePackage.objects.find(name) if name else package_get_active()
    if package is None:
        raise NotFound(f"No compute package {name} found." if name else "No compute package found.")
    return package


@fedn_route(
    parameters=[PACKAGE_NAME],
    responses={
        (200, "application/octet-stream"): OpenApiResponse(
            bytes, description="The archive, as an attachment."
        ),
        404: error(404, "No such package, or none active."),
    },
)
@api_view(["GET"])
@permission_classes([IsClientRole])
def download_package(request: Request) -> StreamingHttpResponse:
    """The active compute package (or the one named by `name`), streamed as an attachment."""
    package = _requested_package(request)
    return streaming_response(package.file.name, package.storage_file_name, package.size)


@fedn_route(
    parameters=[PACKAGE_NAME],
    responses={200: ChecksumSerializer, 404: error(404, "No such package, or none active.")},
)
@api_view(["GET"])
@permission_classes([IsClientRole])
def get_package_checksum(request: Request) -> Response:
    return Response({"checksum": _requested_package(request).sha256})


@fedn_route(
    parameters=[query("id", "The package's id or name (or `id` in the body).")],
    request={
        "application/json": {
            "type": "object",
            "properties": {"id": {"type": "string"}},
            "additionalProperties": True,
        }
    },
    responses={
        200: FednSuccessSerializer,
        400: error(400, "No such package, or a session running."),
    },
)
@api_view(["PUT", "POST"])
def set_active_package(request: Request) -> Response:
    identifier = request.query_params.get("id") or (
        request.data.get("id") if hasattr(request.data, "get") else None
    )
    package = ComputePackage.objects.find(str(identifier)) if identifier else None
    if package is None:
        return failure("Failed to set compute package.", status.HTTP_400_BAD_REQUEST)
    package_activate(package=package)
    return success("Compute package set.")
