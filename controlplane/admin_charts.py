"""Charts drawn as SVG on the server (no JS library, nothing from another host): a metric per round
with its spread as a band, and a bar per round (durations).

Axes are scaled to the data with rounded ("nice") ticks: 0.92 to 0.97 fills the plot instead of
lying flat on a fixed 0-1 axis. Every point and bar carries `data-round` and `data-value`.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

CHART_COLOURS = ("#2f7ed8", "#e4572e", "#17a589", "#8e44ad", "#f39c12", "#7f8c8d")
# Multiples of a power of ten a tick step may take (2.5 would cost labels a decimal).
NICE_STEPS = (1.0, 2.0, 5.0, 10.0)
# Width of one character of the 11px chart font, for laying out labels without a browser.
CHAR_WIDTH = 6.2
# Values past this are drawn at it: a client's absurd metric must not overflow the axis arithmetic.
CLIP = 1e150
Band = tuple[float, float]


def _drawable(value: float | None) -> float | None:
    """The value as the chart draws it: NaN left out, infinities and absurd values clipped."""
    if value is None or math.isnan(value):
        return None
    return max(-CLIP, min(CLIP, value))


def _drawable_band(band: Band | None) -> Band | None:
    if band is None:
        return None
    low, high = _drawable(band[0]), _drawable(band[1])
    return None if low is None or high is None else (low, high)


@dataclass(frozen=True)
class Scale:
    """An axis from `low` to `high` with a tick every `step`; labels carry the step's decimals."""

    low: float
    high: float
    step: float

    @property
    def decimals(self) -> int:
        for decimals in range(12):
            if abs(round(self.step, decimals) - self.step) <= self.step * 1e-6:
                return decimals
        return 12

    @property
    def ticks(self) -> list[float]:
        count = round((self.high - self.low) / self.step)
        return [round(self.low + index * self.step, self.decimals + 2) for index in range(count + 1)]

    def label(self, value: float) -> str:
        return f"{value + 0.0:.{self.decimals}f}"  # + 0.0 turns -0.0 into 0.0


def nice_step(span: float, ticks: int) -> float:
    """The smallest step of 1, 2 or 5 times a power of ten cutting `span` into at most `ticks`."""
    raw = span / max(1, ticks)
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in NICE_STEPS if m * magnitude >= raw * (1 - 1e-9))


def nice_scale(
    low: float,
    high: float,
    *,
    ticks: int = 5,
    floor: float | None = None,
    ceiling: float | None = None,
    integer: bool = False,
) -> Scale:
    """An axis around [low, high] ending on ticks; `floor`/`ceiling` bound it when the data allow."""
    data_low, data_high = min(low, high), max(low, high)
    low, high = data_low, data_high
    if high == low:
        # One value: a small range around it, so it sits mid-plot with a readable tick or two.
        pad = abs(low) * 0.05 or 0.5
        low, high = low - pad, high + pad
    step = nice_step(high - low, ticks)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    # Rounding before floor/ceil keeps 0.3/0.1 from becoming 2.9999 steps.
    start = math.floor(round(low / step, 9)) * step
    end = math.ceil(round(high / step, 9)) * step
    # A bound holds only when every value is inside it (a share of 1.0 ends the axis at 1).
    if floor is not None and start < floor <= data_low:
        start = floor
    if ceiling is not None and end > ceiling >= data_high:
        end = ceiling
    scale = Scale(low=start, high=end, step=step)
    # Exact tick values: 0.92 rather than 0.9200000000000002 at the axis' ends.
    return Scale(low=round(start, scale.decimals + 2), high=round(end, scale.decimals + 2), step=step)


def _coord(value: float) -> str:
    return f"{value:.1f}"


