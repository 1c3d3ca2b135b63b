import uuid

from django.db import models
from django.db.models import Q

from controlplane.querysets import NaturalKeyQuerySet


class ComputePackageQuerySet(NaturalKeyQuerySet["ComputePackage"]):
    # FEDn names a package by its uuid or by its storage file name (<uuid>.<ext>).
    natural_keys = ("package_id", "storage_file_name")


class ComputePackage(models.Model):
    """One uploaded compute package (FEDn's `package_trail` entry); at most one is active."""

    package_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    file = models.FileField(max_length=255)
    file_name = models.CharField(max_length=255, help_text="Name of the uploaded file.")
    storage_file_name = models.CharField(max_length=255, help_text="<uuid>.<ext>, as FEDn names it.")
    helper = models.CharField(max_length=64)
    name = models.CharField(max_length=255, blank=True, null=True)
    description = models.TextField(blank=True, null=True)
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    active = models.BooleanField(default=False, db_index=True)
    committed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = ComputePackageQuerySet.as_manager()

    class Meta:
        ordering = ["-committed_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["active"], condition=Q(active=True), name="one_active_package"),
        ]
        indexes = [
            models.Index(fields=["name"]),
            models.Index(fields=["file_name"]),
            models.Index(fields=["storage_file_name"]),
            models.Index(fields=["helper"]),
        ]

    def __str__(self) -> str:
        return self.name or self.file_name
