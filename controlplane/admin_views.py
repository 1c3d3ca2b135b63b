"""The operator console's shared pieces: badges and links, the session filter, the index
dashboard, and the per-round metrics chart of a session (SVG drawn here, no JS library).
"""

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib import admin
from django.contrib.admin import AdminSite
from django.db.models import Model as DjangoModel
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe

# ---------------------------------------------------------------- badges and links

# Tones are CSS classes defined in admin/base_site.html.
STATUS_TONES = {
    # sessions and rounds
    "Created": "muted",
    "Initialized": "info",
    "Started": "info",
    "Pending": "info",
    "Stopping": "warn",
    "Finished": "ok",
    "Success": "ok",
    "Stopped": "muted",
    "Failed": "bad",
    # clients
    "online": "ok",
    "available": "info",
    "offline": "muted",
    # log levels
    "INFO": "info",
    "DEBUG": "muted",
    "WARNING": "warn",
    "ERROR": "bad",
    "AUDIT": "muted",
    # controller
    "idle": "muted",
    "setup": "info",
    "instructing": "info",
    "monitoring": "ok",
}


def badge(text: str, tone: str | None = None) -> SafeString:
    tone = tone or STATUS_TONES.get(text, "muted")
    return format_html('<span class="fp-badge fp-{}">{}</span>', tone, text)


def change_url(obj: DjangoModel) -> str:
    meta = obj._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])


def changelist_url(model: type[DjangoModel], **filters: Any) -> str:
    meta = model._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def link(url: str, text: Any) -> SafeString:
    return format_html('<a href="{}">{}</a>', url, text)


def download_link(url: str, label: str = "download") -> SafeString:
    return format_html('<a class="fp-download" href="{}">&#x2B07; {}</a>', url, label)


def short_id(value: Any, length: int = 8) -> str:
    text = str(value or "")
    return text if len(text) <= length + 1 else f"{text[:length]}…"


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


class SessionIdFilter(admin.SimpleListFilter):
    """Filter by session id (a plain id on statuses, validations and models); recent sessions listed."""

    title = "session"
    parameter_name = "session_id"
    # The field holding the session id on the filtered model.
    field_path = "session_id"
    recent = 20

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        from apps.sessions.models import Session

        ids = list(
            Session.objects.order_by("-committed_at", "-id").values_list("session_id", flat=True)[
                : self.recent
            ]
        )
        # Django applies a filter only when it offers choices: keep the one asked for among them.
        current = self.value()
        if current and current not in ids:
            ids.insert(0, current)
        return [(session_id, session_id) for session_id in ids]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(**{self.field_path: value}) if value else queryset


class RoundSessionFilter(SessionIdFilter):
    field_path = "session__session_id"


# ---------------------------------------------------------------- metrics of a session


@dataclass
class SessionMetrics:
    """Validation metrics averaged over clients, one point per round that produced a model."""

    rounds: list[int] = field(default_factory=list)
    series: dict[str, list[float | None]] = field(default_factory=dict)
    validation_count: int = 0

    def per_round(self) -> dict[int, dict[str, float]]:
        table: dict[int, dict[str, float]] = {}
        for index, number in enumerate(self.rounds):
            table[number] = {
                key: values[index] for key, values in self.series.items() if values[index] is not None
            }
        return table


def numeric_metrics(data: str) -> dict[str, float]:
    """The numeric entries of a validation's JSON `data`; anything else is skipped, never raised."""
    try:
        parsed = json.loads(data) if data else {}
    except (TypeError, ValueError):
        return {}
    if not isinstance(parsed, dict):
        return {}
    metrics = {}
    for key, value in parsed.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            metrics[str(key)] = float(value)
    return metrics


