from typing import Any

from django.contrib import admin
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils.safestring import SafeString

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.combiners.admin import CombinerAdmin
from apps.combiners.models import Combiner
from controlplane.admin_widgets import INFO, MUTED, OK, change_url, changelist_url, choice_badge, link

CLIENT_TONES = {ClientStatus.ONLINE: OK, ClientStatus.AVAILABLE: INFO, ClientStatus.OFFLINE: MUTED}


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    """Clients register through /add_client and their combiner reports them; the console shows them."""

    list_display = ["name", "status_badge", "combiner_link", "ip", "last_seen", "created_at"]
    list_filter = ["status", "combiner"]
    list_select_related = ["combiner"]
    search_fields = ["name", "ip", "combiner__name", "combiner_preferred"]
    date_hierarchy = "created_at"
    ordering = ["-last_seen", "-id"]
    readonly_fields = [
        "name",
        "status_badge",
        "combiner_link",
        "combiner_preferred",
        "ip",
        "created_at",
        "updated_at",
        "last_seen",
    ]
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Client | None = None) -> bool:
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, client: Client) -> SafeString:
        return choice_badge(client.status, CLIENT_TONES)

    @admin.display(description="combiner", ordering="combiner__name")
    def combiner_link(self, client: Client) -> SafeString | str:
        if client.combiner is None:
            return "-"
        return link(change_url(client.combiner), client.combiner.name)


def clients_of_combiner(**filters: str) -> Coalesce:
    """How many clients (matching `filters`) the outer combiner row has, as a correlated count."""
    counted = (
        Client.objects.filter(combiner=OuterRef("pk"), **filters)
        .order_by()
        .values("combiner")
        .annotate(count=Count("pk"))
        .values("count")
    )
    return Coalesce(Subquery(counted), 0)


# Combiners know nothing of clients (clients import combiners), so the clients app adds each
# combiner's client load to the combiner page by registering the combiner admin extended with it.
admin.site.unregister(Combiner)


@admin.register(Combiner)
class CombinerWithClientsAdmin(CombinerAdmin):
    list_display = [*CombinerAdmin.list_display[:3], "online_clients", *CombinerAdmin.list_display[3:]]
    readonly_fields = [*CombinerAdmin.readonly_fields, "online_clients"]
    fieldsets = [
        (None, {"fields": ["name", "max_clients", "online_clients"]}),
        *CombinerAdmin.fieldsets[1:],
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Combiner]:
        # Counted per listed combiner (the (combiner, status) index answers each), not by joining
        # every client and grouping: the list's counts and date drill-down read combiners alone.
        return (
            super()
            .get_queryset(request)
            .annotate(
                online_count=clients_of_combiner(status=ClientStatus.ONLINE),
                client_count=clients_of_combiner(),
            )
        )

    @admin.display(description="clients online / assigned", ordering="online_count")
    def online_clients(self, combiner: Any) -> SafeString:
        url = changelist_url(Client, combiner__id__exact=combiner.pk)
        return link(url, f"{combiner.online_count} / {combiner.client_count}")
