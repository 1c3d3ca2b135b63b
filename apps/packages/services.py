"""Compute packages: upload (validated, hashed, stored), activate, look up."""

import uuid
from pathlib import PurePath

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from apps.packages.models import ComputePackage
from controlplane import artifacts
from controlplane.errors import DomainError
from controlplane.federation import federation_refusal
from fedplane.packages import PackageError as ArchiveError
from fedplane.packages import inspect_archive

PACKAGE_EXTENSIONS = (".tar.gz", ".tgz", ".tar.bz2", ".zip")


class PackageError(DomainError):
    """The upload is not a usable compute package; the message says why."""


def package_extension(file_name: str) -> str:
    lowered = PurePath(file_name).name.lower()
    for extension in PACKAGE_EXTENSIONS:
        if lowered.endswith(extension) and len(lowered) > len(extension):
            return extension
    allowed = ", ".join(PACKAGE_EXTENSIONS)
    raise PackageError(f"'{file_name}' is not a compute package; use one of {allowed}")


def package_create(
    *, upload: UploadedFile, helper: str, name: str | None = None, description: str | None = None
) -> ComputePackage:
    """Validate, store and activate an uploaded compute package."""
    if not helper:
        raise PackageError("Missing helper type.")
    extension = package_extension(upload.name or "")
    package_id = uuid.uuid4()
    storage_file_name = f"{package_id}{extension}"
    key = f"packages/{storage_file_name}"
    try:
        with artifacts.spool_upload(upload, settings.FEDPLANE_MAX_UPLOAD_BYTES, suffix=extension) as spooled:
            if spooled.size == 0:
                raise PackageError("The uploaded file is empty.")
            try:
                inspect_archive(spooled.path)
            except ArchiveError as exc:
                raise PackageError(str(exc)) from exc
            artifacts.save(key, spooled.path)
    except ValueError as exc:  # e.g. an upload over the size limit
        raise PackageError(str(exc)) from exc
    try:
        with transaction.atomic():
            ComputePackage.objects.filter(active=True).update(active=False)
            return ComputePackage.objects.create(
                package_id=package_id,
                file=key,
                file_name=PurePath(upload.name or storage_file_name).name,
                storage_file_name=storage_file_name,
                helper=helper,
                name=name or None,
                description=description or None,
                size=spooled.size,
                sha256=spooled.sha256,
                active=True,
            )
    except Exception:
        artifacts.delete(key)
        raise


@transaction.atomic
def package_activate(*, package: ComputePackage) -> ComputePackage:
    refusal = package_change_refused()
    if refusal:
        raise PackageError(refusal)
    ComputePackage.objects.filter(active=True).exclude(pk=package.pk).update(active=False)
    ComputePackage.objects.filter(pk=package.pk).update(active=True)
    package.active = True
    return package


def package_get_active() -> ComputePackage | None:
    return ComputePackage.objects.filter(active=True).first()


def package_change_refused() -> str | None:
    """Why the package may not change now (a session holds the federation), or None."""
    return federation_refusal()
