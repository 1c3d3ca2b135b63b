from django.db import models


class TokenRole(models.TextChoices):
    """The `role` claim: the one role a REST route or gRPC method accepts."""

    ADMIN = "admin", "admin"
    CLIENT = "client", "client"
    COMBINER = "combiner", "combiner"
