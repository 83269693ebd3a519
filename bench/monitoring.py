"""Monitoring benchmark: `taxifare skew` on 100,000 logged requests, next to TFDV alone.

1. A request log of :data:`REQUESTS` instances is written in the server's own format
   (``pipeline.serving.request_log``: ``RequestLog`` and ``log_example``), real trips from
   the TFX example's sample CSV, cycling.
2. The training side is TFDV's statistics of the same sample CSV (computed once, not timed).
3. Timed, in this process, alternating, :data:`ROUNDS` rounds each after an untimed warm-up:
   our whole skew check, ``pipeline.monitoring.cli.cmd_skew`` (what ``taxifare skew`` runs:
   reading the log, one TFDV statistics pass, the comparison, verdict.json and report.html);
   ``tfdv.generate_statistics_from_tfrecord`` over the same files with default options (every
   logged field); and the same TFDV call restricted to the model's raw fields, the statistics
   pass our check makes.

The ratios of the fastest round of each are what our check costs against TFDV's own pass,
and above the statistics pass it contains.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

REQUESTS = 100_000
ROUNDS = 3
MODEL_VERSION = 1


class MonitoringBenchError(RuntimeError):
    """The skew check could not be run on the benchmark's log."""


@dataclass(frozen=True)
class MonitoringRun:
    """What the monitoring benchmark measured.

    Attributes:
        requests: Instances in the request log.
        log_files: Its files.
        log_bytes: Their total size.
        write_seconds: Time to write the log with the server's writer.
        check_seconds: Each timed round of our skew check.
        tfdv_seconds: Each timed round of TFDV's statistics pass alone (every field).
        tfdv_raw_seconds: Each timed round of TFDV's pass on the model's raw fields only.
        extra_seconds: Each round's time of the check's own work around the statistics pass
            (finding and checking the log files, the comparison, verdict.json and report.html),
            timed piece by piece: the overhead without the pass's run-to-run noise.
        exit_code: What the skew check returned (0 nothing found, 5 skew found).
        failed_features: The features it flagged.
    """

    requests: int
    log_files: int
    log_bytes: int
    write_seconds: float
    check_seconds: list[float]
    tfdv_seconds: list[float]
    tfdv_raw_seconds: list[float]
    extra_seconds: list[float]
    exit_code: int
    failed_features: list[str]

    @property
    def ratio(self) -> float:
        """Fastest skew check over fastest TFDV pass (every field)."""
        return min(self.check_seconds) / min(self.tfdv_seconds)

    @property
    def median_ratios(self) -> tuple[float, float]:
        """Median skew check over median TFDV pass: every field, and the same fields."""
        check = statistics.median(self.check_seconds)
        return (
            check / statistics.median(self.tfdv_seconds),
            check / statistics.median(self.tfdv_raw_seconds),
        )

    @property
    def overhead_ratio(self) -> float:
        """Fastest skew check over fastest TFDV pass on the same fields as the check."""
        return min(self.check_seconds) / min(self.tfdv_raw_seconds)


def write_request_log(log_dir: Path, data_csv: Path, requests: int | None = None) -> int:
    """Writes `requests` (default REQUESTS) real trips, cycling, as the server logs them.

    Returns:
        The number of records written.
    """
    requests = REQUESTS if requests is None else requests
    from pipeline.serving.client import csv_row_to_instance
    from pipeline.serving.request_log import RequestLog, log_example

    with open(data_csv, newline="") as fh:
        trips = [csv_row_to_instance(row) for row in csv.DictReader(fh)]
    log = RequestLog(str(log_dir))
    batch = 1000  # the server writes one batch of records per call
    for start in range(0, requests, batch):
        log.write(
            log_example(
                trips[i % len(trips)],
                10.0,
                MODEL_VERSION,
                f"bench-{i // 50}",
                1_700_000_000_000 + i,
                i % 50,
                "serving_default",
            )
            for i in range(start, min(start + batch, requests))
        )
    log.close()
    return log.records_written


def _training_stats(data_csv: Path, workdir: Path) -> Path:
    import tensorflow_data_validation as tfdv

    path = workdir / "training_stats.pb"
    from pipeline.monitoring.stats_options import monitoring_stats_options

    stats = tfdv.generate_statistics_from_csv(
        str(data_csv), stats_options=monitoring_stats_options()
    )
    path.write_bytes(stats.SerializeToString())
    return path


