"""The closing summary of a run, read from MLMD and the run's artifacts (never from logs)."""

from __future__ import annotations

import dataclasses
import json
import os

from tfx.dsl.io import fileio

from pipeline import dag
from pipeline.anomalies import Anomaly, read_anomalies
from pipeline.components import monitoring as mon
from pipeline.config import Config
from pipeline.mlmd_run import NodeExecution, custom_value
from pipeline.monitoring.compare import TOO_FEW
from pipeline.names import (
    ALREADY_SERVING_PROPERTY,
    FARE_FILTER_FOLDED_PROPERTY,
    PUSHED_DESTINATION_PROPERTY,
    PUSHED_PROPERTY,
    ROWS_EXCLUDED_PROPERTY,
    ROWS_READ_PROPERTY,
)
from pipeline.runs import (
    artifact_span,
    evaluated_split,
    fare_filter_text,
    read_best_hyperparameters,
    read_overall_metrics,
    split_names,
    trained_spans,
)
from pipeline.split_sizing import describe_recorded
from taxifare_modules.hparams import TRAINING_RECORD

_RMSE = "root_mean_squared_error"
_MAE = "mean_absolute_error"
_COUNT = "example_count"


@dataclasses.dataclass
class CheckSummary:
    """What a drift or skew check of the run found, and what the run did about it."""

    check: str  # drift / skew
    verdict: str  # drift_found, no_drift, not_compared, ...
    found: bool
    failed_features: list[str]
    report: str | None  # report.html; None when nothing was compared
    verdict_file: str
    note: str  # e.g. which spans were compared, or why nothing was
    on_detect: str  # report / stop (from the config)
    stopped: bool  # the gate stopped the run on this finding


@dataclasses.dataclass
class RunSummary:
    """What a run did, for people (render) and programs (to_json)."""

    components: dict[str, str]  # node id -> COMPLETE / CACHED / FAILED
    durations: dict[str, float]
    run_id: str | None = None  # the pipeline run id (MLMD's pipeline_run context)
    log_path: str | None = None  # the run's full log
    rows_read: int | None = None
    rows_excluded: int | None = None
    # Where the fare range was applied: True in ExampleGen (data.fold_fare_filter), False by
    # FareFilter reading every record, None when not recorded.
    fare_filter_folded: bool | None = None
    # Data lines of the input that repeat an earlier line exactly (the data check counts
    # them before the run); None: not counted (the input is not CSV files).
    duplicate_rows: int | None = None
    examples_uri: str | None = None
    # The newest span (validated, checked for drift, tested) and the spans Transform and the
    # Trainer learned from, oldest first (data.train_spans).
    span: int | None = None
    train_spans: list[int] = dataclasses.field(default_factory=list)
    anomalies: list[Anomaly] = dataclasses.field(default_factory=list)
    eval_rmse: float | None = None
    eval_mae: float | None = None
    eval_count: int | None = None
    baseline_rmse: float | None = None
    blessed: bool | None = None
    blessing_reasons: list[str] = dataclasses.field(default_factory=list)
    pushed_to: str | None = None
    # Blessed, but byte for byte the version already served: not pushed again (its folder).
    already_serving: str | None = None
    model_uri: str | None = None
    # The split the Evaluator's metrics are of (test once there is one, else eval).
    eval_split: str | None = None
    # The Trainer's TensorBoard logs.
    tensorboard_dir: str | None = None
    train_steps: int | None = None
    batch_size: int | None = None
    # What training did (the Trainer's training.json: epochs run, best epoch, examples).
    training: dict | None = None
    # The Tuner's trials and best values, when the run tuned.
    tuning_trials: int | None = None
    tuned_hyperparameters: dict | None = None
    total_seconds: float | None = None
    # Wall seconds from the start of the process (imports and start-up included).
    wall_seconds: float | None = None
    # The run's HTML report and a few of its eval trips as a `predict --instances` file.
    report: str | None = None
    trips_file: str | None = None
    # The commands to look at and serve what the run made, as printed (see next_steps).
    next_steps: list[str] = dataclasses.field(default_factory=list)
    failed_node: str | None = None
    drift: CheckSummary | None = None
    skew: CheckSummary | None = None
    # The MonitoringGate stopped the run (drift or skew found, on_detect: stop).
    monitoring_stopped: bool = False

    def to_json(self) -> dict:
        """A JSON-able dict of the summary."""
        data = dataclasses.asdict(self)
        data["anomalies"] = [dataclasses.asdict(a) for a in self.anomalies]
        return data