def session_metrics(session: Any) -> SessionMetrics:
    from apps.sessions.models import Round, Validation

    produced = list(
        Round.objects.filter(session=session)
        .exclude(model_id__isnull=True)
        .exclude(model_id="")
        .order_by("number")
        .values_list("number", "model_id")
    )
    round_of_model = {model_id: number for number, model_id in produced}
    sums: dict[tuple[str, str], float] = defaultdict(float)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    result = SessionMetrics(rounds=[number for number, _ in produced])
    validations = Validation.objects.filter(model_id__in=list(round_of_model)).values_list("model_id", "data")
    for model_id, data in validations.iterator(chunk_size=2000):
        result.validation_count += 1
        for key, value in numeric_metrics(data).items():
            sums[(model_id, key)] += value
            counts[(model_id, key)] += 1
    keys = sorted({key for _, key in sums})
    for key in keys:
        result.series[key] = [
            sums[(model_id, key)] / counts[(model_id, key)] if counts[(model_id, key)] else None
            for _, model_id in produced
        ]
    return result


# ---------------------------------------------------------------- SVG chart

CHART_COLOURS = ("#2f7ed8", "#e4572e", "#17a589", "#8e44ad", "#f39c12", "#7f8c8d")


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    return [low + (high - low) * step / count for step in range(count + 1)]


def _coord(value: float) -> str:
    return f"{value:.1f}"


def _tick_label(value: float) -> str:
    return f"{value:.3g}"


