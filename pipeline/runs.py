"""The runs of a pipeline root as MLMD recorded them: what each did, newest first.

Everything here is read from the root's MLMD store and the artifacts it points to (TFMA's
output, the Trainer's records), never from logs, so `taxifare runs` and the run report agree
with what the pipeline itself decided.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from pipeline import dag
from pipeline.components.atomic_pusher import (
    ALREADY_SERVING_PROPERTY,
    PUSHED_DESTINATION_PROPERTY,
    PUSHED_PROPERTY,
    PUSHED_VERSION_PROPERTY,
)
from pipeline.components.fare_filter import ROWS_EXCLUDED_PROPERTY, ROWS_READ_PROPERTY
from pipeline.mlmd_run import NodeExecution, custom_value, open_store, read_run

RUN_CONTEXT_TYPE = "pipeline_run"
METADATA_FILE = "metadata.sqlite"
# Statuses, from the best to the worst outcome.
COMPLETED = "completed"
NOT_BLESSED = "not blessed"
STOPPED_AT_GATE = "stopped at the anomaly gate"
STOPPED_BY_MONITORING = "stopped by drift/skew"
FAILED = "failed"
RUNNING = "running or abandoned"
_RMSE = "root_mean_squared_error"
_MAE = "mean_absolute_error"
_COUNT = "example_count"


class RunsError(Exception):
    """The root has no MLMD store or no such run (the message names which)."""


@dataclasses.dataclass
class RunRecord:
    """One pipeline run as MLMD recorded it."""

    run_id: str
    started: float  # Unix seconds (MLMD's run context)
    status: str
    failed_component: str | None
    components: dict[str, str]  # node id -> COMPLETE / CACHED / FAILED, in the order run
    seconds: dict[str, float]
    span: int | None = None
    rows_read: int | None = None
    rows_excluded: int | None = None
    split_rows: dict[str, int] = dataclasses.field(default_factory=dict)
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    hyperparameters_source: str | None = None  # tuner / trainer
    metrics_split: str | None = None  # the split TFMA's metrics are of
    rmse: float | None = None
    mae: float | None = None
    example_count: int | None = None
    baseline_rmse: float | None = None
    baseline_mae: float | None = None
    baseline_model: str | None = None  # the last blessed model it was compared with
    blessed: bool | None = None
    pushed_version: str | None = None
    pushed_to: str | None = None
    already_serving: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict, with the start time also in ISO 8601 (UTC)."""
        data = dataclasses.asdict(self)
        data["started_utc"] = iso_time(self.started)
        return data


def iso_time(seconds: float) -> str:
    """Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _first(node: NodeExecution | None, key: str):
    if node is None or not node.outputs.get(key):
        return None
    return node.outputs[key][0]


def metadata_path(root: str) -> str:
    """The MLMD store of a pipeline root."""
    return os.path.join(root, METADATA_FILE)


def open_root(root: str):
    """The MLMD store of `root`.

    Raises:
      RunsError: the root has no store (no run ever wrote to it).
    """
    path = metadata_path(root)
    if not os.path.isfile(path):
        raise RunsError(f"{root} holds no runs: {path} not found (the --root of `taxifare run`)")
    return open_store(path)


def read_overall_metrics(evaluation_uri: str) -> dict[tuple[str, str], float]:
    """TFMA's overall-slice metrics keyed by (metric name, model name)."""
    import tensorflow_model_analysis as tfma

    values: dict[tuple[str, str], float] = {}
    for metrics in tfma.load_metrics(evaluation_uri):
        if metrics.slice_key.single_slice_keys:
            continue
        for kv in metrics.metric_keys_and_values:
            if not kv.key.is_diff and kv.value.HasField("double_value"):
                values[(kv.key.name, kv.key.model_name)] = kv.value.double_value.value
    return values


def exec_property(node: NodeExecution, name: str) -> str:
    """An execution property of a node as TFX recorded it (a string; "" if absent)."""
    execution = node.execution
    for properties in (execution.custom_properties, execution.properties):
        if name in properties:
            return properties[name].string_value
    return ""


def evaluated_split(evaluator: NodeExecution) -> str:
    """The split the Evaluator computed its metrics on (TFX's default: eval)."""
    raw = exec_property(evaluator, "example_splits")
    splits = json.loads(raw) if raw and raw != "null" else None
    return ",".join(splits) if splits else "eval"