def _first(node: NodeExecution | None, key: str):
    if node is None or not node.outputs.get(key):
        return None
    return node.outputs[key][0]


def _blessing_reasons(evaluation_uri: str) -> list[str]:
    """Why TFMA did not bless the candidate: each failed threshold, in words."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    reasons = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            name = failure.metric_key.name
            value = failure.metric_value.double_value.value
            threshold = failure.metric_threshold
            if failure.metric_key.is_diff:
                allowed = threshold.change_threshold.absolute.value
                reasons.append(
                    f"{name} is {value:+.4f} worse than the last blessed model's"
                    f" (allowed: {allowed:+.4f})"
                )
            elif threshold.value_threshold.HasField("upper_bound"):
                bound = threshold.value_threshold.upper_bound.value
                reasons.append(f"{name} {value:.4f} is above the bound {bound:g}")
            else:
                reasons.append(f"{name} {value:.4f} fails {threshold}".replace("\n", " "))
    if result.missing_thresholds:
        reasons.append(f"{len(result.missing_thresholds)} thresholds could not be computed")
    if not result.validation_ok and not reasons:
        reasons.append("the Evaluator's validation failed (see its validations file)")
    return reasons


def _read_json(path: str) -> dict | None:
    """A JSON file of an artifact (any filesystem), or None when it is absent or unreadable."""
    if not fileio.exists(path):
        return None
    try:
        with fileio.open(path) as fh:
            data = json.loads(fh.read())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _tuning(tuner: NodeExecution) -> tuple[int | None, dict | None]:
    """The Tuner's trial count (its tuner_results) and best values (best_hyperparameters)."""
    trials = None
    results = tuner.outputs.get("tuner_results")
    if results:
        path = os.path.join(results[0].uri, "tuner_results.json")
        if fileio.exists(path):
            with fileio.open(path) as fh:
                trials = len(json.loads(fh.read()))
    found = tuner.outputs.get("best_hyperparameters")
    return trials, read_best_hyperparameters(found[0].uri) if found else None


def _check(node: NodeExecution | None, on_detect: str, summary: RunSummary) -> CheckSummary | None:
    verdict = _first(node, "verdict")
    if verdict is None:
        return None
    found = bool(custom_value(verdict, mon.FOUND_PROPERTY))
    failed = str(custom_value(verdict, mon.FAILED_FEATURES_PROPERTY) or "")
    return CheckSummary(
        check=str(custom_value(verdict, mon.CHECK_PROPERTY)),
        verdict=str(custom_value(verdict, mon.VERDICT_PROPERTY)),
        found=found,
        failed_features=[name for name in failed.split(",") if name],
        report=str(custom_value(verdict, mon.REPORT_PROPERTY) or "") or None,
        verdict_file=os.path.join(verdict.uri, "verdict.json"),
        note=str(custom_value(verdict, mon.NOTE_PROPERTY) or ""),
        on_detect=on_detect,
        stopped=found and on_detect == "stop" and summary.monitoring_stopped,
    )


