from django.db import models


class ClientStatus(models.TextChoices):
    AVAILABLE = "available", "Available"
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
