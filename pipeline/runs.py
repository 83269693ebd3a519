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
from collections.abc import Iterator
from typing import Any

from pipeline import artifact_io, names
from pipeline.mlmd_run import (
    ABANDONED_PROPERTY,
    NodeExecution,
    custom_value,
    open_store,
    read_run,
)
from pipeline.names import (
    ALREADY_SERVING_PROPERTY,
    FARE_FILTER_FOLDED_PROPERTY,
    PUSHED_DESTINATION_PROPERTY,
    PUSHED_PROPERTY,
    PUSHED_VERSION_PROPERTY,
    ROWS_EXCLUDED_PROPERTY,
    ROWS_READ_PROPERTY,
)
from taxifare_modules import compat
from taxifare_modules.hparams import TRAINING_RECORD

RUN_CONTEXT_TYPE = "pipeline_run"
METADATA_FILE = "metadata.sqlite"
# Statuses, from the best to the worst outcome.
COMPLETED = "completed"
NOT_BLESSED = "not blessed"
STOPPED_AT_GATE = "stopped at the anomaly gate"
STOPPED_BY_MONITORING = "stopped by drift/skew"
STOPPED_BY_DATA = "stopped by the data (FareFilter)"
FAILED = "failed"
# Running now, or killed and not yet seen by a later run (which marks it abandoned).
RUNNING = "running or killed"
ABANDONED = "abandoned"
# A `taxifare infer-schema` run: ExampleGen to SchemaGen, nothing trained.
SCHEMA_INFERRED = "schema inferred (infer-schema)"
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
    span: int | None = None  # the newest span: validated, checked for drift and tested
    # The spans Transform and the Trainer learned from, oldest first (data.train_spans).
    train_spans: list[int] = dataclasses.field(default_factory=list)
    rows_read: int | None = None
    rows_excluded: int | None = None
    # Where the fare range was applied: True in ExampleGen (data.fold_fare_filter; FareFilter
    # copied its files), False by FareFilter itself, None when not recorded.
    fare_filter_folded: bool | None = None
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
    # What the Trainer recorded (epochs run, steps per epoch, examples trained, ...); None
    # when it did not finish.
    training: dict[str, Any] | None = None
    # The pushed version's folder is gone from the serving directory.
    pushed_missing: bool = False

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


def _tfma_metrics_files(evaluation_uri: str) -> list[str]:
    """The files TFMA's `load_metrics` reads: `metrics*.tfrecord`, else `metrics*`."""
    base = evaluation_uri.rstrip("/") + "/metrics"
    return artifact_io.glob_files(base + "*.tfrecord") or artifact_io.glob_files(base + "*")


def read_tfma_metrics(evaluation_uri: str) -> Iterator[Any]:
    """The Evaluator's MetricsForSlice records, read as `tfma.load_metrics` reads them but
    without importing TFMA (TensorFlow and Beam), so `runs` and `report` answer at once."""
    metrics_pb2 = compat.tfma_metrics_for_slice_pb2()
    for path in _tfma_metrics_files(evaluation_uri):
        for record in artifact_io.iter_tfrecords(path, compressed=False):
            yield metrics_pb2.MetricsForSlice.FromString(record)


def read_overall_metrics(evaluation_uri: str) -> dict[tuple[str, str], float]:
    """TFMA's overall-slice metrics keyed by (metric name, model name)."""
    values: dict[tuple[str, str], float] = {}
    for metrics in read_tfma_metrics(evaluation_uri):
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
    for name in artifact_io.list_dir(uri):
        data = json.loads(artifact_io.read_bytes(os.path.join(uri, name)))
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
    trainer = nodes.get(names.TRAINER_ID)
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


def read_training_record(model_run_uri: str) -> dict[str, Any] | None:
    """The Trainer's record of what it trained (None if it wrote none: killed, or older)."""
    path = os.path.join(model_run_uri, TRAINING_RECORD)
    if not artifact_io.exists(path):
        return None
    return json.loads(artifact_io.read_bytes(path))