def render_check(
    check: CheckSummary | None, name: str, not_run: str, run_stopped: bool = False
) -> list[str]:
    """The summary lines of one monitoring check."""
    label = f"{name:<13}"
    if check is None:
        return [f"{label}{not_run}"]
    note = f" ({check.note})" if check.note else ""
    if not check.found:
        if check.verdict == mon.NOT_COMPARED:
            word = "nothing compared"
        elif check.verdict == TOO_FEW:
            word = "not judged"
        else:
            word = f"no {name}"
        if name == "drift" and check.verdict not in (mon.NOT_COMPARED, TOO_FEW):
            # The label is not compared across spans: a change of fares shows in the
            # Evaluator's error on the new span and its comparison with the last model.
            note += " (the fare is not compared for drift: see the evaluation line)"
        lines = [f"{label}{word}{note}"]
    else:
        failed = ", ".join(check.failed_features) or "the dataset"
        if check.stopped:
            action = "the run STOPPED before Transform"
        else:
            action = "reported only" + ("" if run_stopped else ", the run went on")
        lines = [
            f"{label}{name.upper()} FOUND in {failed}{note}; {action}"
            f" (monitoring.{name}.on_detect: {check.on_detect})"
        ]
    if check.report:
        lines.append(f"{'':13}report: {check.report}")
    return lines


def build_summary(
    cfg: Config,
    nodes: dict[str, NodeExecution],
    total_seconds: float,
    run_id: str | None = None,
    log_path: str | None = None,
) -> RunSummary:
    """Collects the summary of a run from its executions (of its run id) and their artifacts."""
    summary = RunSummary(
        components={n: e.state for n, e in nodes.items()},
        run_id=run_id,
        log_path=log_path,
        durations={n: e.seconds for n, e in nodes.items()},
        total_seconds=total_seconds,
        train_steps=cfg.training.train_steps,
        batch_size=cfg.training.batch_size,
    )
    failed = [n for n, e in nodes.items() if e.state == "FAILED"]
    summary.failed_node = failed[0] if failed else None

    filtered = _first(nodes.get(dag.FARE_FILTER_ID), "filtered_examples")
    if filtered is not None:
        summary.rows_read = custom_value(filtered, ROWS_READ_PROPERTY)
        summary.rows_excluded = custom_value(filtered, ROWS_EXCLUDED_PROPERTY)
        folded = custom_value(filtered, FARE_FILTER_FOLDED_PROPERTY)
        summary.fare_filter_folded = None if folded is None else bool(folded)
        summary.examples_uri = filtered.uri
        summary.span = artifact_span(filtered)
    summary.train_spans = trained_spans(nodes)

    anomalies = _first(nodes.get(dag.EXAMPLE_VALIDATOR_ID), "anomalies")
    if anomalies is not None:
        summary.anomalies = read_anomalies(anomalies.uri, split_names(anomalies))

    model = _first(nodes.get(dag.TRAINER_ID), "model")
    summary.model_uri = model.uri if model is not None else None
    model_run = _first(nodes.get(dag.TRAINER_ID), "model_run")
    if model_run is not None:
        summary.tensorboard_dir = os.path.join(model_run.uri, "logs")
        summary.training = _read_json(os.path.join(model_run.uri, TRAINING_RECORD))
    tuner = nodes.get(dag.TUNER_ID)
    if tuner is not None:
        summary.tuning_trials, summary.tuned_hyperparameters = _tuning(tuner)

    evaluation = _first(nodes.get(dag.EVALUATOR_ID), "evaluation")
    if evaluation is not None:
        metrics = read_overall_metrics(evaluation.uri)
        candidate = {
            name: v for (name, model_name), v in metrics.items() if model_name != "baseline"
        }
        summary.eval_rmse = candidate.get(_RMSE)
        summary.eval_mae = candidate.get(_MAE)
        count = candidate.get(_COUNT)
        summary.eval_count = int(count) if count is not None else None
        summary.baseline_rmse = metrics.get((_RMSE, "baseline"))
        summary.blessing_reasons = _blessing_reasons(evaluation.uri)
        summary.eval_split = evaluated_split(nodes[dag.EVALUATOR_ID])
    blessing = _first(nodes.get(dag.EVALUATOR_ID), "blessing")
    if blessing is not None:
        summary.blessed = bool(custom_value(blessing, "blessed"))

    summary.monitoring_stopped = summary.components.get(dag.MONITORING_GATE_ID) == "FAILED"
    summary.drift = _check(nodes.get(dag.DRIFT_CHECK_ID), cfg.monitoring.drift.on_detect, summary)
    summary.skew = _check(nodes.get(dag.SKEW_CHECK_ID), cfg.monitoring.skew.on_detect, summary)

    pushed = _first(nodes.get(dag.PUSHER_ID), "pushed_model")
    if pushed is not None and custom_value(pushed, PUSHED_PROPERTY):
        summary.pushed_to = str(custom_value(pushed, PUSHED_DESTINATION_PROPERTY))
    elif pushed is not None:
        summary.already_serving = custom_value(pushed, ALREADY_SERVING_PROPERTY)
    return summary


