import uuid

from django.db import models
from django.db.models import Q

from controlplane.querysets import NaturalKeyQuerySet


def artifact_key(model_id: uuid.UUID | str) -> str:
    """Where a model's .npz lives in the artifact store; combiners use the same key."""
    return f"models/{model_id}.npz"


class ModelQuerySet(NaturalKeyQuerySet["Model"]):
    natural_keys = ("model_id",)


class Model(models.Model):
    """A committed global model (FEDn's `control.model` with key "models")."""

    model_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    parent = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children", to_field="model_id"
    )
    # A plain id, not a foreign key: sessions sit above models in the import order.
    session_id = models.CharField(max_length=128, blank=True, null=True, db_index=True)
    artifact = models.FileField(max_length=255)
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    active = models.BooleanField(default=False, db_index=True, help_text="FEDn's current model.")
    name = models.CharField(max_length=255, blank=True, default="")
    committed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = ModelQuerySet.as_manager()

    class Meta:
        ordering = ["-committed_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["active"], condition=Q(active=True), name="one_active_model")
        ]

    def __str__(self) -> str:
        return str(self.model_id)
