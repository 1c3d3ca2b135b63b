from django.db import models
from django.utils import timezone


class FederationHold(models.Model):
    """A holder (a running session) under which the active package and model may not change.

    The sessions app holds and releases; the apps below it read the holds without knowing sessions.
    """

    holder = models.CharField(max_length=255, unique=True)
    since = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["since", "pk"]

    def __str__(self) -> str:
        return self.holder