def training_steps(record: RunRecord) -> str:
    """What was trained, for the table: `9x69` (epochs x steps per epoch), `12x3907 rounds`
    when validated every so many examples instead of every pass, or the step cap."""
    training = record.training
    if training and training.get("epochs_run") and training.get("steps_per_epoch"):
        rounds = " rounds" if training.get("validation") == "examples" else ""
        return f"{training['epochs_run']}x{training['steps_per_epoch']}{rounds}"
    steps = record.hyperparameters.get("train_steps")
    return "-" if steps is None or record.training is None else str(steps)


def split_text(record: RunRecord) -> str:
    """The train/eval/test shares the Trainer recorded, e.g. `60/20/20` or `85/5/10 sized`
    (holdouts capped in rows: the reason is in the record's training.data_split)."""
    split = (record.training or {}).get("data_split")
    if not split:
        return "-"
    total = split["train_buckets"] + split["eval_buckets"] + split["test_buckets"]
    shares = "/".join(
        f"{100 * split[f'{name}_buckets'] / total:.3g}" for name in ("train", "eval", "test")
    )
    return shares + (" sized" if split.get("sized") else "")


def artifact_span(artifact) -> int | None:
    """The span of an Examples artifact (a property or a custom property), or None."""
    span = custom_value(artifact, "span")
    if span is None and "span" in artifact.properties:
        span = artifact.properties["span"].int_value
    return None if span is None else int(span)


def trained_spans(nodes: dict[str, NodeExecution]) -> list[int]:
    """The spans of the examples Transform (and so the Trainer) learned from, oldest first;
    empty when Transform did not run."""
    transform = nodes.get(names.TRANSFORM_ID)
    if transform is None:
        return []
    spans = {artifact_span(a) for a in transform.inputs.get("examples", [])}
    return sorted(s for s in spans if s is not None)


def spans_text(span: int | None, train_spans: list[int]) -> str:
    """The spans of a run for a table: the one span, or the training window first..last."""
    if len(train_spans) > 1:
        return f"{train_spans[0]}..{train_spans[-1]}"
    return "-" if span is None else str(span)


def split_names(artifact) -> list[str]:
    """The splits of an MLMD artifact, as TFX recorded them (a JSON list:
    artifact_utils.encode_split_names), read without importing TFX."""
    return json.loads(artifact.properties["split_names"].string_value or "[]")


def read_split_statistics(statistics_uri: str, split: str) -> Any:
    """StatisticsGen's DatasetFeatureStatisticsList of one split (read as
    `tfdv.load_stats_binary` does, without importing TFDV)."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    path = os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb")
    return statistics_pb2.DatasetFeatureStatisticsList.FromString(artifact_io.read_bytes(path))


def _split_rows(statistics) -> dict[str, int]:
    """Examples per split, from StatisticsGen's statistics."""
    rows = {}
    for split in split_names(statistics):
        stats = read_split_statistics(statistics.uri, split)
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
    filtered = _first(nodes.get(names.FARE_FILTER_ID), "filtered_examples")
    if filtered is not None:
        record.rows_read = custom_value(filtered, ROWS_READ_PROPERTY)
        record.rows_excluded = custom_value(filtered, ROWS_EXCLUDED_PROPERTY)
        folded = custom_value(filtered, FARE_FILTER_FOLDED_PROPERTY)
        record.fare_filter_folded = None if folded is None else bool(folded)
    examples = _first(nodes.get(names.EXAMPLE_GEN_ID), "examples")
    if examples is not None:
        record.span = artifact_span(examples)
    record.train_spans = trained_spans(nodes)
    statistics = _first(nodes.get(names.STATISTICS_GEN_ID), "statistics")
    if statistics is not None and with_metrics:
        record.split_rows = _split_rows(statistics)
    record.hyperparameters, record.hyperparameters_source = _hyperparameters(nodes)
    model_run = _first(nodes.get(names.TRAINER_ID), "model_run")
    if model_run is not None and with_metrics:
        record.training = read_training_record(model_run.uri)
    evaluation = _first(nodes.get(names.EVALUATOR_ID), "evaluation")
    if evaluation is not None and with_metrics:
        metrics = read_overall_metrics(evaluation.uri)
        candidate = {name: v for (name, model), v in metrics.items() if model != "baseline"}
        record.rmse = candidate.get(_RMSE)
        record.mae = candidate.get(_MAE)
        count = candidate.get(_COUNT)
        record.example_count = int(count) if count is not None else None
        record.baseline_rmse = metrics.get((_RMSE, "baseline"))
        record.baseline_mae = metrics.get((_MAE, "baseline"))
        record.metrics_split = evaluated_split(nodes[names.EVALUATOR_ID])
    evaluator = nodes.get(names.EVALUATOR_ID)
    baselines = evaluator.inputs.get("baseline_model") if evaluator is not None else None
    record.baseline_model = baselines[0].uri if baselines else None
    blessing = _first(nodes.get(names.EVALUATOR_ID), "blessing")
    if blessing is not None:
        record.blessed = bool(custom_value(blessing, "blessed"))
    pushed = _first(nodes.get(names.PUSHER_ID), "pushed_model")
    if pushed is not None and custom_value(pushed, PUSHED_PROPERTY):
        record.pushed_to = str(custom_value(pushed, PUSHED_DESTINATION_PROPERTY))
        record.pushed_version = str(custom_value(pushed, PUSHED_VERSION_PROPERTY))
        # A version deleted by hand (or by a retention job) is no longer served.
        record.pushed_missing = not artifact_io.exists(record.pushed_to)
    elif pushed is not None:
        record.already_serving = custom_value(pushed, ALREADY_SERVING_PROPERTY)
    record.status = _status(record, nodes)
    return record


