from django.db import models


# Labels are the values FEDn puts on the wire, so the admin, the API and the CLI use one word.
class ClientStatus(models.TextChoices):
    AVAILABLE = "available", "available"
    ONLINE = "online", "online"
    OFFLINE = "offline", "offline"
