from django.contrib import admin
from django.http import HttpRequest

from apps.combiners.models import Combiner


@admin.register(Combiner)
class CombinerAdmin(admin.ModelAdmin):
    """Combiners register themselves (/add_combiner); operators tune capacity or remove stale ones.

    The clients app shows each combiner's client load on this page (apps/clients/admin.py).
    """

    list_display = [
        "name",
        "endpoint",
        "secure_grpc",
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
    ]
    fieldsets = [
        (None, {"fields": ["name", "max_clients"]}),
        ("Network", {"fields": ["address", "port", "fqdn", "ip", "secure_grpc", "certificate"]}),
        ("Timestamps", {"fields": ["created_at", "updated_at", "last_report_at"]}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="endpoint", ordering="address")
    def endpoint(self, combiner: Combiner) -> str:
        return f"{combiner.address}:{combiner.port}"
