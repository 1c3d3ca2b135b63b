from django.db import models

from apps.clients.choices import ClientStatus
from apps.combiners.models import Combiner
from controlplane.querysets import NaturalKeyQuerySet


class ClientQuerySet(NaturalKeyQuerySet["Client"]):
    natural_keys = ("name",)


class Client(models.Model):
    """A data holder's client process (FEDn's `network.clients`), keyed by its name."""

    name = models.CharField(max_length=128, unique=True)
    combiner = models.ForeignKey(
        Combiner, on_delete=models.SET_NULL, null=True, blank=True, related_name="clients"
    )
    combiner_preferred = models.CharField(max_length=128, blank=True, default="", db_index=True)
    ip = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(
        max_length=16, choices=ClientStatus.choices, default=ClientStatus.AVAILABLE, db_index=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    last_seen = models.DateTimeField(blank=True, null=True, db_index=True)

    objects = ClientQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen", "-id"]
        indexes = [models.Index(fields=["combiner", "status"]), models.Index(fields=["ip"])]

    def __str__(self) -> str:
        return self.name