def read_best_hyperparameters(uri: str) -> dict[str, Any] | None:
    """The values a Tuner's best_hyperparameters artifact (at `uri`) holds; None if none."""
    import tensorflow as tf

    for name in tf.io.gfile.listdir(uri):
        with tf.io.gfile.GFile(os.path.join(uri, name)) as fh:
            data = json.loads(fh.read())
        return dict(data.get("values", data))
    return None


def _hyperparameters(nodes: dict[str, NodeExecution]) -> tuple[dict[str, Any], str | None]:
    """What the Tuner found (its best_hyperparameters), else what the Trainer was given."""
    # A Tuner (whatever its id) records what it found as its best_hyperparameters output.
    tuned = [
        n.outputs["best_hyperparameters"][0]
        for n in nodes.values()
        if n.outputs.get("best_hyperparameters")
    ]
    best = read_best_hyperparameters(tuned[0].uri) if tuned else None
    if best is not None:
        return best, "tuner"
    trainer = nodes.get(dag.TRAINER_ID)
    if trainer is None:
        return {}, None
    found: dict[str, Any] = {}
    if raw_config := exec_property(trainer, "custom_config"):
        config = json.loads(raw_config)
        for key, value in config.items():
            if isinstance(value, dict):
                found.update(value)
            elif not key.startswith("ai_platform"):
                found[key] = value
    for name in ("train_args", "eval_args"):
        if raw_args := exec_property(trainer, name):
            steps = json.loads(raw_args).get("num_steps")
            if steps is not None:
                found[f"{name.split('_')[0]}_steps"] = steps
    return found, "trainer"


def _split_rows(statistics) -> dict[str, int]:
    import tensorflow_data_validation as tfdv
    from tfx.types import artifact_utils

    rows = {}
    for split in artifact_utils.decode_split_names(
        statistics.properties["split_names"].string_value
    ):
        path = os.path.join(statistics.uri, f"Split-{split}", "FeatureStats.pb")
        stats = tfdv.load_stats_binary(path)
        rows[split] = int(stats.datasets[0].num_examples) if stats.datasets else 0
    return rows


def build_record(
    run_id: str, started: float, nodes: dict[str, NodeExecution], with_metrics: bool = True
) -> RunRecord:
    """A run's record from its executions (see mlmd_run.read_run)."""
    ordered = sorted(nodes.values(), key=lambda n: (n.execution.create_time_since_epoch, n.node_id))
    failed = [n.node_id for n in ordered if n.state == "FAILED"]
    record = RunRecord(
        run_id=run_id,
        started=started,
        status=COMPLETED,
        failed_component=failed[0] if failed else None,
        components={n.node_id: n.state for n in ordered},
        seconds={n.node_id: n.seconds for n in ordered},
    )
    filtered = _first(nodes.get(dag.FARE_FILTER_ID), "filtered_examples")
    if filtered is not None:
        record.rows_read = custom_value(filtered, ROWS_READ_PROPERTY)
        record.rows_excluded = custom_value(filtered, ROWS_EXCLUDED_PROPERTY)
    examples = _first(nodes.get(dag.EXAMPLE_GEN_ID), "examples")
    if examples is not None:
        span = custom_value(examples, "span")
        if span is None and "span" in examples.properties:
            span = examples.properties["span"].int_value
        record.span = None if span is None else int(span)
    statistics = _first(nodes.get(dag.STATISTICS_GEN_ID), "statistics")
    if statistics is not None and with_metrics:
        record.split_rows = _split_rows(statistics)
    record.hyperparameters, record.hyperparameters_source = _hyperparameters(nodes)
    evaluation = _first(nodes.get(dag.EVALUATOR_ID), "evaluation")
    if evaluation is not None and with_metrics:
        metrics = read_overall_metrics(evaluation.uri)
        candidate = {name: v for (name, model), v in metrics.items() if model != "baseline"}
        record.rmse = candidate.get(_RMSE)
        record.mae = candidate.get(_MAE)
        count = candidate.get(_COUNT)
        record.example_count = int(count) if count is not None else None
        record.baseline_rmse = metrics.get((_RMSE, "baseline"))
        record.baseline_mae = metrics.get((_MAE, "baseline"))
        record.metrics_split = evaluated_split(nodes[dag.EVALUATOR_ID])
    evaluator = nodes.get(dag.EVALUATOR_ID)
    baselines = evaluator.inputs.get("baseline_model") if evaluator is not None else None
    record.baseline_model = baselines[0].uri if baselines else None
    blessing = _first(nodes.get(dag.EVALUATOR_ID), "blessing")
    if blessing is not None:
        record.blessed = bool(custom_value(blessing, "blessed"))
    pushed = _first(nodes.get(dag.PUSHER_ID), "pushed_model")
    if pushed is not None and custom_value(pushed, PUSHED_PROPERTY):
        record.pushed_to = str(custom_value(pushed, PUSHED_DESTINATION_PROPERTY))
        record.pushed_version = str(custom_value(pushed, PUSHED_VERSION_PROPERTY))
    elif pushed is not None:
        record.already_serving = custom_value(pushed, ALREADY_SERVING_PROPERTY)
    record.status = _status(record, nodes)
    return record


