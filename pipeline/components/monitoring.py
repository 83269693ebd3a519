# This module must not use `from __future__ import annotations`: TFX reads the annotations.
"""DriftCheck, SkewCheck and MonitoringGate: drift and skew as pipeline steps.

DriftCheck compares the train split of this run's span with the previous span's. Its verdict
artifact keeps a copy of the statistics it judged (and of the baseline it used), and the
check records where its verdict is in a pointer file at a fixed place under the pipeline root
(`baseline`, see dag.drift_baseline_dir): the next run reads the previous verdict from there.
A Resolver cannot find it on Vertex: the compiled query of a custom type asks for
`schema_title="tfx.Artifact"`, while Vertex records the verdicts under their own title.

SkewCheck compares the request log of the served model with this run's training statistics.
The log is a folder of `taxifare serve` logs or, on Vertex, the endpoint's request-response
logging table (`bq://project.dataset.table`), of which it reads a bounded window of rows.

Both always succeed when the check could be made, recording the verdict (JSON), the HTML
report and custom properties in MLMD; MonitoringGate then stops the run when a check found
something and the config says `stop`. The split mirrors ExampleValidator and AnomalyGate:
a failed execution records no output artifacts, so the verdict must come from a step that
succeeds.
"""

import json
import tempfile
from typing import Any, NamedTuple

import apache_beam as beam
from tfx.dsl.component.experimental.annotations import (
    BeamComponentParameter,
    InputArtifact,
    OutputArtifact,
    Parameter,
)
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact

from pipeline.monitoring.report import REPORT_FILE, VERDICT_FILE, write_outputs
from pipeline.monitoring.stats import join
from taxifare_modules import features as f

# Custom properties of a verdict artifact (read by the run summary).
CHECK_PROPERTY = "check"
VERDICT_PROPERTY = "verdict"
FOUND_PROPERTY = "found"
FAILED_FEATURES_PROPERTY = "failed_features"
REPORT_PROPERTY = "report"
NOTE_PROPERTY = "note"
SPAN_PROPERTY = "span"
BASELINE_SPAN_PROPERTY = "baseline_span"
# The previous verdict the pointer named when the check ran (absent for the first check).
PREVIOUS_VERDICT_PROPERTY = "previous_verdict"

# The pointer file in the baseline folder: {"uri", "span", "baseline_span"} of the latest
# verdict. Written whole under another name, then renamed over the old one.
LATEST_VERDICT_FILE = "latest_verdict.json"

# The verdict when there was nothing to compare (first span, empty request log).
NOT_COMPARED = "not_compared"
# Inside a DriftVerdict: the statistics judged, and the baseline they were judged against.
STATISTICS_DIR = "statistics"
BASELINE_DIR = "baseline_statistics"
# Inside a SkewVerdict: the statistics of the request log it judged.
SERVING_STATISTICS_DIR = "serving_statistics"
# Inside a SkewVerdict: the request log files the statistics pass read, when it could not
# read the log in place (rows of a BigQuery table, files cut at an incomplete last record).
SERVING_LOG_DIR = "serving_log"
# Custom property of a SkewVerdict read from BigQuery: the query that read the rows.
QUERY_PROPERTY = "query"

_STATS_FILE = "FeatureStats.pb"
_SCHEMA_FILE = "schema.pbtxt"
_TRAIN_SPLIT = "Split-train"


class DriftVerdict(Artifact):
    """The drift check of one run: verdict.json, report.html and the statistics it judged."""

    # An import path of the class (see pipeline/__init__.py): TFX's Vertex entrypoint imports
    # a custom type by its name, and the Vertex compiler wants `<module>.<Class>`.
    TYPE_NAME = "pipeline.DriftVerdict"


class SkewVerdict(Artifact):
    """The skew check of one run: verdict.json, report.html and the serving statistics."""

    TYPE_NAME = "pipeline.SkewVerdict"


def artifact_span(artifact: Artifact) -> int:
    """An Examples artifact's span (ExampleGen records it as a custom property)."""
    if artifact.has_custom_property(SPAN_PROPERTY):
        return int(artifact.get_int_custom_property(SPAN_PROPERTY))
    return int(artifact.span or 0)


class DriftOrSkewFoundError(RuntimeError):
    """A check found drift or skew and the config says stop; the message says where."""


def _train_stats_file(statistics_uri: str) -> str:
    return join(statistics_uri, _TRAIN_SPLIT, _STATS_FILE)


def _copy(source: str, folder: str) -> str:
    """Copies a statistics file into `folder` (any filesystem); returns the copy's path."""
    fileio.makedirs(folder)
    target = join(folder, _STATS_FILE)
    fileio.copy(source, target, overwrite=True)
    return target


