from django.db import models

from controlplane.querysets import NaturalKeyQuerySet


class CombinerQuerySet(NaturalKeyQuerySet["Combiner"]):
    natural_keys = ("name",)


class Combiner(models.Model):
    """A registered combiner node (FEDn's `network.combiners`)."""

    name = models.CharField(max_length=128, unique=True)
    address = models.CharField(max_length=255, help_text="Host clients and the controller dial.")
    fqdn = models.CharField(max_length=255, blank=True, null=True)
    port = models.PositiveIntegerField()
    ip = models.CharField(max_length=64, blank=True, default="", help_text="Address it announced from.")
    secure_grpc = models.BooleanField(default=False)
    certificate = models.TextField(blank=True, null=True, help_text="Base64 PEM, when TLS is on.")
    key = models.TextField(blank=True, null=True)
    max_clients = models.PositiveIntegerField(default=30)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    last_report_at = models.DateTimeField(blank=True, null=True)

    objects = CombinerQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["address"]), models.Index(fields=["ip"])]

    def __str__(self) -> str:
        return self.name
