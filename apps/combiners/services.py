"""Combiner registry: registration, the answer a registered combiner gets, and its silence deadline.

What combiners report about their clients is applied by the clients app (apps/clients/presence.py).
"""

import base64
from datetime import timedelta
from typing import Any

from django.conf import settings

from apps.combiners.models import Combiner
from controlplane.errors import DomainError

COMBINER_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class CombinerRefused(DomainError):
    """A registration or report the controller refuses; the message says why."""


def validate_name(name: str, what: str) -> str:
    if not name or not set(name) <= COMBINER_NAME_CHARS or len(name) > 128:
        raise CombinerRefused(f"{what} must be 1-128 characters of letters, digits, '_' and '-'")
    return name


def combiner_register(
    *,
    name: str,
    address: str,
    port: int,
    fqdn: str | None = None,
    secure_grpc: bool = False,
    ip: str = "",
    max_clients: int | None = None,
) -> Combiner:
    validate_name(name, "combiner_id")
    if not address:
        raise CombinerRefused("address is required")
    if not 0 < port < 65536:
        raise CombinerRefused("port must be between 1 and 65535")
    defaults: dict[str, Any] = {
        "address": address,
        "port": port,
        "fqdn": fqdn or None,
        "secure_grpc": secure_grpc,
        "ip": ip,
    }
    if max_clients is not None:
        defaults["max_clients"] = max_clients
    combiner, _ = Combiner.objects.update_or_create(name=name, defaults=defaults)
    return combiner


def combiner_registration_answer(combiner: Combiner) -> dict[str, Any]:
    """FEDn's /add_combiner answer; storage secrets stay on the controller."""
    if settings.S3_BUCKET:
        storage = {
            "storage_type": "S3",
            "storage_config": {
                "storage_bucket": settings.S3_BUCKET,
                "endpoint_url": settings.S3_ENDPOINT_URL,
            },
        }
    else:
        storage = {"storage_type": "filesystem", "storage_config": {"storage_path": str(settings.MEDIA_ROOT)}}
    return {
        "success": True,
        "message": "Combiner added successfully.",
        "status": "added",
        "storage": storage,
        "statestore": {"type": "fedplane", "network_id": settings.FEDPLANE_NETWORK_ID},
        "certificate": combiner.certificate,
        "key": combiner.key,
    }


def combiner_silence() -> timedelta:
    """A combiner that sends snapshots (every 3 s) and has sent none for this long is gone."""
    return timedelta(seconds=settings.FEDPLANE_COMBINER_SILENCE_SECONDS)


def decode_certificate(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value else None