@dataclass(frozen=True)
class _Frame:
    """Where the plot sits in the panel, and how rounds and values map onto it."""

    width: int
    left: int
    top: int
    plot_w: int
    plot_h: int
    first_round: int
    last_round: int
    y: Scale

    @property
    def base(self) -> int:
        return self.top + self.plot_h

    @property
    def slot(self) -> float:
        """Horizontal room of one round: each round is centred in its own slot."""
        return self.plot_w / (self.last_round - self.first_round + 1)

    def x_of(self, number: float) -> float:
        return self.left + (number - self.first_round + 0.5) * self.slot

    def y_of(self, value: float) -> float:
        return self.top + self.plot_h * (1 - (value - self.y.low) / (self.y.high - self.y.low))


def _frame(
    rounds: Sequence[int],
    width: int,
    plot_height: int,
    scale: Scale,
    top: int,
    round_range: tuple[int, int] | None,
) -> _Frame:
    # A shared range lines several charts of one session up round for round.
    first, last = round_range or (min(rounds), max(rounds))
    labels = [scale.label(tick) for tick in scale.ticks]
    # Room for the longest tick label and the rotated axis title.
    left = 26 + int(CHAR_WIDTH * max(len(label) for label in labels))
    return _Frame(
        width=width,
        left=left,
        top=top,
        plot_w=width - left - 14,
        plot_h=plot_height,
        first_round=min(first, *rounds),
        last_round=max(last, *rounds),
        y=scale,
    )