def _count(n: int, noun: str) -> str:
    """`1 round`, `3 rounds`."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def render_training(t: dict, tuning_trials: int | None = None) -> list[str]:
    """The summary lines of the Trainer's record: the split it learned from and why, and
    how long it trained (epochs, or rounds of examples at scale) and why it stopped."""
    lines = []
    split = describe_recorded(t.get("data_split"))
    if split:
        lines.append(f"split        {split}")
    tuned = f"; hyperparameters from {tuning_trials} tuning trials" if tuning_trials else ""
    if t.get("validation") == "examples":
        lines.append(
            f"training     {_count(t['epochs_run'], 'round')} of {t['round_examples']:,} examples"
            f" ({t['steps_per_epoch']:,} steps), validated after each: a pass over the"
            f" {t['train_examples']:,} train examples is longer (training.validation_examples)"
        )
        lines.append(
            f"             best weights: round {t['best_epoch']}"
            f" ({t['examples_at_best']:,} examples), {t['examples_trained']:,} examples"
            f" trained; patience {t['patience_examples']:,} examples{tuned}"
        )
    else:
        lines.append(
            f"training     {_count(t['epochs_run'], 'epoch')} of {t['steps_per_epoch']:,} steps"
            f" (best weights: epoch {t['best_epoch']}),"
            f" {t['examples_trained']:,} examples{tuned}"
        )
    return lines


def render(summary: RunSummary, cfg: Config, config_path: str | None = None) -> str:
    """The closing summary a person reads."""
    lines = ["", "taxifare run summary", "--------------------"]
    if summary.run_id:
        lines.append(f"run          {summary.run_id}   (log: {summary.log_path})")
    cached = sum(1 for s in summary.components.values() if s == "CACHED")
    lines.append(
        f"components   {len(summary.components)} ran"
        + (f" ({cached} served from cache)" if cached else "")
    )
    if summary.rows_read is not None:
        lines.append(
            f"data         {summary.rows_read:,} trips read, {summary.rows_excluded:,} excluded"
            f" (fare <= {cfg.data.min_fare:g} or > {cfg.data.max_fare:g})"
        )
        if summary.fare_filter_folded is not None:
            lines.append(f"{'':13}fare filter: {fare_filter_text(summary.fare_filter_folded)}")
    if summary.duplicate_rows:
        share = summary.duplicate_rows / max(summary.rows_read or 0, 1)
        warn = "WARNING: " if share > cfg.data.warn_duplicate_share else ""
        lines.append(
            f"{'':13}{warn}{summary.duplicate_rows:,} rows ({share:.1%}) repeat another row"
            f" exactly (data.warn_duplicate_share: {cfg.data.warn_duplicate_share:g})"
        )
    if len(summary.train_spans) > 1:
        learned = ", ".join(str(s) for s in summary.train_spans)
        lines.append(f"spans        learned from {learned}; tested on {summary.span}")
    elif summary.span:  # 0: the input has no spans
        lines.append(f"span         {summary.span}")
    lines.append(f"anomalies    {len(summary.anomalies)}")
    stopped = summary.monitoring_stopped
    lines += render_check(
        summary.drift, "drift", "not checked (the run stopped before it)", stopped
    )
    lines += render_check(
        summary.skew,
        "skew",
        "not checked (monitoring.skew.serving_logs is not set)"
        if cfg.monitoring.skew.serving_logs is None
        else "not checked (the run stopped before it)",
        stopped,
    )
    if summary.eval_rmse is not None:
        base = (
            f" (last blessed model: RMSE ${summary.baseline_rmse:.2f})"
            if summary.baseline_rmse is not None
            else " (no earlier blessed model)"
        )
        lines.append(
            f"evaluation   RMSE ${summary.eval_rmse:.2f}, MAE ${summary.eval_mae:.2f}"
            f" on {summary.eval_count:,} test trips{base}"
        )
    if summary.training:
        lines += render_training(summary.training, summary.tuning_trials)
    if summary.blessed is not None:
        if summary.blessed:
            lines.append(
                f"blessed      yes: RMSE <= ${cfg.evaluation.max_rmse:g}"
                + (" and not worse than the last blessed model" if summary.baseline_rmse else "")
            )
        else:
            lines.append(
                "blessed      NO: " + "; ".join(summary.blessing_reasons or ["see Evaluator"])
            )
    if summary.pushed_to:
        lines.append(f"pushed to    {summary.pushed_to}")
    elif summary.already_serving:
        lines.append(
            f"pushed to    nothing new: this model is already the serving version"
            f" ({summary.already_serving})"
        )
    elif summary.blessed is not None:
        lines.append(f"pushed to    nothing pushed; serving dir unchanged: {cfg.serving_model_dir}")
    if summary.model_uri:
        lines.append(f"model        {summary.model_uri}")
    lines.append(f"artifacts    {cfg.pipeline_root}   (MLMD: {cfg.metadata_path})")
    if summary.report:
        lines.append(f"report       {summary.report}")
    if summary.wall_seconds is not None:
        pipeline_time = (
            f" ({summary.total_seconds:.0f}s in the pipeline)"
            if summary.total_seconds is not None
            else ""
        )
        lines.append(f"total time   {summary.wall_seconds:.0f}s{pipeline_time}")
    elif summary.total_seconds is not None:
        lines.append(f"total time   {summary.total_seconds:.0f}s")
    lines += summary.next_steps or next_steps(summary, cfg, config_path)
    return "\n".join(lines)


def next_steps(summary: RunSummary, cfg: Config, config_path: str | None = None) -> list[str]:
    """The commands to look at and serve what the run made, runnable as printed."""
    from pipeline.cli_args import cli_command
    from pipeline.cli_args import shell_quote as q

    taxifare = cli_command()
    lines: list[str] = []
    if summary.tensorboard_dir:
        lines += [
            "",
            "training     curves in TensorBoard:",
            f"               {cli_command('tensorboard')} --logdir {q(summary.tensorboard_dir)}",
        ]
    serving = summary.pushed_to or summary.already_serving
    if not serving:
        return lines
    url = f"http://127.0.0.1:{cfg.serving.port}"
    request_log = os.path.join(cfg.root, "request_log")
    config = f" --config {q(config_path)}" if config_path else ""
    lines += [
        "",
        "next         serve it over REST (TF Serving's API), in a shell of its own:",
        f"               {taxifare} serve{config} --model-dir {q(cfg.serving_model_dir)}"
        f" --log-dir {q(request_log)} --port {cfg.serving.port}",
        "             ask it for fares:",
        f"               {taxifare} predict --url {url} --instances"
        f" {q(summary.trips_file or 'trips.json')}",
        "             then compare the served traffic with the training data:",
        f"               {taxifare} skew --serving-logs {q(request_log)} --pipeline-root"
        f" {q(cfg.root)} --out {q(os.path.join(cfg.root, 'skew'))}",
    ]
    return lines


def run_dir(cfg: Config, run_id: str) -> str:
    """The folder of one run's own files (its summary and its log)."""
    return os.path.join(cfg.root, "runs", run_id)


def _write_json(path: str, data: dict) -> None:
    # Beside, then renamed: a reader sees the previous summary or this one, never half.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
    os.replace(temporary, path)


def write_summary(summary: RunSummary, cfg: Config) -> str:
    """Writes `<root>/runs/<run id>/summary.json` and `<root>/summary.json` (the latest run).

    Returns:
      The run's own summary file.
    """
    data = summary.to_json()
    own = os.path.join(run_dir(cfg, summary.run_id or "unknown"), "summary.json")
    _write_json(own, data)
    _write_json(os.path.join(cfg.root, "summary.json"), data)
    return own
