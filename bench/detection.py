"""Detection power and false alarms of the skew check, on real trips.

Setting: a pipeline root whose pushed model serves (our pipeline's own run), and traffic of
:data:`REQUESTS` real trips from the sample per check, checked with ``taxifare skew
--pipeline-root`` (training statistics and model found through the logged version's lineage,
as a user runs it).

1. **False alarms**: :data:`CLEAN_REPLAYS` clean replays, each through the real server
   (``python -m pipeline serve``, a fresh request log): random real trips, optional fields
   left out when unknown (as the README documents), half sent as JSON instances and half as
   base64 tf.Examples built from the full CSV row (label and post-trip fields included, as
   TFX's examples build them). Any flagged feature is a false alarm.
2. **Detection power**: each fault of ``pipeline.monitoring.faults`` applied by one faulty
   client sending 100%, 50%, 25% and 10% of the traffic; the log holds what a server writes
   for it (the raw fields as sent and the served model's own fare, computed in process with
   its ``serving_tf_example`` signature). The server's own validation rejects some of these
   faults outright (out-of-range values); the check has to catch them where no such
   validation stands in front of the model (e.g. TF Serving on a Vertex endpoint). A fault
   is detected at a fraction when some of its features are flagged and nothing else.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

REQUESTS = 1500
CLEAN_REPLAYS = 20
FRACTIONS = (1.0, 0.5, 0.25, 0.1)
PER_REQUEST = 50
# Targets of the issue that asked for this benchmark.
MAX_FALSE_ALARMS = 0
MIN_DETECTED_AT_QUARTER = 6


@dataclass
class FaultResult:
    """One fault: what was flagged at each fraction of the traffic."""

    name: str
    description: str
    flagged: dict[float, list[str]] = field(default_factory=dict)
    detected: dict[float, bool] = field(default_factory=dict)
    exact_at_full: bool = False

    @property
    def smallest_fraction(self) -> float | None:
        """The smallest fraction at which the fault was detected (None: never)."""
        hits = [fraction for fraction, ok in self.detected.items() if ok]
        return min(hits) if hits else None


@dataclass
class DetectionRun:
    """What the detection benchmark measured."""

    requests: int
    replays: int
    false_alarms: list[list[str]]
    faults: list[FaultResult]
    seconds: float

    @property
    def false_alarm_count(self) -> int:
        """Replays in which anything was flagged."""
        return sum(1 for flagged in self.false_alarms if flagged)

    @property
    def detected_at_quarter(self) -> int:
        """Faults detected when a quarter of the traffic has them."""
        return sum(1 for r in self.faults if r.detected.get(0.25))


def _rows(data_csv: Path) -> list[dict[str, str]]:
    with open(data_csv, newline="") as fh:
        return list(csv.DictReader(fh))


def _skew(root: Path, log_dir: Path, out: Path) -> tuple[int, dict]:
    from pipeline.monitoring.cli import EXIT_FOUND, EXIT_OK, cmd_skew

    args = argparse.Namespace(
        serving_logs=str(log_dir),
        pipeline_root=str(root),
        training_stats=None,
        model=None,
        schema=None,
        config=None,
        out=str(out),
        verbose=False,
    )
    code = cmd_skew(args)
    if code not in (EXIT_OK, EXIT_FOUND):
        raise RuntimeError(f"the skew check of {log_dir} exited with {code}")
    return code, json.loads((out / "verdict.json").read_text())


def _replay(server_url: str, model_name: str, rows: list[dict[str, str]]) -> None:
    """Sends `rows` to a running server: half as JSON instances, half as full-row b64."""
    import httpx

    from pipeline.monitoring.faults import full_row_example
    from pipeline.serving.client import csv_row_to_instance

    with httpx.Client(base_url=server_url, timeout=60) as client:
        for start in range(0, len(rows), PER_REQUEST):
            chunk = rows[start : start + PER_REQUEST]
            if (start // PER_REQUEST) % 2 == 0:
                instances = [csv_row_to_instance(r) for r in chunk]
            else:
                instances = [{"b64": base64.b64encode(full_row_example(r)).decode()} for r in chunk]
            response = client.post(
                f"/v1/models/{model_name}:predict", json={"instances": instances}
            )
            if response.status_code != 200:
                raise RuntimeError(f"the server answered {response.status_code}: {response.text}")


def _write_fault_log(log_dir: Path, version_dir: Path, instances: list[dict]) -> None:
    """What the server logs for `instances`: the fields as sent and the model's fares."""
    from pipeline.monitoring.faults import served_fares
    from pipeline.serving.request_log import RequestLog, log_example

    fares = served_fares(str(version_dir), instances)
    version = int(version_dir.name)
    log = RequestLog(str(log_dir))
    log.write(
        log_example(trip, float(fare), version, f"fault-{i // PER_REQUEST}", 0, i, "bench")
        for i, (trip, fare) in enumerate(zip(instances, fares, strict=True))
    )
    log.close()