def _record(artifact: Artifact, verdict: dict[str, Any]) -> None:
    """Writes verdict.json (and report.html when compared) and sets the custom properties."""
    if verdict["verdict"] == NOT_COMPARED:
        fileio.makedirs(artifact.uri)
        with fileio.open(join(artifact.uri, VERDICT_FILE), "w") as fh:
            fh.write(json.dumps(verdict, indent=2) + "\n")
        report = ""
    else:
        _, report = write_outputs(verdict, artifact.uri)
    artifact.set_string_custom_property(CHECK_PROPERTY, verdict["check"])
    artifact.set_string_custom_property(VERDICT_PROPERTY, verdict["verdict"])
    artifact.set_int_custom_property(FOUND_PROPERTY, int(verdict["found"]))
    artifact.set_string_custom_property(
        FAILED_FEATURES_PROPERTY, ",".join(verdict.get("failed_features", []))
    )
    artifact.set_string_custom_property(REPORT_PROPERTY, report)
    artifact.set_string_custom_property(NOTE_PROPERTY, "; ".join(verdict.get("notes", [])))


def not_compared(check: str, note: str) -> dict[str, Any]:
    """The verdict of a check that had nothing to compare; `note` says why."""
    return {
        "check": check,
        "verdict": NOT_COMPARED,
        "found": False,
        "failed_features": [],
        "notes": [note],
    }


def _schema(schema_uri: str) -> Any:
    import tensorflow_data_validation as tfdv

    return tfdv.load_schema_text(join(schema_uri, _SCHEMA_FILE))


def choose_baseline(
    span: int, previous_span: int | None, previous_has_baseline: bool, baseline_span: int | None
) -> tuple[str | None, str]:
    """Which statistics of the latest earlier DriftVerdict are the previous span's.

    Returns:
      (STATISTICS_DIR or BASELINE_DIR, or None when there is no earlier span; a note).
    """
    if previous_span is None:
        return None, f"span {span} is the first span this pipeline checked: no earlier span"
    if previous_span < span:
        return STATISTICS_DIR, f"span {span} compared with span {previous_span}"
    if previous_span == span and previous_has_baseline:
        return BASELINE_DIR, f"span {span} compared with span {baseline_span}"
    if previous_span == span:
        return None, f"span {span} is the first span this pipeline checked: no earlier span"
    return None, (
        f"span {span} is older than the last span checked ({previous_span}): no earlier span"
        " to compare with"
    )


class PreviousVerdict(NamedTuple):
    """What the pointer file says of the latest earlier drift verdict."""

    uri: str
    span: int
    baseline_span: int | None


def read_latest_verdict(baseline: str) -> PreviousVerdict | None:
    """The latest verdict recorded in `baseline`, or None before the first check."""
    pointer = join(baseline, LATEST_VERDICT_FILE)
    if not fileio.exists(pointer):
        return None
    with fileio.open(pointer, "r") as fh:
        text = fh.read()
    try:
        data = json.loads(text)
        return PreviousVerdict(
            str(data["uri"]),
            int(data["span"]),
            None if data.get("baseline_span") is None else int(data["baseline_span"]),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{pointer}: not a drift baseline pointer ({e}); delete it to start the drift"
            " comparison afresh with the next span"
        ) from e


def write_latest_verdict(baseline: str, latest: PreviousVerdict) -> None:
    """Points `baseline` at `latest`: written beside, then renamed over the old pointer."""
    fileio.makedirs(baseline)
    pointer = join(baseline, LATEST_VERDICT_FILE)
    partial = pointer + ".partial"
    with fileio.open(partial, "w") as fh:
        fh.write(json.dumps(latest._asdict(), indent=2) + "\n")
    fileio.rename(partial, pointer, overwrite=True)


