from django.contrib import admin
from django.http import HttpRequest
from django.utils.safestring import SafeString

from apps.clients.models import Client
from controlplane.admin_views import badge, change_url, link


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
        return badge(client.status)

    @admin.display(description="combiner", ordering="combiner__name")
    def combiner_link(self, client: Client) -> SafeString | str:
        if client.combiner is None:
            return "-"
        return link(change_url(client.combiner), client.combiner.name)
