"""Small static SVG charts with labelled axes: lines, bars and a scatter."""

from __future__ import annotations

import html
import math

_WIDTH, _HEIGHT = 720, 280
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 16, 80
COLORS = ("#1f4e9c", "#e8710a", "#1a7f37", "#8e24aa")


def _nice_top(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    step = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * step:
            return m * step
    return 10 * step


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.2g}"


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

    def axes(self, x_label: str, y_label: str, x_ticks: bool = True) -> list[str]:
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
        if x_ticks:
            for i in range(6):
                v = self.x0 + (self.x1 - self.x0) * i / 5
                parts.append(
                    f'<text x="{self.x(v):.1f}" y="{bottom + 16}" text-anchor="middle">'
                    f"{_fmt(v)}</text>"
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


def line_chart(
    series: dict[str, list[tuple[float, float]]], x_label: str, y_label: str, title: str
) -> str:
    """Lines of (x, y) points, one per series, on shared axes."""
    points = [p for s in series.values() for p in s]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    frame = _Frame((min(xs), max(xs)), (0.0, _nice_top(max(ys))))
    parts = frame.axes(x_label, y_label)
    for i, (name, data) in enumerate(series.items()):
        path = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in data)
        parts.append(
            f'<polyline fill="none" stroke="{COLORS[i % len(COLORS)]}" stroke-width="2"'
            f' points="{path}"><title>{html.escape(name)}</title></polyline>'
        )
        for x, y in data:
            parts.append(
                f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="2.5"'
                f' fill="{COLORS[i % len(COLORS)]}"><title>{html.escape(name)}: step {_fmt(x)},'
                f" {y:.4g}</title></circle>"
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
        if len(bars) <= 12:
            label = category if len(category) <= 12 else category[:11] + "…"
            parts.append(
                f'<text x="{x_mid:.1f}" y="{bottom + 14}" text-anchor="middle">'
                f"{html.escape(label)}</text>"
            )
        else:  # many bars: slanted labels, so that neighbours do not overlap
            label = category if len(category) <= 10 else category[:9] + "…"
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
