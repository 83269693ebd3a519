"""The verdict as JSON and as one self-contained HTML page (inline CSS and SVG, no scripts).

Both files are written through `tf.io.gfile`, so `--out` (and a pipeline artifact) may be on
any filesystem TensorFlow knows, `gs://` included.
"""

from __future__ import annotations

import html
import json
import textwrap
from typing import Any

from pipeline.monitoring.compare import TOO_FEW, TOP_VALUES, side_names
from pipeline.monitoring.thresholds import KOLMOGOROV_SMIRNOV, L_INFINITY
from taxifare_modules import features as f

VERDICT_FILE = "verdict.json"
REPORT_FILE = "report.html"
# Where the default thresholds are documented (the report names their real source).
DEFAULTS_SOURCE = "the built-in defaults (pipeline/monitoring/thresholds.py)"

_COLORS = ("#1f4e9c", "#e8710a")  # reference (outlined), current (filled)
_WIDTH, _HEIGHT = 760, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 14, 74

_UNITS = f.FEATURE_UNITS
_COMPARATOR_WORDS = {
    L_INFINITY: "largest change in one value's share (L-infinity)",
    KOLMOGOROV_SMIRNOV: "largest gap between the distribution functions (Kolmogorov-Smirnov)",
}

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:820px;padding:0 12px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin:4px 0}.ok{color:#1a7f37}.bad{color:#c62828}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}
.feature{border:1px solid #ccc;border-radius:6px;padding:8px 12px;margin:14px 0}
.feature.flagged{border-color:#c62828}
.legend svg{vertical-align:middle;margin:0 4px 0 14px}
svg.chart{max-width:100%;height:auto}svg text{font-size:11px;fill:#333}
.small{color:#555;font-size:13px}
"""


def _gfile() -> Any:
    import tensorflow as tf

    return tf.io.gfile


def write_outputs(verdict: dict[str, Any], out_dir: str) -> tuple[str, str]:
    """Writes `verdict.json` and `report.html` under `out_dir`; returns their paths."""
    gfile = _gfile()
    gfile.makedirs(out_dir)
    base = out_dir.rstrip("/")
    json_path = f"{base}/{VERDICT_FILE}"
    with gfile.GFile(json_path, "w") as fh:
        fh.write(json.dumps(verdict, indent=2) + "\n")
    html_path = f"{base}/{REPORT_FILE}"
    with gfile.GFile(html_path, "w") as fh:
        fh.write(render_html(verdict))
    return json_path, html_path


def _plot_height() -> float:
    return _HEIGHT - _TOP - _BOTTOM


def _y(share: float, top: float) -> float:
    return _TOP + _plot_height() * (1 - share / top)


def _frame(top: float, x_label: str) -> list[str]:
    """The axes: y ticks in percent of examples with a value, and the x axis label."""
    parts = []
    bottom = _TOP + _plot_height()
    for i in range(5):
        share = top * i / 4
        y = _y(share, top)
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_WIDTH - _RIGHT}" y2="{y:.1f}" '
            f'stroke="#e4e4e4"/><text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{share:.{0 if top >= 0.2 else 1}%}</text>"
        )
    parts.append(
        f'<line x1="{_LEFT}" y1="{bottom}" x2="{_WIDTH - _RIGHT}" y2="{bottom}" stroke="#666"/>'
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" stroke="#666"/>'
        f'<text x="14" y="{_TOP + _plot_height() / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_TOP + _plot_height() / 2:.1f})">share of examples with a '
        f"value</text>"
        f'<text x="{(_LEFT + _WIDTH - _RIGHT) / 2:.1f}" y="{_HEIGHT - 6}" '
        f'text-anchor="middle">{html.escape(x_label)}</text>'
    )
    return parts


def _bar(x: float, width: float, share: float, top: float, side: int, title: str) -> str:
    y = _y(share, top)
    height = _TOP + _plot_height() - y
    if side == 0:  # the reference: an outline, so the current side shows through
        style = f'fill="{_COLORS[0]}" fill-opacity="0.12" stroke="{_COLORS[0]}" stroke-width="1.5"'
    else:
        style = f'fill="{_COLORS[1]}" fill-opacity="0.55"'
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width, 1):.1f}" height="{height:.1f}" '
        f"{style}><title>{html.escape(title)}</title></rect>"
    )


def _svg(parts: list[str], label: str) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{html.escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}">' + "".join(parts) + "</svg>"
    )


def _wrapped(label: str, x: float) -> str:
    """A category label on up to two lines under its bar (the full label in a tooltip)."""
    lines = textwrap.wrap(label, 14) or [""]
    if len(lines) > 2:
        lines = [lines[0], lines[1][:12] + "…"]
    bottom = _TOP + _plot_height()
    spans = "".join(
        f'<tspan x="{x:.1f}" dy="{12 if i else 14}">{html.escape(line)}</tspan>'
        for i, line in enumerate(lines)
    )
    return (
        f'<text x="{x:.1f}" y="{bottom}" text-anchor="middle"><title>{html.escape(label)}</title>'
        f"{spans}</text>"
    )


def _categorical_chart(name: str, ref: dict[str, float], cur: dict[str, float], names) -> str:
    labels = sorted(set(ref) | set(cur), key=lambda k: -max(ref.get(k, 0.0), cur.get(k, 0.0)))
    if not labels:
        return "<p>No values to draw.</p>"
    shown = labels[:TOP_VALUES]
    if all(label.lstrip("-").isdigit() for label in labels) and len(labels) <= 31:
        labels = shown = sorted(labels, key=int)  # hours, days, months: all, in order
    rows = [(k, ref.get(k, 0.0), cur.get(k, 0.0)) for k in shown]
    if len(labels) > TOP_VALUES:
        rest = labels[TOP_VALUES:]
        rows.append(
            (
                f"{len(rest)} other values",
                sum(ref.get(k, 0.0) for k in rest),
                sum(cur.get(k, 0.0) for k in rest),
            )
        )
    top = max(max(r, c) for _, r, c in rows) or 1.0
    top = min(1.0, top * 1.1)
    slot = (_WIDTH - _LEFT - _RIGHT) / len(rows)
    parts = _frame(top, _UNITS.get(name, name))
    for i, (label, r, c) in enumerate(rows):
        x = _LEFT + i * slot
        parts.append(_bar(x + slot * 0.1, slot * 0.8, r, top, 0, f"{label}: {names[0]} {r:.1%}"))
        parts.append(_bar(x + slot * 0.25, slot * 0.5, c, top, 1, f"{label}: {names[1]} {c:.1%}"))
        if len(rows) <= 14:
            parts.append(_wrapped(label, x + slot / 2))
        else:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{_TOP + _plot_height() + 14}" '
                f'text-anchor="middle"><title>{html.escape(label)}</title>'
                f"{html.escape(label[:4])}</text>"
            )
    return _svg(parts, f"{name}: share of each value")


def _numeric_chart(name: str, dist: dict[str, Any], names) -> str:
    edges = dist.get("edges") or []
    ref, cur = dist.get(names[0]) or [], dist.get(names[1]) or []
    if len(edges) < 2 or not (ref or cur):
        return "<p>No values to draw.</p>"
    top = min(1.0, max(ref + cur) * 1.1) or 1.0
    slot = (_WIDTH - _LEFT - _RIGHT) / (len(edges) - 1)
    parts = _frame(top, _UNITS.get(name, name))
    for i in range(len(edges) - 1):
        x = _LEFT + i * slot
        span = f"{edges[i]:.6g} to {edges[i + 1]:.6g}"
        if i < len(ref):
            parts.append(_bar(x + 1, slot - 2, ref[i], top, 0, f"{span}: {names[0]} {ref[i]:.1%}"))
        if i < len(cur):
            parts.append(
                _bar(x + slot * 0.2, slot * 0.6, cur[i], top, 1, f"{span}: {names[1]} {cur[i]:.1%}")
            )
    bottom = _TOP + _plot_height()
    for i in range(0, len(edges), max(1, (len(edges) - 1) // 6)):
        x = _LEFT + i * slot
        parts.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#666"/>'
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{edges[i]:.6g}</text>'
        )
    return _svg(parts, f"{name}: histogram on common bins")


def _chart(feature: dict[str, Any], names: tuple[str, str]) -> str:
    dist = feature["distributions"]
    if dist["kind"] == "categorical":
        return _categorical_chart(feature["name"], dist[names[0]], dist[names[1]], names)
    return _numeric_chart(feature["name"], dist, names)


def _legend(names: tuple[str, str]) -> str:
    swatches = []
    for i, name in enumerate(names):
        style = (
            f'fill="{_COLORS[0]}" fill-opacity="0.12" stroke="{_COLORS[0]}" stroke-width="1.5"'
            if i == 0
            else f'fill="{_COLORS[1]}" fill-opacity="0.55"'
        )
        swatches.append(
            f'<svg width="16" height="12" aria-hidden="true"><rect x="1" y="1" width="14" '
            f'height="10" {style}/></svg>{html.escape(name)}'
            + (" (outlined)" if i == 0 else " (filled)")
        )
    return "<p class='legend'>" + "".join(swatches) + "</p>"


def _threshold_source(source: str) -> str:
    return DEFAULTS_SOURCE if source == "defaults" else source


def render_html(verdict: dict[str, Any]) -> str:
    """The report page: summary first, then one section per feature, flagged ones first."""
    kind = verdict["check"]
    names = side_names(kind)
    esc = html.escape
    failed = verdict["failed_features"]
    status_class = "bad" if verdict["found"] else "ok"
    if verdict["found"]:
        status = f"{kind.capitalize()} found"
    elif verdict["verdict"] == TOO_FEW:
        status = "Too few examples to judge"
    else:
        status = f"No {kind} found"
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Taxi fare {esc(kind)} report</title><style>{_CSS}</style></head><body>",
        f"<h1>Taxi fare {esc(kind)} report: <span class='{status_class}'>{esc(status)}</span></h1>",
        "<table>",
    ]
    for name in names:
        side = verdict["sides"][name]
        out.append(
            f"<tr><th>{esc(name.capitalize())}</th><td>{esc(side['source'])}</td>"
            f"<td>{side['examples']:,} examples</td></tr>"
        )
    for name, source in verdict.get("derived", {}).items():
        out.append(
            f"<tr><th>{esc(name.capitalize())} (model)</th><td colspan='2'>{esc(source)}</td></tr>"
        )
    out.append(
        f"<tr><th>Thresholds</th><td colspan='2'>"
        f"{esc(_threshold_source(verdict['thresholds_source']))}; significance "
        f"{verdict.get('significance', 0):g} for all tests together "
        f"({verdict.get('alpha_per_test', 0):.1e} per test); at least "
        f"{verdict.get('min_examples', 0):,} examples (and values) on each side to judge</td></tr>"
    )
    not_compared = verdict.get("not_compared", {})
    if not_compared:
        why = (next(iter(not_compared.values())) or "").removeprefix("not compared: ")
        out.append(
            f"<tr><th>Not compared</th><td colspan='2'>{esc(', '.join(not_compared))} "
            f"({esc(why or 'by the config')}; presence and the schema are still checked)"
            "</td></tr>"
        )
    out.append("</table>")
    out.append(
        f"<p><b>{verdict['features_checked']}</b> features checked, <b>{len(failed)}</b> "
        f"flagged{': ' + esc(', '.join(failed)) if failed else ''}.</p>"
    )
    out.append(
        "<p class='small'>A feature is flagged when its difference is both above its "
        "threshold and too large to be chance at these sample sizes; or when its share of "
        "examples with a value changed the same way; or when the schema check finds an "
        "anomaly. Missing values (absent, empty, or the NaN / -1 / empty-string sentinels) are "
        "left out of the distributions and counted in the presence figures.</p>"
    )
    for note in verdict.get("notes", []):
        out.append(f"<p>Note: {esc(note)}</p>")
    for anomaly in verdict["dataset_anomalies"]:
        out.append(f"<p class='bad'>Dataset: {esc(anomaly['description'])}</p>")
    out.append(_legend(names))
    for feature in sorted(verdict["features"], key=lambda x: not x["flagged"]):
        out += _feature_section(feature, names)
    out.append("</body></html>")
    return "\n".join(out)


def _feature_section(feature: dict[str, Any], names: tuple[str, str]) -> list[str]:
    esc = html.escape
    flagged = feature["flagged"]
    cls = "bad" if flagged else "ok"
    distance = feature["distance"]
    shown = "n/a" if distance is None else f"{distance:.4f}"
    p_value = feature.get("p_value")
    p_text = "" if p_value is None else f", p = {p_value:.1e}"
    presence = feature["presence"]
    out = [
        f"<div class='feature{' flagged' if flagged else ''}' id='feature-{esc(feature['name'])}'>",
        f"<h2>{esc(feature['name'])} <span class='{cls}'>{'FLAGGED' if flagged else 'ok'}</span>"
        "</h2>",
    ]
    if feature.get("derived_from"):
        out.append(
            "<p class='small'>Computed by the model from "
            + esc(", ".join(feature["derived_from"]))
            + ".</p>"
        )
    examples = feature.get("examples", {})
    values = feature.get("values", {})
    sizes = (
        f"N = {examples.get(names[0], 0):,} {esc(names[0])} · {examples.get(names[1], 0):,} "
        f"{esc(names[1])} examples; {values.get(names[0], 0):,.0f} · "
        f"{values.get(names[1], 0):,.0f} with a value"
    )
    comparator = esc(_COMPARATOR_WORDS.get(feature["comparator"], feature["comparator"]))
    if not feature.get("compared", True):
        measured = f"<b>{esc(feature.get('not_judged') or 'not compared')}</b>."
    elif feature.get("not_judged"):
        measured = f"{comparator}: {shown}, <b>{esc(feature['not_judged'])}</b>."
    else:
        test = f", {esc(feature['test'])}" if feature.get("test") else ""
        measured = (
            f"{comparator}: <b>{shown}</b> (threshold {feature['threshold']:g}{p_text}{test})."
        )
    presence_p = presence.get("p_value")
    if presence.get("not_judged"):
        presence_text = esc(presence["not_judged"])
    else:
        p_part = "" if presence_p is None else f", p = {presence_p:.1e}"
        presence_text = f"threshold {presence['threshold']:g} difference{p_part}"
    out.append(
        f"<p class='small'>{sizes}.</p>"
        f"<p>{measured}<br>"
        f"Has a value: {esc(names[0])} {presence[names[0]]:.1%} · {esc(names[1])} "
        f"{presence[names[1]]:.1%} ({presence_text}).</p>"
    )
    out.append(_chart(feature, names))
    if feature["reasons"]:
        out.append("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in feature["reasons"]) + "</ul>")
    for note in feature.get("notes", []):
        out.append(f"<p class='small'>{esc(note)}</p>")
    out.append("</div>")
    return out
