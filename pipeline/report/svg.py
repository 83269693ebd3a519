"""Small static SVG charts with labelled axes: lines, bars and a scatter."""

from __future__ import annotations

import html
import math
from collections.abc import Callable

_WIDTH, _HEIGHT = 720, 280
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 16, 80
COLORS = ("#1f4e9c", "#e8710a", "#1a7f37", "#8e24aa")
# About how wide one character of an 11px label is.
_CHAR_WIDTH = 6.5


def _nice_top(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    step = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        # A share summed to 100.00000000001% still tops out at 100.
        if value <= m * step * (1 + 1e-9):
            return m * step
    return 10 * step


def _fmt(value: float) -> str:
    # A tick's label is its value (12.5 stays 12.5); identifiers in full, never 1.7e+10.
    if value == int(value):
        return f"{value:,.0f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


class _Frame:
    """The plot area and its two linear axes."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float]):
        self.x0, self.x1 = x_range
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1
        self.y0, self.y1 = y_range
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1

    def x(self, value: float) -> float:
        return _LEFT + (_WIDTH - _LEFT - _RIGHT) * (value - self.x0) / (self.x1 - self.x0)

    def y(self, value: float) -> float:
        return _TOP + (_HEIGHT - _TOP - _BOTTOM) * (1 - (value - self.y0) / (self.y1 - self.y0))

    def axes(
        self,
        x_label: str,
        y_label: str,
        x_ticks: bool = True,
        x_marks: list[tuple[float, str]] | None = None,
    ) -> list[str]:
        """Grid lines, tick labels and axis titles; `x_marks` places the x ticks: (x, label)."""
        bottom = _HEIGHT - _BOTTOM
        parts = []
        for i in range(5):
            v = self.y0 + (self.y1 - self.y0) * i / 4
            y = self.y(v)
            parts.append(
                f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_WIDTH - _RIGHT}" y2="{y:.1f}"'
                f' stroke="#e4e4e4"/><text x="{_LEFT - 6}" y="{y + 4:.1f}"'
                f' text-anchor="end">{_fmt(v)}</text>'
            )
        if x_marks is None and x_ticks:
            x_marks = [
                (v, _fmt(v)) for v in (self.x0 + (self.x1 - self.x0) * i / 5 for i in range(6))
            ]
        for v, text in x_marks or []:
            parts.append(
                f'<line x1="{self.x(v):.1f}" y1="{bottom}" x2="{self.x(v):.1f}"'
                f' y2="{bottom + 4}" stroke="#666"/>'
                f'<text x="{self.x(v):.1f}" y="{bottom + 16}" text-anchor="middle">'
                f"{html.escape(text)}</text>"
            )
        middle = _TOP + (bottom - _TOP) / 2
        parts.append(
            f'<line x1="{_LEFT}" y1="{bottom}" x2="{_WIDTH - _RIGHT}" y2="{bottom}" stroke="#666"/>'
            f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" stroke="#666"/>'
            f'<text x="16" y="{middle:.1f}" text-anchor="middle"'
            f' transform="rotate(-90 16 {middle:.1f})">{html.escape(y_label)}</text>'
            f'<text x="{(_LEFT + _WIDTH - _RIGHT) / 2:.1f}" y="{_HEIGHT - 8}"'
            f' text-anchor="middle">{html.escape(x_label)}</text>'
        )
        return parts


def _svg(parts: list[str], label: str) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{html.escape(label)}"'
        f' xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}"'
        f' viewBox="0 0 {_WIDTH} {_HEIGHT}">' + "".join(parts) + "</svg>"
    )


def legend(names: list[str]) -> str:
    """A one-line legend (HTML) for the series names, in chart colour order."""
    return (
        '<p class="legend">'
        + "".join(
            f'<span><svg width="14" height="10"><rect width="14" height="10" fill="{COLORS[i]}"/>'
            f"</svg>{html.escape(n)}</span>"
            for i, n in enumerate(names)
        )
        + "</p>"
    )


def _integer_marks(low: float, high: float) -> list[tuple[float, str]]:
    """Ticks at whole numbers from low to high, about ten at most, the first one included."""
    first, last = math.ceil(low), math.floor(high)
    step = max(1, int(_nice_top((last - first) / 10)))
    marks = list(range(math.ceil(first / step) * step, last + 1, step))
    if not marks or marks[0] - first >= step / 2:
        marks.insert(0, first)
    return [(float(v), f"{v:,}") for v in marks]


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    x_label: str,
    y_label: str,
    title: str,
    integer_x: bool = False,
    marker: tuple[float, str] | None = None,
) -> str:
    """Lines of (x, y) points, one per series, on shared axes.

    Args:
      series: name -> (x, y) points.
      x_label: the x axis title; the points' tooltips name x by it too.
      y_label: the y axis title.
      title: the chart's accessible name.
      integer_x: x counts something (epochs): ticks only at whole numbers.
      marker: (x, label) of a dashed vertical line, e.g. the epoch whose weights were kept.
    """
    points = [p for s in series.values() for p in s]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    frame = _Frame((min(xs), max(xs)), (0.0, _nice_top(max(ys))))
    marks = _integer_marks(frame.x0, frame.x1) if integer_x else None
    parts = frame.axes(x_label, y_label, x_marks=marks)
    if marker is not None and frame.x0 <= marker[0] <= frame.x1:
        x = frame.x(marker[0])
        # The label reads away from the right edge when the line is in the right half.
        right = x > (_LEFT + _WIDTH - _RIGHT) / 2
        parts.append(
            f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{_HEIGHT - _BOTTOM}" stroke="#999"'
            f' stroke-dasharray="4 3"/><text x="{x - 4 if right else x + 4:.1f}" y="{_TOP + 10}"'
            f' text-anchor="{"end" if right else "start"}">{html.escape(marker[1])}</text>'
        )
    for i, (name, data) in enumerate(series.items()):
        path = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in data)
        parts.append(
            f'<polyline fill="none" stroke="{COLORS[i % len(COLORS)]}" stroke-width="2"'
            f' points="{path}"><title>{html.escape(name)}</title></polyline>'
        )
        for x, y in data:
            parts.append(
                f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="2.5"'
                f' fill="{COLORS[i % len(COLORS)]}"><title>{html.escape(name)}:'
                f" {html.escape(x_label)} {_fmt(x)}, {y:.4g}</title></circle>"
            )
    return _svg(parts, title)


def bar_chart(
    bars: list[tuple[str, list[float], str]],
    x_label: str,
    y_label: str,
    title: str,
) -> str:
    """Grouped vertical bars: (category, one value per series, tooltip) per category."""
    if not bars:
        return ""
    top = _nice_top(max((v for _, values, _ in bars for v in values), default=1.0))
    frame = _Frame((0.0, float(len(bars))), (0.0, top))
    parts = frame.axes(x_label, y_label, x_ticks=False)
    slot = (_WIDTH - _LEFT - _RIGHT) / len(bars)
    bottom = _HEIGHT - _BOTTOM
    # Labels that would not fit side by side (many bars, long names such as census tracts)
    # are slanted, so that neighbours do not overlap.
    widest = max(min(len(category), 12) for category, _, _ in bars) * _CHAR_WIDTH
    slanted = len(bars) > 12 or widest > slot
    for i, (category, values, tip) in enumerate(bars):
        width = slot * 0.8 / max(len(values), 1)
        for j, value in enumerate(values):
            x = _LEFT + i * slot + slot * 0.1 + j * width
            y = frame.y(value)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width, 1):.1f}"'
                f' height="{bottom - y:.1f}" fill="{COLORS[j % len(COLORS)]}" fill-opacity="0.75">'
                f"<title>{html.escape(tip)}</title></rect>"
            )
        x_mid = _LEFT + (i + 0.5) * slot
        if not slanted:
            label = category if len(category) <= 12 else category[:11] + "…"
            parts.append(
                f'<text x="{x_mid:.1f}" y="{bottom + 14}" text-anchor="middle">'
                f"{html.escape(label)}</text>"
            )
        else:
            label = category if len(category) <= 14 else category[:13] + "…"
            parts.append(
                f'<text x="{x_mid:.1f}" y="{bottom + 10}" text-anchor="end"'
                f' transform="rotate(-40 {x_mid:.1f} {bottom + 10})">{html.escape(label)}'
                "</text>"
            )
    return _svg(parts, title)


def scatter(points: list[tuple[float, float]], x_label: str, y_label: str, title: str) -> str:
    """A scatter of (x, y) points with the y = x diagonal, on equal axes."""
    if not points:
        return ""
    top = _nice_top(max(max(x, y) for x, y in points))
    frame = _Frame((0.0, top), (0.0, top))
    parts = frame.axes(x_label, y_label)
    parts.append(
        f'<line x1="{frame.x(0):.1f}" y1="{frame.y(0):.1f}" x2="{frame.x(top):.1f}"'
        f' y2="{frame.y(top):.1f}" stroke="#999" stroke-dasharray="4 3"/>'
    )
    for x, y in points:
        parts.append(
            f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="2.2" fill="{COLORS[0]}"'
            f' fill-opacity="0.45"/>'
        )
    return _svg(parts, title)


def log_axis(value: float, log_offset: float | None) -> float:
    """Where `value` lies on an axis: itself, or log10(1 + value / log_offset) on a log one."""
    return value if log_offset is None else math.log10(1 + value / log_offset)


def _value_marks(
    low: float,
    high: float,
    log_offset: float | None,
    frame: _Frame,
    value_format: Callable[[float], str] = _fmt,
) -> list[tuple[float, str]]:
    """Round values to tick a numeric axis at, as (axis position, label)."""
    if log_offset is None:
        step = _nice_top((high - low) / 6)
        start = math.ceil(low / step - 1e-9) * step
        count = int(math.floor((high - start) / step + 1e-9))
        values = [round(start + i * step, 12) for i in range(count + 1)]
        return [(v, value_format(v)) for v in values]
    # Decades first, then 2x and 5x where they fit: labels at least 40 px apart.
    top = math.ceil(math.log10(high)) if high > 0 else 0
    bottom = math.floor(math.log10(log_offset))
    decades = [10.0**k for k in range(bottom, top + 1)]
    between = [m * d for d in decades for m in (2.0, 5.0)]
    chosen: list[float] = [low] if low <= 0 else []
    for value in [*decades, *between]:
        if not low <= value <= high:
            continue
        px = frame.x(log_axis(value, log_offset))
        if all(abs(px - frame.x(log_axis(v, log_offset))) >= 40 for v in chosen):
            chosen.append(value)
    return [(log_axis(v, log_offset), value_format(_round(v))) for v in sorted(chosen)]


def _round(value: float) -> float:
    return float(f"{value:.12g}")


def histogram(
    edges: list[float],
    series: dict[str, list[float]],
    x_label: str,
    y_label: str,
    title: str,
    tips: list[str] | None = None,
    log_offset: float | None = None,
    value_format: Callable[[float], str] | None = None,
    marks: list[float] | None = None,
) -> str:
    """Bars between bin edges on a numeric axis, one bar per series in each bin, side by side.

    Args:
      edges: the bins' edges, ascending (one more than each series' values).
      series: name -> one value per bin (the bar's height).
      x_label: the x axis title (" (log scale)" is added on a log axis).
      y_label: the y axis title.
      title: the chart's accessible name.
      tips: a tooltip per bin.
      log_offset: draw x as log10(1 + x / log_offset) (long tails); None: a linear axis.
      value_format: how an x tick reads (e.g. a date for a timestamp); default: the number.
      marks: the values to tick x at; default: round values of the axis.
    """
    values = [v for vs in series.values() for v in vs]
    if len(edges) < 2 or not values:
        return ""
    axis = [log_axis(e, log_offset) for e in edges]
    frame = _Frame((axis[0], axis[-1]), (0.0, _nice_top(max(values))))
    if log_offset is not None:
        x_label += " (log scale)"
    text = value_format or _fmt
    ticks = (
        _value_marks(edges[0], edges[-1], log_offset, frame, text)
        if marks is None
        else [(log_axis(v, log_offset), text(v)) for v in marks]
    )
    parts = frame.axes(x_label, y_label, x_marks=ticks)
    bottom = _HEIGHT - _BOTTOM
    for i in range(len(edges) - 1):
        left, right = frame.x(axis[i]), frame.x(axis[i + 1])
        width = (right - left) * 0.9 / len(series)
        for j, name in enumerate(series):
            y = frame.y(series[name][i])
            tip = tips[i] if tips else f"{name}: {series[name][i]:.4g}"
            parts.append(
                f'<rect x="{left + (right - left) * 0.05 + j * width:.2f}" y="{y:.2f}"'
                f' width="{max(width, 0.5):.2f}" height="{bottom - y:.2f}"'
                f' fill="{COLORS[j % len(COLORS)]}" fill-opacity="0.75">'
                f"<title>{html.escape(tip)}</title></rect>"
            )
    return _svg(parts, title)
