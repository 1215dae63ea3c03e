"""Server-side SVG charts of statements and the portal: bytes by region and day, horizontal bar charts of
payees, sources and anchoring lag. Floats appear only in chart geometry; every label is made from the
exact integer amounts."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from edgeledger.deliveries.regions import REGION_CODES
from edgeledger.settlement.payouts import LineItem
from edgeledger.settlement.statements import TOP_PAYEES, format_amount

#: One colour per pricing region (REGION_CODES order: every region has its own), distinguishable in print;
#: further series (names that are not regions) take the colours again with a pattern over them.
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


_GB = 10**9


#: Fonts set on the SVG itself so a chart saved on its own renders like in the page.
_SVG_FONT = 'font-family="Helvetica, Arial, sans-serif" font-size="11"'


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _f(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _gb_exact(nbytes: int) -> str:
    """Bytes in GB (10^9), exact, trailing zeros dropped: 1,500,000,000 -> "1.5"."""
    text = format_amount(nbytes, 9)
    return text.rstrip("0").rstrip(".") if "." in text else text


def _gb_rounded(nbytes: int, digits: int = 3) -> str:
    """Bytes in GB rounded half up to ``digits`` decimals, by integer arithmetic."""
    unit = 10 ** (9 - digits)
    return format_amount((nbytes + unit // 2) // unit, digits)


def _gb_label(nbytes: int) -> str:
    """A bar's value: 3 decimals from 1 GB, 6 from 1 MB, exact below (never "0.000" for some bytes)."""
    if nbytes >= _GB:
        return _gb_rounded(nbytes, 3)
    if nbytes >= 10**6:
        return _gb_rounded(nbytes, 6)
    return _gb_exact(nbytes)


def _thousands(value: int) -> str:
    return f"{value:,}"