def _skew_args(log_dir: Path, stats_file: Path, out_dir: Path) -> argparse.Namespace:
    return argparse.Namespace(
        serving_logs=str(log_dir),
        pipeline_root=None,
        training_stats=str(stats_file),
        model=None,
        schema=None,
        config=None,
        out=str(out_dir),
        verbose=False,
    )


def _time_check(log_dir: Path, stats_file: Path, out_dir: Path) -> tuple[float, int]:
    from pipeline.monitoring.cli import EXIT_FOUND, EXIT_OK, cmd_skew

    start = time.perf_counter()
    code = cmd_skew(_skew_args(log_dir, stats_file, out_dir))
    seconds = time.perf_counter() - start
    if code not in (EXIT_OK, EXIT_FOUND):
        raise MonitoringBenchError(f"the skew check exited with {code}")
    return seconds, code


def _time_tfdv(pattern: str, raw_fields_only: bool = False) -> float:
    import tensorflow_data_validation as tfdv

    from taxifare_modules import features as f

    options = tfdv.StatsOptions()
    if raw_fields_only:
        options = tfdv.StatsOptions(feature_allowlist=list(f.RAW_FEATURE_KEYS))
    start = time.perf_counter()
    tfdv.generate_statistics_from_tfrecord(data_location=pattern, stats_options=options)
    return time.perf_counter() - start


def _time_extra(log_dir: Path, stats_file: Path, out_dir: Path) -> float:
    """The skew check's own work around its statistics pass, timed piece by piece."""
    from pipeline.monitoring import stats
    from pipeline.monitoring.cli import SKEW_KEYS, _curated_schema_file, _load_schema
    from pipeline.monitoring.compare import SKEW, Side, compare
    from pipeline.monitoring.report import write_outputs
    from pipeline.monitoring.thresholds import default_thresholds

    workdir = out_dir / "work"
    workdir.mkdir(parents=True)
    start = time.perf_counter()
    stats.request_log_inputs(str(log_dir), str(workdir))
    seconds = time.perf_counter() - start
    serving = stats.serving_statistics(str(log_dir), str(workdir))  # untimed: the pass
    start = time.perf_counter()
    verdict = compare(
        SKEW,
        Side(stats.load_statistics_file(str(stats_file)), "training"),
        Side(serving, "serving"),
        _load_schema(_curated_schema_file()),
        default_thresholds(SKEW_KEYS),
        SKEW_KEYS,
    )
    write_outputs(verdict, str(out_dir))
    return seconds + time.perf_counter() - start


def run(data_csv: Path, workspace: Path, progress=print) -> MonitoringRun:
    """Writes the log, then times the skew check and TFDV's pass on it, alternating."""
    import json

    from pipeline.env import configure_environment
    from pipeline.serving.request_log import LOG_SUFFIX

    configure_environment(verbose=False)
    log_dir = workspace / "request_log"
    progress(f"writing a request log of {REQUESTS:,} real trips ...")
    start = time.perf_counter()
    written = write_request_log(log_dir, data_csv)
    write_seconds = time.perf_counter() - start
    files = sorted(log_dir.glob(f"*{LOG_SUFFIX}"))
    pattern = str(log_dir / f"*{LOG_SUFFIX}")
    stats_file = _training_stats(data_csv, workspace)
    progress("warming up (one untimed pass of each) ...")
    _time_tfdv(pattern)
    _time_check(log_dir, stats_file, workspace / "warm-up")
    check_seconds, tfdv_seconds, raw_seconds, extra_seconds, code = [], [], [], [], 0
    for i in range(ROUNDS):
        tfdv_seconds.append(_time_tfdv(pattern))
        seconds, code = _time_check(log_dir, stats_file, workspace / f"check-{i}")
        check_seconds.append(seconds)
        raw_seconds.append(_time_tfdv(pattern, raw_fields_only=True))
        extra_seconds.append(_time_extra(log_dir, stats_file, workspace / f"extra-{i}"))
        progress(
            f"round {i + 1}/{ROUNDS}: skew check {seconds:.1f} s, TFDV statistics "
            f"{tfdv_seconds[-1]:.1f} s (raw fields only {raw_seconds[-1]:.1f} s); the "
            f"check's own work around its pass {extra_seconds[-1]:.2f} s"
        )
    with open(workspace / f"check-{ROUNDS - 1}" / "verdict.json") as fh:
        failed = json.load(fh)["failed_features"]
    return MonitoringRun(
        requests=written,
        log_files=len(files),
        log_bytes=sum(os.path.getsize(p) for p in files),
        write_seconds=write_seconds,
        check_seconds=check_seconds,
        tfdv_seconds=tfdv_seconds,
        tfdv_raw_seconds=raw_seconds,
        extra_seconds=extra_seconds,
        exit_code=code,
        failed_features=failed,
    )


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.1f} s" for v in values)


