"""Display helpers the apps' ModelAdmins share: badges, links, progress bars, a recent-id filter
and a read-only ModelAdmin.

They import no app: each app's admin says which of its choices gets which tone.
"""

import json
from collections.abc import Iterable, Mapping
from typing import Any

from django.contrib import admin
from django.db.models import Model as DjangoModel
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString

# Tones are CSS classes defined in the console's admin/base_site.html.
OK, INFO, WARN, BAD, MUTED = "ok", "info", "warn", "bad", "muted"


def badge(text: str, tone: str = MUTED) -> SafeString:
    return format_html('<span class="fp-badge fp-{}">{}</span>', tone, text)


def choice_badge(value: str, tones: Mapping[str, str]) -> SafeString:
    """A choices value in the tone its app gave it; a value without one is muted."""
    return badge(value, tones.get(value, MUTED))


def change_url(obj: DjangoModel) -> str:
    meta = obj._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])


def changelist_url(model: type[DjangoModel], **filters: Any) -> str:
    meta = model._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def link(url: str, text: Any) -> SafeString:
    return format_html('<a href="{}">{}</a>', url, text)


def join_links(items: Iterable[tuple[str, str]]) -> SafeString:
    return format_html_join(" · ", '<a href="{}">{}</a>', items)


def download_link(url: str, label: str = "download") -> SafeString:
    return format_html('<a class="fp-download" href="{}">&#x2B07; {}</a>', url, label)


def short_id(value: Any, length: int = 8) -> str:
    text = str(value or "")
    return text if len(text) <= length + 1 else f"{text[:length]}…"


def pretty_json(value: Any) -> SafeString:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))


def progress_bar(done: int, total: int) -> SafeString:
    percent = 0 if total <= 0 else max(0, min(100, round(100 * done / total)))
    return format_html(
        '<span class="fp-progress" title="{} of {}"><span style="width:{}%"></span></span> {}/{}',
        done,
        total,
        percent,
        done,
        total,
    )


class RecentIdFilter(admin.SimpleListFilter):
    """Filter on a plain id field, offering the most recent ids; a subclass says which ids are recent."""

    # The field holding the id on the filtered model.
    field_path: str
    recent = 20

    def recent_ids(self) -> list[str]:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        ids = self.recent_ids()[: self.recent]
        # Django applies a filter only when it offers choices: keep the one asked for among them.
        current = self.value()
        if current and current not in ids:
            ids.insert(0, current)
        return [(value, value) for value in ids]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(**{self.field_path: value}) if value else queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the system: viewable, never added, changed or deleted from the console."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