def _nice_step(maximum: int, ticks: int = 5) -> int:
    """An integer step of 1, 2 or 5 times a power of ten with at most ``ticks`` steps up to ``maximum``."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if factor * step * ticks >= maximum:
                return factor * step
        step *= 10


#: Patterns over the palette's colours for the series after the first ``len(_PALETTE)``: white stripes one
#: way, the other way, and dots; so :data:`MAX_DISTINCT_SERIES` series each look different.
_PATTERNS = (
    '<path d="M0 6 L6 0" stroke="#fff" stroke-width="1.5"/>',
    '<path d="M0 0 L6 6" stroke="#fff" stroke-width="1.5"/>',
    '<circle cx="3" cy="3" r="1.3" fill="#fff"/>',
)
MAX_DISTINCT_SERIES = len(_PALETTE) * (1 + len(_PATTERNS))
#: Legend geometry: swatch, gap, a generous width per character of the 11 px font, space between items.
_SWATCH, _GAP, _CHAR_W, _ITEM_SPACE, _LEGEND_ROW = 10.0, 4.0, 7.5, 16.0, 16.0


def _series_fills(series: Sequence[str], chart_key: str) -> tuple[dict[str, str], list[str]]:
    """A fill per series, no two alike up to :data:`MAX_DISTINCT_SERIES`: regions keep their own colour
    (the same in every chart), other series take the next free slot; slots past the palette are a colour
    with a pattern (``<pattern>`` definitions returned for the chart's ``<defs>``, ids unique to
    ``chart_key``)."""
    used = {REGION_CODES.index(name) for name in series if name in REGION_CODES}
    free = (slot for slot in itertools.count() if slot not in used)
    fills: dict[str, str] = {}
    defs: list[str] = []
    prefix = "p" + hashlib.sha256(chart_key.encode()).hexdigest()[:8]
    for name in series:
        slot = REGION_CODES.index(name) if name in REGION_CODES else next(free)
        colour = _PALETTE[slot % len(_PALETTE)]
        layer = (slot // len(_PALETTE)) % (1 + len(_PATTERNS))
        if layer == 0:
            fills[name] = colour
            continue
        pattern_id = f"{prefix}-{slot}"
        defs.append(
            f'<pattern id="{pattern_id}" patternUnits="userSpaceOnUse" width="6" height="6">'
            f'<rect width="6" height="6" fill="{colour}"/>{_PATTERNS[layer - 1]}</pattern>'
        )
        fills[name] = f"url(#{pattern_id})"
    return fills, defs


def _legend_rows(labels: Sequence[str], start_x: float, max_x: float) -> list[list[tuple[str, float]]]:
    """Legend items flowed into rows that fit between ``start_x`` and ``max_x`` (never clipped)."""
    rows: list[list[tuple[str, float]]] = [[]]
    x = start_x
    for label in labels:
        item_w = _SWATCH + _GAP + _CHAR_W * len(label)
        if rows[-1] and x + item_w > max_x:
            rows.append([])
            x = start_x
        rows[-1].append((label, x))
        x += item_w + _ITEM_SPACE
    return rows


@dataclass(frozen=True)
class BytesChartText:
    """The words of :func:`bytes_chart_svg` (English by default; the web app passes its language's).
    ``day_axis_year`` takes ``{year}``; ``bar`` takes ``{region}``, ``{day}``, ``{gb}``, ``{bytes}`` and
    ``{requests}`` (numbers already formatted)."""

    no_data: str = "No deliveries"
    gb_axis: str = "GB delivered (10^9 bytes)"
    day_axis: str = "day (UTC)"
    day_axis_year: str = "day (UTC, {year})"
    bar: str = "{region} {day}: {gb} GB ({bytes} bytes, {requests} requests)"


def bytes_chart_svg(
    usage: Mapping[tuple[str, str], tuple[int, int]], title: str, text: BytesChartText = BytesChartText()
) -> str:
    """Grouped bars: one group per UTC day, one bar per region delivered that day, height in GB."""
    days = sorted({day for _, day in usage})
    # Many days: "MM-DD" labels (the year goes in the axis title), every k-th day so they do not overlap.
    years = sorted({day[:4] for day in days})
    short = len(days) > 7 and len(years) == 1
    regions = sorted(
        {region for region, _ in usage}, key=lambda r: (r not in REGION_CODES, _region_key(r), r)
    )
    fills, defs = _series_fills(regions, title + "|" + "|".join(regions))
    width, plot_h = 760.0, 210.0
    left, right, top = 70.0, 20.0, 40.0
    plot_w = width - left - right
    # Under the plot: day labels, the axis title, then the legend in as many rows as it needs.
    legend = _legend_rows(regions, left, width - right)
    legend_top = top + plot_h + 48
    height = legend_top + _LEGEND_ROW * len(legend) + 8 if usage else 320.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-bytes" role="img" {_SVG_FONT} '
        f'viewBox="0 0 {_f(width)} {_f(height)}" width="100%" aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
    ]
    if defs:
        parts.append("<defs>" + "".join(defs) + "</defs>")
    if not usage:
        parts.append(
            f'<text x="{_f(width / 2)}" y="{_f(height / 2)}" text-anchor="middle">{_e(text.no_data)}</text>'
        )
        parts.append("</svg>")
        return "".join(parts)
    peak = max(nbytes for nbytes, _ in usage.values())
    step = _nice_step(max(peak, 1))
    scale_max = step * max(1, -(-peak // step))
    # Grid and ticks in GB (exact labels), then the axes over them.
    for tick in range(0, scale_max + 1, step):
        y = top + plot_h - plot_h * tick / scale_max
        parts.append(
            f'<line class="grid" x1="{_f(left)}" y1="{_f(y)}" x2="{_f(left + plot_w)}" y2="{_f(y)}" '
            f'stroke="#ddd"/><text class="tick" x="{_f(left - 6)}" y="{_f(y + 4)}" '
            f'text-anchor="end">{_gb_exact(tick)}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{_f(left)}" y1="{_f(top)}" x2="{_f(left)}" y2="{_f(top + plot_h)}" '
        f'stroke="#333"/><line class="axis" x1="{_f(left)}" y1="{_f(top + plot_h)}" '
        f'x2="{_f(left + plot_w)}" y2="{_f(top + plot_h)}" stroke="#333"/>'
    )
    day_axis = text.day_axis_year.format(year=years[0]) if short else text.day_axis
    parts.append(
        f'<text class="axis-label" transform="translate(16 {_f(top + plot_h / 2)}) rotate(-90)" '
        f'text-anchor="middle">{_e(text.gb_axis)}</text>'
        f'<text class="axis-label" x="{_f(left + plot_w / 2)}" y="{_f(top + plot_h + 34)}" '
        f'text-anchor="middle">{_e(day_axis)}</text>'
    )
    group_w = plot_w / len(days)
    bar_w = group_w * 0.8 / len(regions)
    every = max(1, math.ceil((40 if short else 80) / group_w))
    for d, day in enumerate(days):
        group_x = left + d * group_w + group_w * 0.1
        if d % every == 0:
            parts.append(
                f'<text class="tick" x="{_f(left + d * group_w + group_w / 2)}" y="{_f(top + plot_h + 16)}" '
                f'text-anchor="middle">{_e(day[5:] if short else day)}</text>'
            )
        for r, region in enumerate(regions):
            if (region, day) not in usage:
                continue
            nbytes, requests = usage[region, day]
            bar_h = plot_h * nbytes / scale_max
            x, y = group_x + r * bar_w, top + plot_h - bar_h
            label = text.bar.format(
                region=region,
                day=day,
                gb=_gb_label(nbytes),
                bytes=_thousands(nbytes),
                requests=_thousands(requests),
            )
            parts.append(
                f'<rect class="bar" data-region="{_e(region)}" data-day="{_e(day)}" data-bytes="{nbytes}" '
                f'x="{_f(x)}" y="{_f(y)}" width="{_f(max(bar_w - 1, 0.5))}" height="{_f(bar_h)}" '
                f'fill="{fills[region]}"><title>{_e(label)}</title></rect>'
            )
            if bar_w >= 34:
                parts.append(
                    f'<text class="value" x="{_f(x + bar_w / 2)}" y="{_f(y - 3)}" '
                    f'text-anchor="middle">{_gb_label(nbytes)}</text>'
                )
    # Legend, one swatch per series, under the axis title, wrapped into rows.
    for row, items in enumerate(legend):
        y = legend_top + row * _LEGEND_ROW
        for region, x in items:
            parts.append(
                f'<g class="legend" data-series="{_e(region)}"><rect x="{_f(x)}" y="{_f(y)}" '
                f'width="{_f(_SWATCH)}" height="{_f(_SWATCH)}" fill="{fills[region]}"/>'
                f'<text x="{_f(x + _SWATCH + _GAP)}" y="{_f(y + 9)}">{_e(region)}</text></g>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _region_key(region: str) -> int:
    return REGION_CODES.index(region) if region in REGION_CODES else len(REGION_CODES)


@dataclass(frozen=True)
class _Bar:
    key: str
    label: str
    amount: int


def duration(seconds: int) -> str:
    """A whole number of seconds for people: ``42 s``, ``12 min 5 s``, ``3 h 4 min``, ``2,554 d 11 h``."""
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days:,} d {hours} h"
    elif hours:
        text = f"{hours} h {minutes} min"
    elif minutes:
        text = f"{minutes} min {secs} s"
    else:
        text = f"{secs} s"
    return sign + text


def _hbar_chart_svg(
    bars: Sequence[_Bar],
    title: str,
    decimals: int,
    symbol: str,
    attr: str,
    fmt: Callable[[int], str] | None = None,
) -> str:
    """Horizontal bars, one per entry, labelled left and valued right (exact decimal amounts, or
    ``fmt`` of the value)."""
    label_w, bar_area, value_w = 330.0, 300.0, 130.0
    row_h, top = 22.0, 30.0
    width = label_w + bar_area + value_w
    height = top + row_h * max(len(bars), 1) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-payees" role="img" {_SVG_FONT} '
        f'viewBox="0 0 {_f(width)} {_f(height)}" width="100%" aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
        f'<text class="axis-label" x="{_f(label_w)}" y="16">{_e(symbol)}</text>',
    ]
    if not bars:
        parts.append(f'<text x="{_f(width / 2)}" y="{_f(top + 14)}" text-anchor="middle">No payouts</text>')
    peak = max((b.amount for b in bars), default=0)
    for i, bar in enumerate(bars):
        y = top + i * row_h
        bar_len = bar_area * bar.amount / peak if peak > 0 else 0.0
        value = fmt(bar.amount) if fmt is not None else f"{format_amount(bar.amount, decimals)} {symbol}"
        parts.append(
            f'<text class="label" x="{_f(label_w - 8)}" y="{_f(y + 14)}" font-family="monospace" '
            f'text-anchor="end">{_e(bar.label)}</text>'
            f'<rect class="bar" data-{attr}="{_e(bar.key)}" data-amount="{bar.amount}" x="{_f(label_w)}" '
            f'y="{_f(y + 3)}" width="{_f(max(bar_len, 0.5))}" height="{_f(row_h - 6)}" fill="#1f77b4">'
            f"<title>{_e(bar.label)}: {_e(value)}</title></rect>"
            f'<text class="value" x="{_f(label_w + bar_len + 6)}" y="{_f(y + 14)}">{_e(value)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def seconds_chart_svg(values: Mapping[str, int], title: str) -> str:
    """Durations in whole seconds, one bar per labelled entry, in the given order (anchoring lag)."""
    bars = [_Bar(label, label, seconds) for label, seconds in values.items()]
    return _hbar_chart_svg(bars, title, 0, "", "item", duration)


def payees_chart_svg(payees: Mapping[str, int], title: str, decimals: int, symbol: str) -> str:
    """Payouts by payee, largest first: the top :data:`TOP_PAYEES` and one "others" bar for the rest."""
    ranked = sorted(payees.items(), key=lambda kv: (-kv[1], kv[0]))
    bars = [_Bar(address, address, amount) for address, amount in ranked[:TOP_PAYEES]]
    rest = ranked[TOP_PAYEES:]
    if rest:
        bars.append(_Bar("others", f"others ({len(rest)} payees)", sum(a for _, a in rest)))
    return _hbar_chart_svg(bars, title, decimals, symbol, "payee")


def _sources_chart_svg(lines: Sequence[LineItem], title: str, decimals: int, symbol: str) -> str:
    """A payee's payouts by (kind, source)."""
    sums: dict[tuple[str, str], int] = {}
    for item in lines:
        sums[item.kind, item.source] = sums.get((item.kind, item.source), 0) + item.amount
    ranked = sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))
    bars = [_Bar(f"{kind}:{source}", f"{kind} {source}", amount) for (kind, source), amount in ranked]
    return _hbar_chart_svg(bars, title, decimals, symbol, "source")