def _status(record: RunRecord, nodes: dict[str, NodeExecution]) -> str:
    if record.failed_component == names.ANOMALY_GATE_ID:
        return STOPPED_AT_GATE
    if record.failed_component == names.MONITORING_GATE_ID:
        return STOPPED_BY_MONITORING
    if record.failed_component is not None and record.failed_component.startswith(
        names.FARE_FILTER_ID
    ):
        # FareFilter fails only on the data: every trip excluded, too few left, or a
        # corrupt record (the run's log says which).
        return STOPPED_BY_DATA
    if record.failed_component is not None:
        return FAILED
    abandoned = [
        n.node_id for n in nodes.values() if ABANDONED_PROPERTY in n.execution.custom_properties
    ]
    if abandoned:
        # A later run found these executions left running by a killed run and marked them.
        return f"{ABANDONED} (killed in {', '.join(abandoned)})"
    if any(n.state in ("RUNNING", "NEW", "CANCELED") for n in nodes.values()):
        return RUNNING
    if names.SCHEMA_GEN_ID in nodes and not nodes.keys() & {
        names.TRANSFORM_ID,
        names.TRAINER_ID,
        names.EVALUATOR_ID,
    }:
        # `taxifare infer-schema` runs the pipeline up to SchemaGen in the same root.
        return SCHEMA_INFERRED
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


def _pushed_text(record: RunRecord) -> str:
    if not record.pushed_version:
        return ""
    return record.pushed_version + (" (missing)" if record.pushed_missing else "")


def fare_filter_text(folded: bool) -> str:
    """Where the fare range was applied, for the run summary."""
    if folded:
        return "in ExampleGen (folded, data.fold_fare_filter); FareFilter copied its files"
    return "in FareFilter (every record read again)"


def rows_text(record: RunRecord) -> str:
    """The trips read, e.g. `15,002`, or `15,002 folded` when ExampleGen applied the fare
    range itself (data.fold_fare_filter)."""
    if record.rows_read is None:
        return "-"
    return f"{record.rows_read:,}" + (" folded" if record.fare_filter_folded else "")


def format_table(records: list[RunRecord]) -> str:
    """The runs as a table for a terminal, one line per run."""
    header = (
        "run",
        "started (UTC)",
        "status",
        "span",
        "rows",
        "epochs x steps",
        "train/eval/test %",
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
                spans_text(r.span, r.train_spans),
                rows_text(r),
                training_steps(r),
                split_text(r),
                r.metrics_split or "-",
                _money(r.rmse),
                _money(r.mae),
                _money(r.baseline_rmse) if r.baseline_model else "none",
                {True: "yes", False: "NO", None: "-"}[r.blessed],
                _pushed_text(r)
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