def _axes(frame: _Frame, y_label: str) -> SafeString:
    """Grid lines with y tick labels, round numbers under the x axis, both axis titles."""
    parts = [
        format_html(
            '<line x1="{x1}" x2="{x2}" y1="{y}" y2="{y}" class="fp-grid"/>'
            '<text x="{lx}" y="{ly}" class="fp-axis" text-anchor="end">{label}</text>',
            x1=frame.left,
            x2=frame.left + frame.plot_w,
            y=_coord(frame.y_of(tick)),
            lx=frame.left - 5,
            ly=_coord(frame.y_of(tick) + 4),
            label=frame.y.label(tick),
        )
        for tick in frame.y.ticks
    ]
    span = frame.last_round - frame.first_round + 1
    # A label for every round while they fit (a label needs ~28px), else integer nice ticks.
    if frame.slot >= 28:
        numbers = list(range(frame.first_round, frame.last_round + 1))
    else:
        step = int(nice_scale(0, span, ticks=max(2, frame.plot_w // 40), integer=True).step)
        numbers = [n for n in range(frame.first_round, frame.last_round + 1) if n % step == 0]
    for number in numbers:
        parts.append(
            format_html(
                '<line x1="{x}" x2="{x}" y1="{b}" y2="{t}" class="fp-axis-line"/>'
                '<text x="{x}" y="{ly}" class="fp-axis" text-anchor="middle">{n}</text>',
                x=_coord(frame.x_of(number)),
                b=frame.base,
                t=frame.base + 4,
                ly=frame.base + 15,
                n=number,
            )
        )
    parts.append(
        format_html(
            '<line x1="{l}" x2="{l}" y1="{t}" y2="{b}" class="fp-axis-line"/>'
            '<line x1="{l}" x2="{r}" y1="{b}" y2="{b}" class="fp-axis-line"/>'
            '<text x="{mid}" y="{xl}" class="fp-axis" text-anchor="middle">round</text>',
            l=frame.left,
            r=frame.left + frame.plot_w,
            t=frame.top,
            b=frame.base,
            mid=frame.left + frame.plot_w // 2,
            xl=frame.base + 29,
        )
    )
    if y_label:
        parts.append(
            format_html(
                '<text x="12" y="{y}" class="fp-axis" text-anchor="middle" '
                'transform="rotate(-90 12 {y})">{label}</text>',
                y=frame.top + frame.plot_h // 2,
                label=y_label,
            )
        )
    return mark_safe("".join(parts))  # each part was built by format_html


@dataclass(frozen=True)
class _LegendEntry:
    label: str
    colour: str
    kind: str  # "line", "band" or "bar"


def _legend(entries: Sequence[_LegendEntry], left: int, top: int, width: int) -> tuple[SafeString, int]:
    """Legend entries flowed left to right, wrapping at the plot's width; returns it and its rows."""
    parts: list[str] = []
    x, row = left, 0
    for entry in entries:
        entry_w = 22 + int(CHAR_WIDTH * len(entry.label)) + 14
        if x > left and x + entry_w > left + width:
            x, row = left, row + 1
        y = top + row * 16
        if entry.kind == "line":
            swatch = format_html(
                '<line x1="{}" x2="{}" y1="{y}" y2="{y}" stroke="{}" stroke-width="3"/>',
                x,
                x + 16,
                entry.colour,
                y=y - 4,
            )
        else:
            opacity = "0.18" if entry.kind == "band" else "1"
            swatch = format_html(
                '<rect x="{}" y="{}" width="16" height="10" fill="{}" fill-opacity="{}"/>',
                x,
                y - 9,
                entry.colour,
                opacity,
            )
        parts.append(
            format_html('{}<text x="{}" y="{}" class="fp-legend">{}</text>', swatch, x + 22, y, entry.label)
        )
        x += entry_w
    return mark_safe("".join(parts)), row + 1


def _panel(title: str, width: int, height: int, body: SafeString, kind: str, caption: str = "") -> SafeString:
    return format_html(
        '<svg class="fp-chart" data-chart="{kind}" role="img" width="{w}" height="{h}" '
        'viewBox="0 0 {w} {h}"><title>{t}{c}</title>'
        '<text x="10" y="17" class="fp-chart-title">{t}</text>{body}</svg>',
        kind=kind,
        w=width,
        h=height,
        t=title,
        c=f" ({caption})" if caption else "",
        body=body,
    )


def _empty(title: str, width: int, height: int, message: str, kind: str) -> SafeString:
    return _panel(
        title,
        width,
        height,
        format_html('<text x="10" y="{}" class="fp-chart-empty">{}</text>', height // 2, message),
        kind,
    )


def line_chart(
    title: str,
    rounds: list[int],
    series: Mapping[str, Sequence[float | None]],
    *,
    width: int = 420,
    plot_height: int = 140,
    unit_interval: bool = False,
    round_range: tuple[int, int] | None = None,
    bands: Mapping[str, Sequence[Band | None]] | None = None,
    band_label: str = "",
    y_label: str = "",
    notes: Mapping[str, Sequence[str]] | None = None,
) -> SafeString:
    """One SVG panel: a line with dots per series over the round numbers, each optionally with a
    shaded band (low, high) per round. The y axis fits the values and bands; `unit_interval`
    only keeps its ticks within 0-1 (a share never reads 1.2)."""
    series = {name: [_drawable(v) for v in line] for name, line in series.items()}
    bands = {name: [_drawable_band(b) for b in line] for name, line in (bands or {}).items()}
    values = [v for line in series.values() for v in line if v is not None]
    values += [edge for line in bands.values() for band in line if band is not None for edge in band]
    top = 26
    if not rounds or not values:
        return _empty(title, width, top + plot_height + 44, "no validations yet", "line")
    scale = nice_scale(
        min(values),
        max(values),
        floor=0.0 if unit_interval else None,
        ceiling=1.0 if unit_interval else None,
    )
    frame = _frame(rounds, width, plot_height, scale, top, round_range)
    parts: list[SafeString] = [_axes(frame, y_label)]
    legend: list[_LegendEntry] = []
    # Dots shrink as rounds crowd together, so the line and band stay visible between them.
    radius = _coord(max(1.5, min(3.5, frame.slot / 3)))
    for index, (name, line) in enumerate(series.items()):
        colour = CHART_COLOURS[index % len(CHART_COLOURS)]
        band = bands.get(name)
        if band:
            parts.append(_band(frame, rounds, band, colour))
        points = [(number, value) for number, value in zip(rounds, line, strict=True) if value is not None]
        parts.append(
            format_html(
                '<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>',
                " ".join(f"{_coord(frame.x_of(n))},{_coord(frame.y_of(v))}" for n, v in points),
                colour,
            )
        )
        line_notes = (notes or {}).get(name)
        for position, value in enumerate(line):
            if value is None:
                continue
            number = rounds[position]
            note = line_notes[position] if line_notes else ""
            parts.append(
                format_html(
                    '<circle class="fp-point" data-round="{n}" data-value="{v}" cx="{x}" cy="{y}" r="{r}" '
                    'fill="{c}"><title>round {n}: {name} {label}{note}</title></circle>',
                    n=number,
                    v=f"{value:.6g}",
                    x=_coord(frame.x_of(number)),
                    y=_coord(frame.y_of(value)),
                    r=radius,
                    c=colour,
                    name=name,
                    label=f"{value:.4g}",
                    note=f" ({note})" if note else "",
                )
            )
        legend.append(_LegendEntry(name, colour, "line"))
        if band:
            legend.append(_LegendEntry(band_label or f"{name} range", colour, "band"))
    legend_svg, rows = _legend(legend, frame.left, frame.base + 48, frame.plot_w)
    parts.append(legend_svg)
    height = frame.base + 40 + 16 * rows
    return _panel(title, width, height, mark_safe("".join(parts)), "line", band_label)


def _band(frame: _Frame, rounds: Sequence[int], band: Sequence[Band | None], colour: str) -> SafeString:
    """The shaded area between each round's low and high, joined across the rounds that have one."""
    edges = [(n, b) for n, b in zip(rounds, band, strict=True) if b is not None]
    upper = [f"{_coord(frame.x_of(n))},{_coord(frame.y_of(high))}" for n, (_, high) in edges]
    lower = [f"{_coord(frame.x_of(n))},{_coord(frame.y_of(low))}" for n, (low, _) in reversed(edges)]
    if len(edges) == 1:
        # One round: a short bar, since a polygon of two points has no area.
        (number, (low, high)) = edges[0]
        return format_html(
            '<rect class="fp-band" x="{}" y="{}" width="10" height="{}" fill="{}" fill-opacity="0.18"/>',
            _coord(frame.x_of(number) - 5),
            _coord(frame.y_of(high)),
            _coord(max(1.0, frame.y_of(low) - frame.y_of(high))),
            colour,
        )
    return format_html(
        '<polygon class="fp-band" points="{}" fill="{}" fill-opacity="0.18" stroke="none"/>',
        " ".join(upper + lower),
        colour,
    )


def bar_chart(
    title: str,
    rounds: list[int],
    values: Sequence[float],
    *,
    unit: str,
    width: int = 420,
    plot_height: int = 140,
    legend: str = "",
    empty: str = "nothing to show yet",
    round_range: tuple[int, int] | None = None,
    y_label: str = "",
    colour: str = CHART_COLOURS[2],
) -> SafeString:
    """One bar per round from zero to its value (durations, counts); the y axis starts at zero."""
    top = 26
    values = [_drawable(v) or 0.0 for v in values]
    if not rounds:
        return _empty(title, width, top + plot_height + 44, empty, "bar")
    scale = nice_scale(0.0, max(max(values), 0.0), floor=0.0)
    frame = _frame(rounds, width, plot_height, scale, top, round_range)
    bar_w = max(1.0, min(28.0, frame.slot * 0.7))
    bars = format_html_join(
        "",
        '<rect class="fp-bar" data-round="{}" data-value="{}" x="{}" y="{}" width="{}" height="{}" '
        'fill="{}"><title>round {}: {} {}</title></rect>',
        (
            (
                number,
                f"{value:.6g}",
                _coord(frame.x_of(number) - bar_w / 2),
                _coord(frame.y_of(value)),
                _coord(bar_w),
                _coord(frame.base - frame.y_of(value)),
                colour,
                number,
                f"{value:.4g}",
                unit,
            )
            for number, value in zip(rounds, values, strict=True)
        ),
    )
    legend_svg, rows = _legend(
        [_LegendEntry(legend or title, colour, "bar")], frame.left, frame.base + 48, frame.plot_w
    )
    height = frame.base + 40 + 16 * rows
    body = mark_safe(_axes(frame, y_label or unit) + bars + legend_svg)  # each part was built by format_html
    return _panel(title, width, height, body, "bar")