def markdown_section(run: MonitoringRun | None, note: str = "") -> list[str]:
    """The "Monitoring" section of BENCHMARKS.md."""
    from taxifare_modules import features as f

    lines = ["## Monitoring (skew check)", ""]
    if run is None:
        return [*lines, f"Not measured: {note or 'skipped'}."]
    per_request_ms = min(run.check_seconds) / run.requests * 1000
    lines += [
        f"`taxifare skew` on a request log of {run.requests:,} logged instances "
        f"({run.log_files} file(s), {run.log_bytes / 1024**2:.1f} MiB), against TFDV's own "
        "`generate_statistics_from_tfrecord` on the same files, in the same process.",
        "",
        "| Figure | Fastest | Rounds |",
        "| --- | --- | --- |",
        f"| Our skew check (`cmd_skew`: log, statistics, comparison, verdict, report) "
        f"| {min(run.check_seconds):.1f} s | {_seconds(run.check_seconds)} |",
        f"| TFDV `generate_statistics_from_tfrecord`, default options (every logged field) "
        f"| {min(run.tfdv_seconds):.1f} s | {_seconds(run.tfdv_seconds)} |",
        f"| The same, on the model's {len(f.RAW_FEATURE_KEYS)} raw fields only "
        f"(the pass our check makes) | {min(run.tfdv_raw_seconds):.1f} s "
        f"| {_seconds(run.tfdv_raw_seconds)} |",
        f"| The check's own work around its pass (log files, comparison, verdict, report), "
        f"timed piece by piece | {min(run.extra_seconds):.2f} s "
        f"| {', '.join(f'{v:.2f} s' for v in run.extra_seconds)} |",
        f"| **Ratio**, ours / TFDV default | **{run.ratio:.2f}x** "
        f"| median rounds: {run.median_ratios[0]:.2f}x |",
        f"| **Ratio**, ours / TFDV on the same fields (our overhead above the statistics "
        f"pass) | **{run.overhead_ratio:.2f}x** | median rounds: {run.median_ratios[1]:.2f}x |",
        "",
        f"The check's own work is {min(run.extra_seconds) / min(run.tfdv_raw_seconds):.1%} of "
        "the fastest statistics pass on the same fields; the rest of any difference between "
        "the rows above is the pass's run-to-run spread on a shared machine.",
        "",
        f"That is {per_request_ms:.3f} ms per logged request. Writing the log with the server's "
        f"writer took {run.write_seconds:.1f} s. The check exited {run.exit_code} "
        f"(flagged: {', '.join(run.failed_features) or 'nothing'}).",
        "",
        "- **Log**: real trips from the TFX example's sample CSV, cycling, written with "
        "`pipeline.serving.request_log.RequestLog` and `log_example` (the server's own "
        "records: the trip's raw fields plus the prediction, model version, request id, "
        "timestamp, instance index and signature).",
        "- **Training side**: TFDV statistics of the whole sample CSV, computed once, untimed "
        "(`--training-stats`; the `--pipeline-root` lineage lookup adds a few MLMD queries).",
        "- **Timing**: one untimed warm-up of each, then "
        f"{ROUNDS} alternating rounds; the ratios compare the fastest round of each. Our "
        "check makes one statistics pass restricted to the model's raw fields, so the "
        "first ratio also counts what restricting the pass to the model's fields saves; the "
        "second is what reading the log, the comparison and the report add.",
    ]
    return lines


def summary_lines(run: MonitoringRun | None, note: str = "") -> list[str]:
    """Terminal lines."""
    if run is None:
        return [f"monitoring: not measured, {note or 'skipped'}"]
    return [
        f"monitoring: skew check of {run.requests:,} requests {min(run.check_seconds):.1f} s, "
        f"TFDV statistics alone {min(run.tfdv_seconds):.1f} s (ratio {run.ratio:.2f}x), "
        f"on the same fields {min(run.tfdv_raw_seconds):.1f} s "
        f"(ratio {run.overhead_ratio:.2f}x); median rounds "
        f"{statistics.median(run.check_seconds):.1f} / "
        f"{statistics.median(run.tfdv_seconds):.1f} / "
        f"{statistics.median(run.tfdv_raw_seconds):.1f} s"
    ]
