"""Holds on the federation: while a session runs, its compute package and active model stay put.

The sessions app, which knows when a session runs, keeps the holds equal to its running sessions
(`apps/sessions/records.py: federation_holds_sync`); the packages and models apps, which sit below
it, ask here before a change.
"""

from collections.abc import Iterable

from django.db import IntegrityError, transaction

from controlplane.models import FederationHold


def federation_holder() -> str | None:
    """Who holds the federation now (the oldest hold), or None when nothing does."""
    return FederationHold.objects.values_list("holder", flat=True).first()


def federation_refusal() -> str | None:
    """Why the package or the active model may not change now, or None when they may."""
    holder = federation_holder()
    if holder is None:
        return None
    return f"A session is running ({holder}); wait until it has ended or stop it."


def federation_holds_set(holders: Iterable[str]) -> None:
    """Make the holds exactly `holders`: new ones are taken, the others released."""
    wanted = set(holders)
    with transaction.atomic():
        FederationHold.objects.exclude(holder__in=wanted).delete()
        present = set(FederationHold.objects.filter(holder__in=wanted).values_list("holder", flat=True))
        for holder in sorted(wanted - present):
            try:
                with transaction.atomic():
                    FederationHold.objects.create(holder=holder)
            except IntegrityError:
                pass  # taken by a concurrent sync: the hold is there, which is all that is asked