def _status(record: RunRecord, nodes: dict[str, NodeExecution]) -> str:
    if record.failed_component == dag.ANOMALY_GATE_ID:
        return STOPPED_AT_GATE
    if record.failed_component == dag.MONITORING_GATE_ID:
        return STOPPED_BY_MONITORING
    if record.failed_component is not None:
        return FAILED
    if any(n.state in ("RUNNING", "NEW", "CANCELED") for n in nodes.values()):
        return RUNNING
    if record.blessed is False:
        return NOT_BLESSED
    return COMPLETED


def _run_contexts(store, root: str, run_id: str | None):
    contexts = store.get_contexts_by_type(RUN_CONTEXT_TYPE)
    if run_id is not None:
        contexts = [c for c in contexts if c.name == run_id]
        if not contexts:
            raise RunsError(
                f"{root} has no run {run_id!r} (`taxifare runs --root {root}` lists them)"
            )
    if not contexts:
        raise RunsError(f"{root} holds no runs yet")
    return sorted(contexts, key=lambda c: (c.create_time_since_epoch, c.name), reverse=True)


def read_runs(root: str, limit: int | None = None) -> list[RunRecord]:
    """The runs recorded in `root`'s MLMD, newest first.

    Raises:
      RunsError: the root has no store, or no run.
    """
    store = open_root(root)
    contexts = _run_contexts(store, root, None)
    if limit is not None:
        contexts = contexts[:limit]
    return [
        build_record(c.name, c.create_time_since_epoch / 1e3, read_run(store, c)) for c in contexts
    ]


def load_run(root: str, run_id: str | None = None) -> tuple[RunRecord, dict[str, NodeExecution]]:
    """One run (the newest when `run_id` is None): its record and its executions.

    Raises:
      RunsError: the root has no store, or no such run.
    """
    store = open_root(root)
    context = _run_contexts(store, root, run_id)[0]
    nodes = read_run(store, context)
    return build_record(context.name, context.create_time_since_epoch / 1e3, nodes), nodes


def _money(value: float | None) -> str:
    return f"${value:.2f}" if value is not None else "-"


def format_table(records: list[RunRecord]) -> str:
    """The runs as a table for a terminal, one line per run."""
    header = (
        "run",
        "started (UTC)",
        "status",
        "span",
        "rows",
        "steps",
        "split",
        "RMSE",
        "MAE",
        "baseline RMSE",
        "blessed",
        "pushed version",
    )
    rows = [header]
    for r in records:
        status = r.status + (f" ({r.failed_component})" if r.status == FAILED else "")
        rows.append(
            (
                r.run_id,
                iso_time(r.started).replace("T", " ").rstrip("Z"),
                status,
                "-" if r.span is None else str(r.span),
                "-" if r.rows_read is None else f"{r.rows_read:,}",
                str(r.hyperparameters.get("train_steps", "-")),
                r.metrics_split or "-",
                _money(r.rmse),
                _money(r.mae),
                _money(r.baseline_rmse) if r.baseline_model else "none",
                {True: "yes", False: "NO", None: "-"}[r.blessed],
                r.pushed_version
                or (
                    f"(serving {os.path.basename(r.already_serving)})" if r.already_serving else "-"
                ),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
