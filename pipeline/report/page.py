"""The run report: one self-contained HTML page (inline CSS and SVG, no scripts, no network).

Every figure comes from what the run recorded: MLMD (components, outcomes, times, where the
model went), TFDV's statistics, the Trainer's TensorBoard event files, TFMA's metrics, and the
run's summary.json. A run stopped at a gate opens with why.
"""

from __future__ import annotations

import datetime
import html
import json
import os
from typing import Any

from pipeline import artifact_io, names
from pipeline.anomalies import read_anomalies
from pipeline.mlmd_run import NodeExecution
from pipeline.report import reads, svg
from pipeline.runs import (
    COMPLETED,
    STOPPED_AT_GATE,
    STOPPED_BY_MONITORING,
    RunRecord,
    iso_time,
    load_run,
    split_names,
)
from taxifare_modules import features as f

REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.json"
# Eval trips the predicted-vs-actual figure shows.
SCATTER_EXAMPLES = 400
_UNITS = f.FEATURE_UNITS
_METRIC_UNITS = {
    "loss": "loss (Huber, US dollars)",
    "rmse": "RMSE (US dollars)",
    "mae": "MAE (US dollars)",
    "root_mean_squared_error": "RMSE (US dollars)",
    "mean_absolute_error": "MAE (US dollars)",
}
_CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:900px;padding:0 14px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:14px 0 4px}.ok{color:#1a7f37}.bad{color:#c62828}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums}
.why{border:2px solid #c62828;border-radius:6px;padding:8px 14px;margin:14px 0}
.legend span{margin-right:16px}.legend svg{vertical-align:middle;margin-right:4px}
svg.chart{max-width:100%;height:auto}svg text{font-size:11px;fill:#333}
pre{background:#f5f5f5;padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.small{color:#555;font-size:13px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _first(node: NodeExecution | None, key: str):
    if node is None or not node.outputs.get(key):
        return None
    return node.outputs[key][0]


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def read_summary(root: str, run_id: str) -> dict[str, Any] | None:
    """The run's summary.json, if the run wrote one."""
    path = os.path.join(root, "runs", run_id, SUMMARY_FILE)
    if not artifact_io.exists(path):
        return None
    return json.loads(artifact_io.read_bytes(path))


def _why_stopped(record: RunRecord, nodes: dict[str, NodeExecution], summary) -> list[str]:
    if record.status == STOPPED_AT_GATE:
        anomalies = _first(nodes.get(names.EXAMPLE_VALIDATOR_ID), "anomalies")
        found = []
        if anomalies is not None:
            found = read_anomalies(anomalies.uri, split_names(anomalies))
        rows = [[_e(a.split), _e(a.feature), _e(a.kind), _e(a.description)] for a in found]
        return [
            '<div class="why" id="why">',
            f"<h2>Why the run stopped: {len(found)} anomalies against the schema</h2>",
            "<p>The data did not match the schema, so the anomaly gate stopped the run before"
            " Transform. Nothing was trained or pushed; the serving directory is unchanged.</p>",
            _table(["split", "feature", "anomaly", "description"], rows, numeric_from=99),
            "</div>",
        ]
    if record.status == STOPPED_BY_MONITORING:
        parts = [
            '<div class="why" id="why">',
            "<h2>Why the run stopped: drift or skew found</h2>",
            "<p>A monitoring check found a shift and its <code>on_detect</code> is"
            " <code>stop</code>: nothing was trained or pushed.</p>",
        ]
        for name in ("drift", "skew"):
            check = (summary or {}).get(name)
            if check and check.get("found"):
                where = ", ".join(check["failed_features"]) or "the dataset"
                parts.append(
                    f"<p><b>{name}</b> in {_e(where)}"
                    f" ({_e(check.get('note', ''))}); detail: <code>{_e(check.get('report'))}"
                    "</code></p>"
                )
        return parts + ["</div>"]
    if record.failed_component:
        return [
            '<div class="why" id="why">',
            f"<h2>Why the run stopped: {_e(record.failed_component)} failed</h2>",
            f"<p>See the run's log: <code>{_e((summary or {}).get('log_path'))}</code></p>",
            "</div>",
        ]
    return []


def _overview(record: RunRecord, summary) -> list[str]:
    status_class = "ok" if record.status == COMPLETED else "bad"
    rows = [
        ["run", _e(record.run_id)],
        ["started (UTC)", _e(iso_time(record.started))],
        ["status", f'<b class="{status_class}" id="status">{_e(record.status)}</b>'],
    ]
    if summary and summary.get("wall_seconds") is not None:
        rows.append(
            ["wall time", f'<span id="wall-seconds">{summary["wall_seconds"]:.0f}</span> s']
        )
    if record.span is not None:
        rows.append(["input span", _e(record.span)])
    return ["<h2>Summary</h2>", _table(["", ""], rows, numeric_from=99)]


def _dag_path(record: RunRecord) -> list[str]:
    longest = max(record.seconds.values(), default=1.0) or 1.0
    rows = []
    for node, state in record.components.items():
        seconds = record.seconds.get(node, 0.0)
        width = max(1, int(160 * seconds / longest))
        color = "#c62828" if state == "FAILED" else "#1f4e9c" if state == "COMPLETE" else "#999"
        bar = (
            f'<svg width="162" height="10" role="img" aria-label="{seconds:.1f} seconds">'
            f'<rect width="{width}" height="10" fill="{color}"/></svg>'
        )
        rows.append([_e(node), _e(state.lower()), f"{seconds:.1f}", bar])
    return [
        "<h2>Path through the pipeline</h2>",
        '<p class="small">Each component in the order it ran, its outcome (cached: reused'
        " from an earlier run) and its time in seconds.</p>",
        _table(["component", "outcome", "seconds", ""], rows, numeric_from=2),
    ]


def _data(record: RunRecord, nodes: dict[str, NodeExecution], summary) -> list[str]:
    parts = ["<h2>Data</h2>"]
    rows = []
    if record.rows_read is not None:
        rows.append(["trips read", f'<span id="rows-read">{record.rows_read:,}</span>'])
        rows.append(["trips excluded (fare out of range)", f"{record.rows_excluded:,}"])
    for split, count in record.split_rows.items():
        rows.append([f"examples in {_e(split)}", f'<span id="split-{_e(split)}">{count:,}</span>'])
    if rows:
        parts.append(_table(["", ""], rows))
    statistics = _first(nodes.get(names.STATISTICS_GEN_ID), "statistics")
    if statistics is None:
        return parts
    splits = list(record.split_rows) or ["train", "eval"]
    for name in ("drift", "skew"):
        check = (summary or {}).get(name)
        if check:
            found = ", ".join(check.get("failed_features") or []) or "nothing"
            parts.append(
                f"<p><b>{name}</b>: {_e(check.get('verdict'))} ({_e(check.get('note'))});"
                f" flagged: {_e(found)}"
                + (
                    f"; its report: <code>{_e(check['report'])}</code>"
                    if check.get("report")
                    else ""
                )
                + "</p>"
            )
    parts += feature_figures(reads.read_feature_splits(statistics.uri, splits), splits)
    return parts


def _missing_cell(x: reads.FeatureSplits, split: str) -> str:
    share = x.missing.get(split)
    if share is None:
        return "-"
    if not x.with_values.get(split):
        return "100% (no values)"
    if share > 0.995:  # a handful of values would read as 100.0%
        return f"{share:.2%} ({x.with_values[split]:,} with a value)"
    if 0 < share < 0.0005:  # a handful of missing values would read as 0.0%
        return f"{share * 100:.2g}%"
    return _pct(share)


def _mean_cell(x: reads.FeatureSplits, split: str) -> str:
    if split in x.with_values and not x.with_values[split]:
        return "no values"
    mean = x.mean.get(split)
    if mean is None:
        return "-"
    return _value_text(x.name, mean) if abs(mean) >= 1e4 else f"{mean:.4g}"


def _value_text(name: str, value: float) -> str:
    """A value of feature `name` as people read it: a timestamp as a UTC date."""
    if name == f.TIMESTAMP_KEY:
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc).strftime("%Y-%m-%d")
    if value == int(value) or abs(value) >= 1e4:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _no_values_note(x: reads.FeatureSplits, splits: list[str]) -> str:
    empty = [s for s in splits if s in x.with_values and not x.with_values[s]]
    if not empty:
        return ""
    return f'<p class="small">No values in {_e(", ".join(empty))}.</p>'


def feature_figures(features: list[reads.FeatureSplits], splits: list[str]) -> list[str]:
    """The per-split table of missing shares and means, and one distribution per feature.

    Numeric amounts are drawn on their own axis from TFDV's quantiles (log-scaled for long
    tails); categories and identifiers as bars per value, labelled in full.
    """
    table = [
        [_e(x.name)] + [_missing_cell(x, s) for s in splits] + [_mean_cell(x, s) for s in splits]
        for x in features
    ]
    parts = ["<h3>Missing values and means per split</h3>"]
    parts.append(
        _table(
            ["feature"] + [f"missing in {s}" for s in splits] + [f"mean in {s}" for s in splits],
            table,
        )
    )
    parts.append("<h3>Distributions, " + " vs ".join(_e(s) for s in splits) + "</h3>")
    parts.append(
        '<p class="small">Each bar is a share of the split\'s values (trips without a value are'
        " counted in the table above).</p>"
    )
    parts.append(svg.legend(splits))
    for x in features:
        parts.append(f"<h3>{_e(x.name)}</h3>")
        if not any(x.with_values.get(s) for s in splits):
            parts.append('<p class="small">No values in any split.</p>')
            continue
        if not x.bins:
            continue
        unit = _UNITS.get(x.name, x.name)
        tips = [
            f"{x.name} {label}: "
            + ", ".join(
                f"{s} {shares.get(s, 0.0):.2%}" if x.with_values.get(s) else f"{s} no values"
                for s in splits
            )
            for label, shares in x.bins
        ]
        if x.edges is not None:
            edges = x.edges
            tips = [
                f"{x.name} {_value_text(x.name, edges[i])} to {_value_text(x.name, edges[i + 1])}"
                + tip[tip.index(":") :]
                for i, tip in enumerate(tips)
            ]
            series = {s: [shares.get(s, 0.0) * 100 for _, shares in x.bins] for s in splits}
            marks = None
            if x.name == f.TIMESTAMP_KEY:  # month bins, ticked at the new years among them
                unit = "trip start (UTC date)"
                marks = [e for e in edges if _value_text(x.name, e).endswith("-01-01")]
            parts.append(
                svg.histogram(
                    x.edges,
                    series,
                    unit,
                    "share of values (%)",
                    f"{x.name} by split",
                    tips=tips,
                    log_offset=x.log_offset,
                    value_format=lambda v, name=x.name: _value_text(name, v),
                    marks=marks if marks and len(marks) > 1 else None,
                )
            )
        else:
            bars = [
                (label, [shares.get(s, 0.0) * 100 for s in splits], tip)
                for (label, shares), tip in zip(x.bins, tips, strict=True)
            ]
            parts.append(svg.bar_chart(bars, unit, "share of values (%)", f"{x.name} by split"))
        if x.edges is not None:
            parts.append(_resolution_note(x))
        parts.append(_no_values_note(x, splits))
    return parts


def _resolution_note(x: reads.FeatureSplits) -> str:
    if not x.quantile_buckets:
        return (
            '<p class="small">Read off TFDV\'s equal-width histogram (the statistics have no'
            " quantiles): a bar's share is spread evenly over each of its buckets.</p>"
        )
    points = 100 / x.quantile_buckets
    return (
        f'<p class="small">Read off TFDV\'s {x.quantile_buckets} quantile buckets per split:'
        f" each share is right to about {points:.2g} percentage point"
        + ("" if points == 1 else "s")
        + ".</p>"
    )


def _training(summary, nodes: dict[str, NodeExecution], record: RunRecord) -> list[str]:
    parts = ["<h2>Training</h2>"]
    if record.hyperparameters:
        source = "tuned" if record.hyperparameters_source == "tuner" else "configured"
        rows = [[_e(k), _e(v)] for k, v in sorted(record.hyperparameters.items())]
        parts += [f"<h3>Hyperparameters ({source})</h3>", _table(["name", "value"], rows)]
    model_run = _first(nodes.get(names.TRAINER_ID), "model_run")
    if model_run is None:
        return parts + ["<p>The run did not train a model.</p>"]
    logs = os.path.join(model_run.uri, "logs")
    curves = reads.read_training_curves(logs)
    best = ((summary or {}).get("training") or {}).get("best_epoch")
    marker = (float(best), f"best weights: epoch {best}") if best else None
    for metric, series in sorted(curves.items()):
        label = _METRIC_UNITS.get(metric, metric)
        one_point = all(len(points) == 1 for points in series.values())
        parts.append(f"<h3>{_e(label)}</h3>")
        if one_point:
            rows = [[_e(side), f"{points[0][1]:.4f}"] for side, points in series.items()]
            parts.append(
                '<p class="small">One value per side: the Trainer logs once per epoch, and'
                " trains one epoch.</p>" + _table(["side", label], rows)
            )
            continue
        parts.append(svg.legend(list(series)))
        parts.append(
            svg.line_chart(
                series, "epoch", label, f"{metric} per epoch", integer_x=True, marker=marker
            )
        )
    parts.append(f'<p class="small">TensorBoard logs: <code>{_e(logs)}</code></p>')
    return parts


def _evaluation(
    record: RunRecord, nodes: dict[str, NodeExecution], summary, run_dir: str | None
) -> list[str]:
    evaluation = _first(nodes.get(names.EVALUATOR_ID), "evaluation")
    if evaluation is None:
        return []
    split = record.metrics_split or "eval"
    parts = [f"<h2>Evaluation (on the {_e(split)} split)</h2>"]
    has_baseline = record.baseline_model is not None
    rows = [
        [
            "candidate",
            f'<span id="rmse">{_money(record.rmse)}</span>',
            f'<span id="mae">{_money(record.mae)}</span>',
            f'<span id="example-count">{record.example_count:,}</span>'
            if record.example_count is not None
            else "-",
        ]
    ]
    if has_baseline:
        rows.append(
            [
                "baseline (last blessed model)",
                f'<span id="baseline-rmse">{_money(record.baseline_rmse)}</span>',
                _money(record.baseline_mae),
                "",
            ]
        )
    parts.append(_table(["model", "RMSE", "MAE", "trips"], rows))
    baseline_text = (
        f"compared with the last blessed model <code>{_e(record.baseline_model)}</code>"
        if has_baseline
        else "no earlier blessed model to compare with"
    )
    verdict = {True: '<b class="ok">blessed</b>', False: '<b class="bad">not blessed</b>'}.get(
        record.blessed, "no verdict"
    )
    reasons = (summary or {}).get("blessing_reasons") or []
    parts.append(
        f"<p>{verdict}; {baseline_text}."
        + ("".join(f"<br>{_e(r)}" for r in reasons) if record.blessed is False else "")
        + "</p>"
    )
    slices = reads.read_slice_metrics(evaluation.uri)
    for key in f.SLICE_KEYS:
        of_key = [s for s in slices if s.feature == key]
        if not of_key:
            continue
        if all(v.value.lstrip("-").isdigit() for v in of_key):
            of_key.sort(key=lambda v: int(v.value))
        else:
            of_key.sort(key=lambda v: -(v.count or 0))
        series = ["candidate"] + (["baseline"] if has_baseline else [])
        bars = [
            (
                s.value,
                [s.rmse or 0.0] + ([s.baseline_rmse or 0.0] if has_baseline else []),
                f"{key} {s.value}: RMSE {_money(s.rmse)} on {s.count or 0:,} trips",
            )
            for s in of_key
        ]
        parts.append(f"<h3>RMSE by {_e(_UNITS.get(key, key))}</h3>")
        parts.append(svg.legend(series))
        parts.append(
            svg.bar_chart(bars, _UNITS.get(key, key), "RMSE (US dollars)", f"RMSE by {key}")
        )
        parts.append(
            _table(
                [key, "RMSE", "MAE", "trips"],
                [[_e(s.value), _money(s.rmse), _money(s.mae), f"{s.count or 0:,}"] for s in of_key],
            )
        )
    parts += _predicted_vs_actual(record, nodes, split, run_dir)
    return parts


def _predicted_vs_actual(record, nodes, split: str, run_dir: str | None) -> list[str]:
    model = _first(nodes.get(names.TRAINER_ID), "model")
    examples = _first(nodes.get(names.FARE_FILTER_ID), "filtered_examples")
    if model is None or examples is None:
        return []
    points = _scatter_points(model.uri, examples.uri, split.split(",")[0], run_dir)
    if not points:
        return []
    return [
        f"<h3>Predicted vs actual fare ({len(points)} trips of the {_e(split)} split)</h3>",
        svg.scatter(
            points, "actual fare (US dollars)", "predicted fare (US dollars)", "predicted vs actual"
        ),
        '<p class="small">The dashed line is a perfect prediction.</p>',
    ]


# Beside a run's summary: the predicted-vs-actual points, so that `taxifare report` draws them
# again without loading TensorFlow and the model.
SCATTER_FILE = "predicted_vs_actual.json"


def _scatter_points(
    model_uri: str, examples_uri: str, split: str, run_dir: str | None
) -> list[tuple[float, float]]:
    """(actual, predicted) fares of the first examples of `split`: read from the run's
    folder when an earlier report saved them for this model, else computed and saved."""
    cache = os.path.join(run_dir, SCATTER_FILE) if run_dir else None
    if cache and artifact_io.exists(cache):
        saved = json.loads(artifact_io.read_bytes(cache))
        if saved.get("model") == model_uri and saved.get("split") == split:
            return [(float(a), float(p)) for a, p in saved["points"]]
    rows = reads.read_examples(examples_uri, split, SCATTER_EXAMPLES)
    if not rows:
        return []
    fares = reads.predict_examples(model_uri, rows)
    points = [
        (float(r[f.LABEL_KEY]), p) for r, p in zip(rows, fares, strict=True) if r.get(f.LABEL_KEY)
    ]
    if cache:
        artifact_io.write_text(
            cache, json.dumps({"model": model_uri, "split": split, "points": points})
        )
    return points


def _where(record: RunRecord, summary) -> list[str]:
    parts = ["<h2>Where the model went</h2>"]
    if record.pushed_to:
        parts.append(
            f'<p>Pushed as version <b id="pushed-version">{_e(record.pushed_version)}</b> to'
            f" <code>{_e(record.pushed_to)}</code>.</p>"
        )
    elif record.already_serving:
        parts.append(
            f"<p>Not pushed again: the same model is already the serving version"
            f" (<code>{_e(record.already_serving)}</code>).</p>"
        )
    else:
        parts.append("<p>Nothing was pushed; the serving directory is unchanged.</p>")
    steps = (summary or {}).get("next_steps") or []
    if steps:
        parts.append(
            "<pre>" + _e("\n".join(line.rstrip() for line in steps).strip("\n")) + "</pre>"
        )
    return parts


def render_report(
    record: RunRecord,
    nodes: dict[str, NodeExecution],
    summary: dict[str, Any] | None,
    run_dir: str | None = None,
) -> str:
    """The report page of one run (`run_dir`: the run's folder, where the points of the
    predicted-vs-actual chart are kept)."""
    body = [
        f"<h1>taxifare run {_e(record.run_id)}</h1>",
        *_why_stopped(record, nodes, summary),
        *_overview(record, summary),
        *_dag_path(record),
        *_data(record, nodes, summary),
        *_training(summary, nodes, record),
        *_evaluation(record, nodes, summary, run_dir),
        *_where(record, summary),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>taxifare run {_e(record.run_id)}: {_e(record.status)}</title>"
        f"<style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )


def write_report(
    root: str, out_path: str, run_id: str | None = None, summary: dict[str, Any] | None = None
) -> str:
    """Writes the report of run `run_id` (default: the newest) of `root` to `out_path`.

    Args:
      root: the pipeline root.
      out_path: the HTML file to write (any filesystem tf.io.gfile knows).
      run_id: the run; None for the newest.
      summary: the run's summary (to_json); None reads the run's summary.json.

    Raises:
      runs.RunsError: no such root or run.
    """
    record, nodes = load_run(root, run_id)
    if summary is None:
        summary = read_summary(root, record.run_id)
    page = render_report(record, nodes, summary, os.path.join(root, "runs", record.run_id))
    artifact_io.write_text(out_path, page)
    return out_path