def line_chart(
    title: str,
    rounds: list[int],
    series: dict[str, list[float | None]],
    *,
    width: int = 420,
    plot_height: int = 140,
    unit_interval: bool = False,
) -> SafeString:
    """One SVG panel: a polyline (with dots) per series over the round numbers."""
    # Two legend entries per row under the axis label; the panel grows with the legend.
    legend_rows = max(1, math.ceil(len(series) / 2))
    left, right, top, bottom = 46, 14, 26, 44 + 15 * legend_rows
    plot_w, plot_h = width - left - right, plot_height
    height = top + plot_h + bottom
    values = [v for line in series.values() for v in line if v is not None]
    if not rounds or not values:
        return format_html(
            '<svg class="fp-chart" role="img" width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
            '<title>{t}</title><text x="{x}" y="18" class="fp-chart-title">{t}</text>'
            '<text x="{x}" y="{y}" class="fp-chart-empty">no validations yet</text></svg>',
            w=width,
            h=height,
            t=title,
            x=left,
            y=height // 2,
        )
    if unit_interval and min(values) >= 0 and max(values) <= 1:
        low, high = 0.0, 1.0
    else:
        low, high = min(0.0, min(values)), max(values)
        if high == low:
            high = low + 1.0

    def x_of(index: int) -> float:
        if len(rounds) == 1:
            return left + plot_w / 2
        return left + plot_w * index / (len(rounds) - 1)

    def y_of(value: float) -> float:
        return top + plot_h * (1 - (value - low) / (high - low))

    parts: list[str] = []
    for tick in _ticks(low, high):
        y = y_of(tick)
        parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{y}" y2="{y}" class="fp-grid"/>'
                '<text x="{}" y="{}" class="fp-axis" text-anchor="end">{}</text>',
                left,
                left + plot_w,
                left - 5,
                _coord(y + 4),
                _tick_label(tick),
                y=_coord(y),
            )
        )
    # At most ~10 round labels on the x axis.
    stride = max(1, math.ceil(len(rounds) / 10))
    for index, number in enumerate(rounds):
        if index % stride == 0 or index == len(rounds) - 1:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" class="fp-axis" text-anchor="middle">{}</text>',
                    _coord(x_of(index)),
                    top + plot_h + 15,
                    number,
                )
            )
    for colour_index, (name, line) in enumerate(series.items()):
        colour = CHART_COLOURS[colour_index % len(CHART_COLOURS)]
        points = [(x_of(i), y_of(v)) for i, v in enumerate(line) if v is not None]
        path = " ".join(f"{_coord(x)},{_coord(y)}" for x, y in points)
        parts.append(
            format_html('<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>', path, colour)
        )
        for (x, y), value in zip(points, [v for v in line if v is not None], strict=True):
            parts.append(
                format_html(
                    '<circle cx="{}" cy="{}" r="3" fill="{}"><title>{}: {}</title></circle>',
                    _coord(x),
                    _coord(y),
                    colour,
                    name,
                    f"{value:.4g}",
                )
            )
        legend_x = left + (colour_index % 2) * (plot_w // 2)
        legend_y = top + plot_h + 48 + (colour_index // 2) * 15
        parts.append(
            format_html(
                '<rect x="{}" y="{}" width="10" height="10" fill="{}"/>'
                '<text x="{}" y="{}" class="fp-legend">{}</text>',
                legend_x,
                legend_y - 9,
                colour,
                legend_x + 14,
                legend_y,
                name,
            )
        )
    body = mark_safe("".join(parts))  # every part above was built with format_html
    return format_html(
        '<svg class="fp-chart" role="img" width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
        "<title>{t} per round</title>"
        '<text x="{x}" y="16" class="fp-chart-title">{t}</text>'
        '<line x1="{x}" x2="{x}" y1="{top}" y2="{base}" class="fp-axis-line"/>'
        '<line x1="{x}" x2="{right}" y1="{base}" y2="{base}" class="fp-axis-line"/>'
        '<text x="{mid}" y="{xl}" class="fp-axis" text-anchor="middle">round</text>'
        "{body}</svg>",
        w=width,
        h=height,
        t=title,
        x=left,
        top=top,
        base=top + plot_h,
        right=left + plot_w,
        mid=left + plot_w // 2,
        xl=top + plot_h + 29,
        body=body,
    )


def metric_charts(metrics: SessionMetrics) -> list[SafeString]:
    """An accuracy panel and a loss panel from whatever metric names the package reports."""

    def pick(match: Callable[[str], bool]) -> dict[str, list[float | None]]:
        return {key: values for key, values in metrics.series.items() if match(key.lower())}

    accuracy = pick(lambda key: "acc" in key)
    loss = pick(lambda key: "loss" in key)
    return [
        line_chart("Accuracy", metrics.rounds, accuracy, unit_interval=True),
        line_chart("Loss", metrics.rounds, loss),
    ]


# ---------------------------------------------------------------- the index dashboard


def dashboard_context() -> dict[str, Any]:
    from apps.clients.services import clients_count_online
    from apps.combiners.models import Combiner
    from apps.models.services import model_get_active
    from apps.packages.services import package_get_active
    from apps.sessions.models import Session
    from apps.sessions.choices import ACTIVE_SESSION_STATUSES
    from apps.sessions.services import controller_state

    state = controller_state()
    running = Session.objects.filter(status__in=ACTIVE_SESSION_STATUSES).order_by("-committed_at").first()
    latest = running or Session.objects.order_by("-committed_at", "-id").first()
    combiners = Combiner.objects.count()
    serving = Combiner.objects.filter(clients__status="online").distinct().count()
    return {
        "fp_state": state,
        "fp_package": package_get_active(),
        "fp_model": model_get_active(),
        "fp_clients_online": clients_count_online(),
        "fp_combiners": combiners,
        "fp_combiners_serving": serving,
        "fp_running_session": running,
        "fp_latest_session": latest,
        "fp_latest_session_badge": badge(latest.status) if latest else "",
        "fp_latest_session_progress": progress_bar(latest.rounds_completed, latest.rounds) if latest else "",
    }


def install_dashboard(site: AdminSite) -> None:
    """Give the admin index its dashboard context (the index template draws the panel)."""
    if getattr(site, "_fedplane_dashboard", False):
        return
    plain_index = site.index

    def index(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        return plain_index(request, extra_context={**dashboard_context(), **(extra_context or {})})

    # AdminSite.get_urls() reads self.index when the URLconf loads, after every admin.py ran.
    site.index = index  # type: ignore[method-assign]
    site._fedplane_dashboard = True  # type: ignore[attr-defined]
    site.site_header = "fedplane control plane"
    site.site_title = "fedplane"
    site.index_title = "Operator console"


def join_links(items: Iterable[tuple[str, str]]) -> SafeString:
    return format_html_join(" · ", '<a href="{}">{}</a>', items)