def run(
    data_csv: Path,
    root: Path,
    version_dir: Path,
    workspace: Path,
    start_server,
    progress=print,
) -> DetectionRun:
    """Runs the false-alarm replays and the fault corpus; see the module docstring.

    Args:
        data_csv: the real sample.
        root: the pipeline root whose model serves.
        version_dir: the pushed version folder (`<serving>/<name>/<version>`).
        workspace: scratch space.
        start_server: (model_dir, log_dir, output) -> a started server with `.url`,
            `.wait_available()` and `.stop()` (bench.serving.Server).
    """
    from pipeline.monitoring import faults
    from pipeline.serving.client import csv_row_to_instance

    started = time.perf_counter()
    rows = _rows(data_csv)
    model_name = version_dir.parent.name
    false_alarms: list[list[str]] = []
    for k in range(CLEAN_REPLAYS):
        chosen = random.Random(1000 + k).sample(rows, REQUESTS)
        log_dir = workspace / f"clean-{k}" / "log"
        server = start_server(version_dir.parent, log_dir, workspace / f"clean-{k}" / "server.out")
        try:
            server.wait_available()
            _replay(server.url, model_name, chosen)
        finally:
            server.stop()
        _, verdict = _skew(root, log_dir, workspace / f"clean-{k}" / "out")
        false_alarms.append(verdict["failed_features"])
        progress(
            f"clean replay {k + 1}/{CLEAN_REPLAYS}: flagged "
            f"{', '.join(verdict['failed_features']) or 'nothing'}"
        )
    results = []
    for fault in faults.FAULTS:
        result = FaultResult(fault.name, fault.description)
        traffic = [csv_row_to_instance(r) for r in random.Random(77).sample(rows, REQUESTS)]
        for fraction in FRACTIONS:
            where = workspace / f"{fault.name}-{fraction:g}"
            _write_fault_log(
                where / "log", version_dir, faults.apply_fault(traffic, fault, fraction, seed=9)
            )
            _, verdict = _skew(root, where / "log", where / "out")
            flagged = verdict["failed_features"]
            result.flagged[fraction] = flagged
            result.detected[fraction] = faults.detected(fault, flagged)
            if fraction == 1.0:
                result.exact_at_full = faults.flagged_correctly(fault, flagged)
            progress(f"{fault.name} at {fraction:.0%}: flagged {', '.join(flagged) or 'nothing'}")
            if not result.detected[fraction]:
                break  # smaller fractions of a fault missed here are missed too
        results.append(result)
    return DetectionRun(
        requests=REQUESTS,
        replays=CLEAN_REPLAYS,
        false_alarms=false_alarms,
        faults=results,
        seconds=time.perf_counter() - started,
    )


def markdown_section(run: DetectionRun | None, note: str = "") -> list[str]:
    """The "Skew detection" section of BENCHMARKS.md."""
    lines = ["## Skew detection: power and false alarms", ""]
    if run is None:
        return [*lines, f"Not measured: {note or 'skipped'}."]
    full = sum(1 for r in run.faults if r.exact_at_full)
    lines += [
        f"`taxifare skew --pipeline-root` on logs of {run.requests:,} real trips each "
        f"(the whole benchmark took {run.seconds:.0f} s).",
        "",
        "| Target | Figure | Verdict |",
        "| --- | --- | --- |",
        f"| False alarms in {run.replays} clean replays through the real server: "
        f"{MAX_FALSE_ALARMS} | {run.false_alarm_count} "
        f"| {'PASS' if run.false_alarm_count <= MAX_FALSE_ALARMS else 'FAIL'} |",
        f"| Every corpus fault flagged at 100% (on exactly its features) | {full} of "
        f"{len(run.faults)} | {'PASS' if full == len(run.faults) else 'FAIL'} |",
        f"| At least {MIN_DETECTED_AT_QUARTER} of {len(run.faults)} flagged at 25% "
        f"| {run.detected_at_quarter} | "
        f"{'PASS' if run.detected_at_quarter >= MIN_DETECTED_AT_QUARTER else 'FAIL'} |",
        "",
        "| Fault | Smallest share of traffic flagged | Flagged at 100% |",
        "| --- | --- | --- |",
    ]
    for r in run.faults:
        smallest = r.smallest_fraction
        lines.append(
            f"| {r.description} | {'not flagged' if smallest is None else f'{smallest:.0%}'} "
            f"| {', '.join(r.flagged.get(1.0, [])) or 'nothing'} |"
        )
    lines += [
        "",
        "Clean replays: random real trips from the sample, optional fields left out when "
        "unknown, half as JSON instances and half as base64 tf.Examples of the whole CSV row "
        "(label and post-trip fields included), through `python -m pipeline serve`. Faulty "
        "traffic: the fault applied by one client sending the given share of the requests; "
        "the log holds the fields as sent and the served model's own fare (computed in "
        "process). Fractions are tried from 100% down and stop at the first miss.",
    ]
    return lines


def summary_lines(run: DetectionRun | None, note: str = "") -> list[str]:
    """Terminal lines."""
    if run is None:
        return [f"skew detection: not measured, {note or 'skipped'}"]
    return [
        f"skew detection: {run.false_alarm_count} false alarms in {run.replays} clean replays; "
        f"{sum(1 for r in run.faults if r.exact_at_full)}/{len(run.faults)} faults flagged "
        f"exactly at 100%, {run.detected_at_quarter}/{len(run.faults)} at 25%"
    ]