@component
def DriftCheck(  # noqa: N802 (a TFX component is named like a class)
    examples: InputArtifact[standard_artifacts.Examples],
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    schema: InputArtifact[standard_artifacts.Schema],
    verdict: OutputArtifact[DriftVerdict],
    thresholds: Parameter[str],
    baseline: Parameter[str],
) -> None:
    """Compares this span's training statistics with the previous span's.

    `baseline` is the folder (any filesystem) whose pointer file names the latest earlier
    verdict; this check's verdict becomes the latest once it is written.
    """
    from pipeline.monitoring.compare import DRIFT, Side, compare
    from pipeline.monitoring.stats import load_statistics_file
    from pipeline.monitoring.thresholds import thresholds_from_json

    # ExampleGen's artifact carries the span (what FareFilter writes does not).
    span = artifact_span(examples)
    current_file = _train_stats_file(statistics.uri)
    previous = read_latest_verdict(baseline)
    previous_span = None
    previous_baseline = False
    baseline_span = None
    if previous is not None:
        verdict.set_string_custom_property(PREVIOUS_VERDICT_PROPERTY, previous.uri)
        previous_span = previous.span
        if previous.baseline_span is not None:
            baseline_span = previous.baseline_span
            previous_baseline = fileio.exists(join(previous.uri, BASELINE_DIR, _STATS_FILE))
    chosen, note = choose_baseline(span, previous_span, previous_baseline, baseline_span)
    # This span's statistics travel with the verdict: the next span's baseline.
    _copy(current_file, join(verdict.uri, STATISTICS_DIR))
    verdict.set_int_custom_property(SPAN_PROPERTY, span)
    if chosen is None:
        _record(verdict, not_compared(DRIFT, note))
        write_latest_verdict(baseline, PreviousVerdict(verdict.uri, span, None))
        return
    baseline_file = join(previous.uri, chosen, _STATS_FILE)
    if not fileio.exists(baseline_file):
        raise FileNotFoundError(
            f"the previous drift verdict ({join(baseline, LATEST_VERDICT_FILE)} points to"
            f" {previous.uri}) has no statistics at {baseline_file}; delete the pointer to"
            " start the drift comparison afresh"
        )
    used_span = previous_span if chosen == STATISTICS_DIR else baseline_span
    _copy(baseline_file, join(verdict.uri, BASELINE_DIR))
    verdict.set_int_custom_property(BASELINE_SPAN_PROPERTY, used_span)
    result = compare(
        DRIFT,
        Side(load_statistics_file(baseline_file), f"span {used_span} ({baseline_file})"),
        Side(load_statistics_file(current_file), f"span {span} ({current_file})"),
        _schema(schema.uri),
        thresholds_from_json(thresholds),
        f.DRIFT_KEYS,
    )
    result["notes"] = [note, *result.get("notes", [])]
    _record(verdict, result)
    write_latest_verdict(baseline, PreviousVerdict(verdict.uri, span, used_span))


@component(use_beam=True)
def SkewCheck(  # noqa: N802 (a TFX component is named like a class)
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    schema: InputArtifact[standard_artifacts.Schema],
    verdict: OutputArtifact[SkewVerdict],
    serving_logs: Parameter[str],
    log_fingerprint: Parameter[str],
    thresholds: Parameter[str],
    model: InputArtifact[standard_artifacts.Model] = None,
    beam_pipeline: BeamComponentParameter[beam.Pipeline] = None,
    window_days: Parameter[int] = 7,
    max_rows: Parameter[int] = 50000,
    query_labels: Parameter[str] = "{}",
) -> None:
    """Compares the request log with this run's training statistics.

    `model` is the latest blessed model (the one being served, as far as this pipeline
    knows): when given, what it computes (the trip distance from its Transform graph, and
    the predicted fare) is compared too, against what it computed on its eval split.
    `log_fingerprint` (the log's files and sizes when the run started) is there for the
    cache: a run re-checks when the log changed, and reuses the verdict when it did not.
    For a `bq://` table, the rows logged in the `window_days` days before the step ran are
    read, newest first, at most `max_rows` of them (vertex_log.window_query), by a query job
    carrying `query_labels` (a JSON object: the config's vertex.labels).
    """
    del log_fingerprint
    from tfx.utils import path_utils

    from pipeline.monitoring.compare import SKEW, Side, compare
    from pipeline.monitoring.stats import (
        InputError,
        beam_can_read,
        derived_reference_statistics,
        derived_serving_statistics,
        load_statistics_file,
        request_log_files,
        request_log_inputs,
        serving_statistics,
    )
    from pipeline.monitoring.thresholds import thresholds_from_json
    from pipeline.monitoring.vertex_log import BQ_PREFIX, last_days

    training_file = _train_stats_file(statistics.uri)
    from_table = serving_logs.startswith(BQ_PREFIX)
    if not from_table:
        # Fails the step when the configured log is not there at all (a typo in the config).
        request_log_files(serving_logs)
    source = f"request log {serving_logs}"
    with tempfile.TemporaryDirectory(prefix="taxifare-skew-") as workdir:
        if from_table:
            window = last_days(window_days, max_rows, labels=json.loads(query_labels))
            log_dir, source, empty = _read_table(
                serving_logs, workdir, window, model is not None, verdict
            )
        else:
            log_dir, empty = serving_logs, None
            try:
                request_log_inputs(serving_logs, workdir)
            except InputError as e:
                if "holds no logged requests" not in str(e):
                    raise
                empty = f"{e}: nothing to compare yet"
        if empty is not None:
            # A log with no requests yet (no model serving yet) is nothing to compare.
            _record(verdict, not_compared(SKEW, empty))
            return
        options = beam_pipeline.options if beam_pipeline is not None else None
        # TFDV writes the statistics to the artifact: Dataflow's workers cannot write to
        # this container's temporary folder. For the same reason the log files it reads,
        # when they must be rewritten first, are written to the artifact too, never to this
        # container's disk.
        stats_dir = join(verdict.uri, SERVING_STATISTICS_DIR)
        fileio.makedirs(stats_dir)
        # TFDV's output is a TFRecord file of the statistics; what is kept is the binary
        # proto StatisticsGen writes (FeatureStats.pb), which load_statistics_file reads.
        tfdv_output = join(stats_dir, "statistics.tfrecord")
        beam_writes = beam_can_read(tfdv_output)
        serving = serving_statistics(
            log_dir,
            workdir,
            pipeline_options=options,
            output_path=tfdv_output if beam_writes else None,
            staging=join(verdict.uri, SERVING_LOG_DIR),
        )
        with fileio.open(join(stats_dir, _STATS_FILE), "wb") as fh:
            fh.write(serving.SerializeToString())
        if beam_writes:
            fileio.remove(tfdv_output)
        derived = None
        notes = []
        if model is not None:
            model_dir = path_utils.serving_model_path(model.uri)
            reference = derived_reference_statistics(model_dir, workdir)
            if reference is None:
                notes.append(
                    f"the served model ({model_dir}) records no reference: only the"
                    " raw fields were compared"
                )
            else:
                derived = (
                    Side(reference, f"the model's eval split ({model_dir})"),
                    Side(derived_serving_statistics(log_dir, model_dir, workdir), source),
                )
    result = compare(
        SKEW,
        Side(load_statistics_file(training_file), f"this run's training data ({training_file})"),
        Side(serving, source),
        _schema(schema.uri),
        thresholds_from_json(thresholds),
        f.SKEW_KEYS,
        derived=derived,
    )
    if notes:
        result["notes"] = notes + result.get("notes", [])
    _record(verdict, result)


