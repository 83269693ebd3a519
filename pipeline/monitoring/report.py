"""The verdict as JSON and as one self-contained HTML page (inline CSS and SVG, no scripts)."""

from __future__ import annotations

import html
import json
import os
from typing import Any

from pipeline.monitoring.compare import HISTOGRAM_BINS, TOP_VALUES, side_names

VERDICT_FILE = "verdict.json"
REPORT_FILE = "report.html"

_COLORS = ("#1f77b4", "#ff7f0e")  # reference, current
_WIDTH, _HEIGHT, _PAD = 560, 200, 32

_CSS = """
body{font-family:sans-serif;margin:24px;color:#222}
h1{font-size:22px}.ok{color:#1a7f37}.bad{color:#c62828}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}
.feature{border:1px solid #ccc;border-radius:6px;padding:8px 12px;margin:12px 0}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}
svg text{font-size:10px;fill:#444}
"""


def write_outputs(verdict: dict[str, Any], out_dir: str) -> tuple[str, str]:
    """Writes `verdict.json` and `report.html` under `out_dir`; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, VERDICT_FILE)
    with open(json_path, "w") as fh:
        json.dump(verdict, fh, indent=2, sort_keys=False)
        fh.write("\n")
    html_path = os.path.join(out_dir, REPORT_FILE)
    with open(html_path, "w", encoding="utf-8") as fh:
        fh.write(render_html(verdict))
    return json_path, html_path


def _bars(values: list[tuple[str, float, float]]) -> str:
    """Overlaid bars: one pair (reference, current) per label."""
    if not values:
        return "<p>No values to draw.</p>"
    top = max(max(r, c) for _, r, c in values) or 1.0
    slot = (_WIDTH - 2 * _PAD) / len(values)
    parts = []
    for i, (label, ref, cur) in enumerate(values):
        x = _PAD + i * slot
        for j, value in enumerate((ref, cur)):
            h = (_HEIGHT - 2 * _PAD) * value / top
            # The current side is drawn narrower on top, so both stay visible.
            inset = slot * (0.1 if j == 0 else 0.3)
            parts.append(
                f'<rect x="{x + inset:.1f}" y="{_HEIGHT - _PAD - h:.1f}" '
                f'width="{max(slot - 2 * inset, 1):.1f}" height="{h:.1f}" '
                f'fill="{_COLORS[j]}" fill-opacity="0.7"><title>{html.escape(label)}: '
                f"{value:.1%}</title></rect>"
            )
        short = label if len(label) <= 10 else label[:9] + "…"
        parts.append(
            f'<text x="{x + slot / 2:.1f}" y="{_HEIGHT - _PAD + 12}" text-anchor="end" '
            f'transform="rotate(-30 {x + slot / 2:.1f} {_HEIGHT - _PAD + 12})">'
            f"{html.escape(short)}</text>"
        )
    return _svg(parts, f"{top:.0%}")


def _svg(parts: list[str], top_label: str) -> str:
    axis = (
        f'<line x1="{_PAD}" y1="{_HEIGHT - _PAD}" x2="{_WIDTH - _PAD}" y2="{_HEIGHT - _PAD}" '
        f'stroke="#888"/><text x="2" y="{_PAD}">{top_label}</text>'
    )
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
        f'height="{_HEIGHT + 20}" viewBox="0 0 {_WIDTH} {_HEIGHT + 20}">'
        + axis
        + "".join(parts)
        + "</svg>"
    )


def _rebin(buckets: list[list[float]], low: float, high: float) -> list[float]:
    """Mass of a histogram on HISTOGRAM_BINS equal bins of [low, high] (uniform in buckets)."""
    width = (high - low) / HISTOGRAM_BINS or 1.0
    bins = [0.0] * HISTOGRAM_BINS
    for b_low, b_high, mass in buckets:
        if b_high <= b_low:
            index = min(int((b_low - low) / width), HISTOGRAM_BINS - 1)
            bins[max(index, 0)] += mass
            continue
        for i in range(HISTOGRAM_BINS):
            lo, hi = low + i * width, low + (i + 1) * width
            overlap = min(hi, b_high) - max(lo, b_low)
            if overlap > 0:
                bins[i] += mass * overlap / (b_high - b_low)
    return bins


def _histogram(ref: dict[str, Any], cur: dict[str, Any]) -> str:
    sides = [d.get("buckets", []) for d in (ref, cur)]
    edges = [b[0] for s in sides for b in s] + [b[1] for s in sides for b in s]
    if not edges:
        return "<p>No values to draw.</p>"
    low, high = min(edges), max(edges)
    if high <= low:
        high = low + 1.0
    binned = [_rebin(s, low, high) for s in sides]
    top = max(max(b) for b in binned) or 1.0
    slot = (_WIDTH - 2 * _PAD) / HISTOGRAM_BINS
    parts = []
    for j, bins in enumerate(binned):
        for i, mass in enumerate(bins):
            h = (_HEIGHT - 2 * _PAD) * mass / top
            parts.append(
                f'<rect x="{_PAD + i * slot:.1f}" y="{_HEIGHT - _PAD - h:.1f}" '
                f'width="{slot - 1:.1f}" height="{h:.1f}" fill="{_COLORS[j]}" '
                f'fill-opacity="0.5"/>'
            )
    parts.append(f'<text x="{_PAD}" y="{_HEIGHT - _PAD + 14}">{low:.6g}</text>')
    parts.append(
        f'<text x="{_WIDTH - _PAD}" y="{_HEIGHT - _PAD + 14}" text-anchor="end">{high:.6g}</text>'
    )
    return _svg(parts, f"{top:.0%}")


def _chart(feature: dict[str, Any], names: tuple[str, str]) -> str:
    ref, cur = (feature["distributions"][n] for n in names)
    if "categorical" in (ref["kind"], cur["kind"]):
        ref_values, cur_values = ref.get("values", {}), cur.get("values", {})
        labels = sorted(
            set(ref_values) | set(cur_values),
            key=lambda k: -max(ref_values.get(k, 0.0), cur_values.get(k, 0.0)),
        )
        shown = labels[:TOP_VALUES]
        rows = [(k, ref_values.get(k, 0.0), cur_values.get(k, 0.0)) for k in shown]
        if len(labels) > TOP_VALUES:
            rest = labels[TOP_VALUES:]
            rows.append(
                (
                    "(other)",
                    sum(ref_values.get(k, 0.0) for k in rest),
                    sum(cur_values.get(k, 0.0) for k in rest),
                )
            )
        return _bars(rows)
    return _histogram(ref, cur)


def render_html(verdict: dict[str, Any]) -> str:
    """The report page: summary first, then one section per feature."""
    kind = verdict["check"]
    names = side_names(kind)
    esc = html.escape
    failed = verdict["failed_features"]
    status_class = "bad" if verdict["found"] else "ok"
    status = f"{kind.capitalize()} found" if verdict["found"] else f"No {kind} found"
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Taxi fare {esc(kind)} report</title><style>{_CSS}</style></head><body>",
        f"<h1>Taxi fare {esc(kind)} report: <span class='{status_class}'>{esc(status)}</span></h1>",
        "<table>",
    ]
    for name in names:
        side = verdict["sides"][name]
        out.append(
            f"<tr><th>{esc(name.capitalize())}</th><td>{esc(side['source'])}</td>"
            f"<td>{side['examples']} examples</td></tr>"
        )
    out.append(f"<tr><th>Thresholds</th><td colspan='2'>{esc(verdict['thresholds_source'])}</td>")
    out.append("</tr></table>")
    out.append(
        f"<p><b>{verdict['features_checked']}</b> features checked, <b>{len(failed)}</b> "
        f"failed{': ' + esc(', '.join(failed)) if failed else ''}.</p>"
    )
    for note in verdict.get("notes", []):
        out.append(f"<p>Note: {esc(note)}</p>")
    for anomaly in verdict["dataset_anomalies"]:
        out.append(f"<p class='bad'>Dataset: {esc(anomaly['description'])}</p>")
    out.append(
        "<p class='legend'>"
        f"<span style='background:{_COLORS[0]}'></span>{esc(names[0])}"
        f"<span style='background:{_COLORS[1]}'></span>{esc(names[1])}</p>"
    )
    for feature in sorted(verdict["features"], key=lambda x: (not x["flagged"], x["name"])):
        cls = "bad" if feature["flagged"] else "ok"
        word = "FLAGGED" if feature["flagged"] else "ok"
        distance = feature["distance"]
        shown = "n/a" if distance is None else f"{distance:.4f}"
        presence = feature["presence"]
        out.append(f"<div class='feature' id='feature-{esc(feature['name'])}'>")
        out.append(
            f"<h2>{esc(feature['name'])} <span class='{cls}'>{word}</span></h2>"
            f"<p>{esc(feature['type'])}; {esc(feature['comparator'])} = <b>{shown}</b> "
            f"(threshold {feature['threshold']:g}); present in "
            f"{presence[names[0]]:.1%} / {presence[names[1]]:.1%} "
            f"(threshold {presence['threshold']:g})</p>"
        )
        out.append(_chart(feature, names))
        if feature["reasons"]:
            out.append("<ul>")
            out += [f"<li>{esc(r)}</li>" for r in feature["reasons"]]
            out.append("</ul>")
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)
