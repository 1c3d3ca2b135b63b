"""The SVG charts the session page and the dashboard draw: axes fitted to the data with rounded
ticks, a point per round, bands, bars, and escaping."""

import re

import pytest

from controlplane.admin_charts import bar_chart, line_chart, nice_scale


@pytest.mark.parametrize(
    ("low", "high", "labels"),
    [
        (0.92, 0.97, ["0.92", "0.93", "0.94", "0.95", "0.96", "0.97"]),
        (0.31, 2.3, ["0.0", "0.5", "1.0", "1.5", "2.0", "2.5"]),
        (1.2, 3654.3, ["0", "1000", "2000", "3000", "4000"]),
        (-0.17, 0.28, ["-0.2", "-0.1", "0.0", "0.1", "0.2", "0.3"]),
        (0.95012, 0.95019, ["0.95012", "0.95014", "0.95016", "0.95018", "0.95020"]),
    ],
)
def test_scale_fits_the_data_with_rounded_ticks(low: float, high: float, labels: list[str]) -> None:
    scale = nice_scale(low, high)
    assert [scale.label(tick) for tick in scale.ticks] == labels
    assert scale.low <= low and scale.high >= high
    assert 3 <= len(scale.ticks) <= 7


def test_scale_of_one_value_surrounds_it_and_respects_bounds() -> None:
    single = nice_scale(0.95, 0.95)
    assert single.low < 0.95 < single.high
    share = nice_scale(1.0, 1.0, floor=0.0, ceiling=1.0)
    assert share.high == 1.0 and share.low < 1.0  # never a 1.02 tick for a share
    assert nice_scale(0.0, 0.0, floor=0.0).low == 0.0  # zero seconds: the axis starts at zero
    assert nice_scale(1, 3, integer=True).step == 1.0


def test_line_chart_has_a_point_per_round_and_a_band() -> None:
    svg = str(
        line_chart(
            "test_accuracy",
            [3, 4, 6],
            {"mean": [0.93, None, 0.96]},
            bands={"mean": [(0.92, 0.94), None, (0.95, 0.97)]},
            band_label="min-max over clients",
            y_label="test_accuracy",
        )
    )
    assert re.findall(r'class="fp-point" data-round="(\d+)" data-value="([^"]+)"', svg) == [
        ("3", "0.93"),
        ("6", "0.96"),
    ]
    assert svg.count('class="fp-band"') == 1 and "min-max over clients" in svg
    # Round numbers, not positions: 5 sits between 4 and 6 on the x axis.
    xs = {
        n: float(x)
        for x, n in re.findall(
            r'<text x="([\d.]+)" y="[\d.]+" class="fp-axis" text-anchor="middle">(\d+)<', svg
        )
    }
    assert list(xs) == ["3", "4", "5", "6"] and xs["5"] - xs["4"] == pytest.approx(xs["6"] - xs["5"])
    assert 'transform="rotate(-90' in svg  # the y axis is titled


def test_line_chart_keeps_its_dashboard_call_and_escapes_names() -> None:
    svg = str(
        line_chart("Accuracy", [1, 2], {"<b>acc</b>": [0.1, 0.2], "val": [0.15, None]}, unit_interval=True)
    )
    assert "<b>" not in svg and "&lt;b&gt;acc&lt;/b&gt;" in svg
    assert svg.count('class="fp-point"') == 3
    assert "no validations yet" in str(line_chart("Loss", [1], {}))


def test_bars_start_at_zero_and_carry_their_values() -> None:
    svg = str(bar_chart("Round duration", [1, 2], [2.5, 40.0], unit="s"))
    assert re.findall(r'class="fp-bar" data-round="(\d+)" data-value="([^"]+)"', svg) == [
        ("1", "2.5"),
        ("2", "40"),
    ]
    heights = [float(h) for h in re.findall(r'class="fp-bar"[^>]* height="([\d.]+)"', svg)]
    assert heights[1] == pytest.approx(16 * heights[0], rel=0.02)
    assert "nothing yet" in str(bar_chart("Round duration", [], [], unit="s", empty="nothing yet"))


def test_absurd_values_are_drawn_at_the_edge_without_breaking_the_axes() -> None:
    svg = str(
        line_chart(
            "overflowing",
            [1, 2, 3],
            {"mean": [1e308, float("inf"), float("nan")]},
            bands={"mean": [(-1e308, 1e308), None, None]},
        )
    )
    assert svg.count('class="fp-point"') == 2 and "nan" not in svg.lower() and "inf<" not in svg
    bars = str(bar_chart("Round duration", [1, 2], [1e300, 2.0], unit="s"))
    assert bars.count('class="fp-bar"') == 2