def _read_table(
    table: str,
    workdir: str,
    window: Any,
    model_served: bool,
    verdict: Artifact,
) -> tuple[str, str, str | None]:
    """Reads a window of an endpoint's request-response logging table into a request log.

    Returns the local request log folder, how the verdict names its source, and a note when
    there is nothing to compare (no rows in the window; no table before any model was
    served, since Vertex creates the table at the first deploy).

    Raises:
      InputError: the table is missing although a model is served, is not a logging table,
        cannot be read, or its rows are malformed.
    """
    import os

    from pipeline.monitoring.stats import InputError
    from pipeline.monitoring.vertex_log import convert_vertex_log, window_query

    query = window_query(table, window)
    verdict.set_string_custom_property(QUERY_PROPERTY, query)
    since = window.since.strftime("%Y-%m-%d %H:%M UTC")
    source = (
        f"Vertex request-response log {table} (logged since {since}, newest"
        f" {window.max_rows:,} requests at most)"
    )
    log_dir = os.path.join(workdir, "vertex-log")
    try:
        convert_vertex_log(table, log_dir, window)
    except InputError as e:
        text = str(e)
        if "holds no logged requests" in text:
            return log_dir, source, f"{table} logged no requests since {since}: nothing to compare"
        if "no such BigQuery table" in text and not model_served:
            return log_dir, source, f"{text}: no model served yet, nothing to compare"
        raise
    return log_dir, source, None


def _finding(artifact: Artifact) -> str | None:
    """'drift in a, b (report: ...)' when the verdict found something, else None."""
    if not artifact.get_int_custom_property(FOUND_PROPERTY):
        return None
    check = artifact.get_string_custom_property(CHECK_PROPERTY)
    failed = artifact.get_string_custom_property(FAILED_FEATURES_PROPERTY) or "(dataset)"
    report = artifact.get_string_custom_property(REPORT_PROPERTY) or join(artifact.uri, REPORT_FILE)
    return f"{check} in {failed.replace(',', ', ')} (report: {report})"


@component
def MonitoringGate(  # noqa: N802 (a TFX component is named like a class)
    drift: InputArtifact[DriftVerdict],
    stop_on_drift: Parameter[int],
    stop_on_skew: Parameter[int],
    skew: InputArtifact[SkewVerdict] = None,
) -> None:
    """Fails, naming what was found and where the reports are, when a `stop` check found it."""
    stops = []
    for artifact, stop in ((drift, stop_on_drift), (skew, stop_on_skew)):
        if artifact is None or not stop:
            continue
        finding = _finding(artifact)
        if finding:
            stops.append(finding)
    if stops:
        raise DriftOrSkewFoundError(
            "found " + "; ".join(stops) + "; stopping before Transform (monitoring.*.on_detect"
            " is stop): nothing is trained or pushed"
        )
