"""Client registry and assignment to combiners (least-packed)."""

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.combiners.models import Combiner
from apps.combiners.services import combiner_silence, validate_name
from controlplane.errors import DomainError


class AssignmentError(DomainError):
    """The client cannot be assigned; FEDn clients stop on this (HTTP 400)."""


# A client assigned this recently that its combiner has not reported yet is on its way there: it
# takes a place, so a burst of registrations does not overfill a combiner that refuses the excess.
ARRIVING_SECONDS = 60


def combiners_by_load() -> list[Combiner]:
    """Combiners with room, fewest places taken first (then fewest assigned, then oldest).

    A place is taken by an online client or an arriving one (assigned in the last ARRIVING_SECONDS,
    still `available`); a combiner is full at its max_clients, the capacity it registered with.
    """
    arriving_since = timezone.now() - timedelta(seconds=ARRIVING_SECONDS)
    taken = Q(clients__status=ClientStatus.ONLINE) | Q(
        clients__status=ClientStatus.AVAILABLE, clients__last_seen__gte=arriving_since
    )
    combiners = Combiner.objects.annotate(
        taken=Count("clients", filter=taken), assigned=Count("clients")
    ).order_by("taken", "assigned", "created_at", "pk")
    return [combiner for combiner in combiners if combiner.taken < combiner.max_clients]


def select_combiner(preferred: str | None) -> Combiner:
    if preferred:
        combiner = Combiner.objects.filter(name=preferred).first()
        if combiner is None:
            raise AssignmentError(f"Combiner {preferred} not found.")
        return combiner
    candidates = combiners_by_load()
    if not candidates:
        if Combiner.objects.exists():
            raise AssignmentError("No combiner is accepting clients: every combiner is full.")
        raise AssignmentError("No combiner available.")
    return candidates[0]


@transaction.atomic
def client_assign(*, name: str, preferred_combiner: str | None, ip: str) -> tuple[Client, Combiner]:
    """Assign `name` to a combiner; a client its combiner still has online stays online.

    A client restarted within its combiner's online window registers again before it reconnects.
    Its combiner never saw it leave, so resetting it to `available` would hide it until the next
    snapshot. On another combiner it is `available` until that one reports it.
    """
    validate_name(name, "client_id")
    combiner = select_combiner(preferred_combiner)
    current = Client.objects.select_for_update().filter(name=name).first()
    stays_online = (
        current is not None and current.status == ClientStatus.ONLINE and current.combiner_id == combiner.pk
    )
    client, _ = Client.objects.update_or_create(
        name=name,
        defaults={
            "combiner": combiner,
            "combiner_preferred": preferred_combiner or "",
            "ip": ip,
            "status": ClientStatus.ONLINE if stays_online else ClientStatus.AVAILABLE,
            # A sign of life; it also tells a snapshot from a combiner the client left (which
            # saw it earlier) from the one it is assigned to now.
            "last_seen": timezone.now(),
        },
    )
    return client, combiner


def assignment_answer(combiner: Combiner, helper_type: str) -> dict[str, Any]:
    """What a FEDn 0.9.5 client needs to connect to its combiner."""
    return {
        "status": "assigned",
        "host": combiner.address,
        "fqdn": combiner.fqdn or None,
        "package": "remote",
        "ip": combiner.ip,
        "port": combiner.port,
        "certificate": combiner.certificate or None,
        "helper_type": helper_type,
    }


def clients_online() -> QuerySet[Client]:
    """Clients online in the database whose combiner is not silent (see presence.combiners_expire_silent).

    The filter keeps the start check right between a combiner's death and the write that takes its
    clients offline.
    """
    cutoff = timezone.now() - combiner_silence()
    return Client.objects.filter(status=ClientStatus.ONLINE).filter(
        Q(combiner__last_report_at__isnull=True) | Q(combiner__last_report_at__gte=cutoff)
    )


def clients_count_online(*, combiner: Combiner | None = None) -> int:
    queryset = clients_online()
    if combiner is not None:
        queryset = queryset.filter(combiner=combiner)
    return queryset.count()
