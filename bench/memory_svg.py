"""The scale benchmark's memory curves: sampled RSS over time, as one standalone SVG file.

Each run gets a colour and two lines: the summed RSS of its whole process tree (solid) and
the RSS of its largest process (dashed); a memory cap, when a run had one, is a dashed grey
line. The axes, grid and frame are the report's (pipeline/report/svg.py).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from bench.tree_sampler import Sample, decimate
from pipeline.report import svg

GIB = 2**30
# Runs longer than this are drawn in minutes.
MINUTES_ABOVE_SECONDS = 1200.0
# Points drawn per line: about one per pixel of the plot's width (peaks kept, see decimate),
# which keeps a figure of hours of samples small.
DRAWN_POINTS = 600
_FONT = '<g font-family="sans-serif" font-size="11" fill="#222">'


@dataclass(frozen=True)
class Curve:
    """One run's sampled memory: its name in the legend and its samples."""

    name: str
    samples: Sequence[Sample]


def memory_chart(curves: Sequence[Curve], title: str, cap_bytes: int | None = None) -> str:
    """The SVG document of `curves` (time on x, GiB on y); empty if no curve has a sample."""
    drawn = [c for c in curves if c.samples]
    if not drawn:
        return ""
    end = max(s.seconds for c in drawn for s in c.samples)
    scale, unit = (60.0, "min") if end > MINUTES_ABOVE_SECONDS else (1.0, "s")
    top = max(s.total_bytes for c in drawn for s in c.samples) / GIB
    if cap_bytes is not None:
        top = max(top, cap_bytes / GIB)
    # Round ends on both axes, so that the ticks fall on round values.
    frame = svg._Frame((0.0, svg._nice_top(end / scale)), (0.0, svg._nice_top(top)))
    parts = [_FONT, *frame.axes(f"time since the run started ({unit})", "RSS (GiB)")]
    if cap_bytes is not None:
        y = frame.y(cap_bytes / GIB)
        parts.append(
            f'<line x1="{frame.x(frame.x0):.1f}" y1="{y:.1f}" x2="{frame.x(frame.x1):.1f}"'
            f' y2="{y:.1f}" stroke="#999" stroke-dasharray="6 3"/>'
            f'<text x="{frame.x(frame.x1) - 4:.1f}" y="{y - 4:.1f}" text-anchor="end">'
            f"memory cap {cap_bytes / GIB:g} GiB</text>"
        )
    # The legend sits top left, where the curves start low.
    legend_x, legend_y = frame.x(frame.x0) + 10, frame.y(frame.y1) + 14
    for i, curve in enumerate(drawn):
        colour = svg.COLORS[i % len(svg.COLORS)]
        for field, dash, what in (
            ("total_bytes", "", "process tree"),
            ("largest_process_bytes", ' stroke-dasharray="5 3"', "largest process"),
        ):
            points = " ".join(
                f"{frame.x(s.seconds / scale):.1f},{frame.y(getattr(s, field) / GIB):.1f}"
                for s in decimate(curve.samples, DRAWN_POINTS)
            )
            name = f"{curve.name}, {what}"
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.5"{dash}'
                f' points="{points}"><title>{html.escape(name)}</title></polyline>'
            )
            parts.append(
                f'<line x1="{legend_x:.1f}" y1="{legend_y - 4:.1f}" x2="{legend_x + 22:.1f}"'
                f' y2="{legend_y - 4:.1f}" stroke="{colour}" stroke-width="2"{dash}/>'
                f'<text x="{legend_x + 28:.1f}" y="{legend_y:.1f}">{html.escape(name)}</text>'
            )
            legend_y += 14
    parts.append("</g>")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + svg._svg(parts, title) + "\n"
