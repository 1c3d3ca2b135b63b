"""Line charts drawn as SVG on the server (no JS library): a session's metrics per round."""

import math
from collections.abc import Callable

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

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


def metric_charts(rounds: list[int], series: dict[str, list[float | None]]) -> list[SafeString]:
    """An accuracy panel and a loss panel from whatever metric names the package reports."""

    def pick(match: Callable[[str], bool]) -> dict[str, list[float | None]]:
        return {key: values for key, values in series.items() if match(key.lower())}

    accuracy = pick(lambda key: "acc" in key)
    loss = pick(lambda key: "loss" in key)
    return [
        line_chart("Accuracy", rounds, accuracy, unit_interval=True),
        line_chart("Loss", rounds, loss),
    ]
