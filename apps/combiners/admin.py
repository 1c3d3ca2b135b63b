from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString

from apps.clients.choices import ClientStatus
from apps.clients.models import Client
from apps.combiners.models import Combiner
from controlplane.admin_views import changelist_url, link


@admin.register(Combiner)
class CombinerAdmin(admin.ModelAdmin):
    """Combiners register themselves (/add_combiner); operators tune capacity or remove stale ones."""

    list_display = [
        "name",
        "endpoint",
        "secure_grpc",
        "online_clients",
        "max_clients",
        "last_report_at",
        "updated_at",
    ]
    list_filter = ["secure_grpc"]
    search_fields = ["name", "address", "fqdn", "ip"]
    date_hierarchy = "created_at"
    ordering = ["name"]
    # The private key stays out of the console entirely.
    exclude = ["key"]
    readonly_fields = [
        "name",
        "address",
        "fqdn",
        "port",
        "ip",
        "secure_grpc",
        "certificate",
        "created_at",
        "updated_at",
        "last_report_at",
        "online_clients",
    ]
    fieldsets = [
        (None, {"fields": ["name", "max_clients", "online_clients"]}),
        ("Network", {"fields": ["address", "port", "fqdn", "ip", "secure_grpc", "certificate"]}),
        ("Timestamps", {"fields": ["created_at", "updated_at", "last_report_at"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Combiner]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                online_count=Count("clients", filter=Q(clients__status=ClientStatus.ONLINE)),
                client_count=Count("clients"),
            )
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="endpoint", ordering="address")
    def endpoint(self, combiner: Combiner) -> str:
        return f"{combiner.address}:{combiner.port}"

    @admin.display(description="clients online / assigned", ordering="online_count")
    def online_clients(self, combiner: Any) -> SafeString:
        url = changelist_url(Client, combiner__id__exact=combiner.pk)
        return link(url, f"{combiner.online_count} / {combiner.client_count}")
