"""Rendering benchmark results: ``BENCHMARKS.md`` and a short stdout summary."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from bench import monitoring, reference, serving, targets
from bench.machine import Machine
from bench.measure import SAMPLE_INTERVAL_SECONDS, Measurement
from bench.monitoring import MonitoringRun
from bench.results import BenchResults
from bench.serving import ServingRun

MIB = 1024**2

BUSY_MACHINE_SHARE = 0.10
"""Warn when other processes used more than this share of the CPUs during a run."""

_RUN_ROWS = (
    "Wall time",
    "Peak RSS, largest process (getrusage)",
    "Peak RSS, largest process (sampled)",
    "Peak RSS, whole process tree (sampled)",
    "Most processes alive at once (sampled)",
    "CPU time, user + system",
    "CPU time of other processes meanwhile",
)
"""Rows of the per-run table, in order."""


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _memory(size_bytes: int) -> str:
    """A byte count in GB (decimal) and MiB, as the targets and tools use both."""
    if size_bytes <= 0:
        return "not measured"
    return f"{size_bytes / 1e9:.2f} GB ({size_bytes / MIB:,.0f} MiB)"


def _yes_no(value: bool) -> str:
    """``yes`` or ``no``."""
    return "yes" if value else "no"


def _run_columns(run: Measurement | None) -> dict[str, str]:
    """The measured figures of one run, keyed by row label."""
    if run is None:
        return dict.fromkeys(_RUN_ROWS, "skipped")
    return {
        "Wall time": f"{run.wall_seconds:,.1f} s",
        "Peak RSS, largest process (getrusage)": _memory(run.max_rss_bytes),
        "Peak RSS, largest process (sampled)": _memory(run.tree.largest_process_bytes),
        "Peak RSS, whole process tree (sampled)": _memory(run.tree.total_bytes),
        "Most processes alive at once (sampled)": f"{run.tree.max_processes}",
        "CPU time, user + system": f"{run.cpu_seconds:,.1f} s",
        "CPU time of other processes meanwhile": f"{run.other_cpu_seconds:,.1f} s",
    }


def _busy_share(run: Measurement, cores: int) -> float:
    """Share of the machine's CPU capacity that other processes used during ``run``."""
    capacity = run.wall_seconds * max(cores, 1)
    return run.other_cpu_seconds / capacity if capacity > 0 else 0.0


def busy_warnings(results: BenchResults) -> list[str]:
    """One warning per run during which the machine was noticeably busy with other work."""
    runs = [results.ours.measurement]
    if results.reference is not None:
        runs.insert(0, results.reference.measurement)
    warnings = []
    for run in runs:
        share = _busy_share(run, results.machine.usable_cores)
        if share > BUSY_MACHINE_SHARE:
            warnings.append(
                f"The machine was busy during the {run.name} run: other processes used "
                f"{share:.0%} of its CPU capacity, so its wall time is inflated."
            )
    return warnings


def _consistency(results: BenchResults) -> str:
    """Whether the counts in ``summary.json`` agree with the Examples that were read."""
    ours, summary = results.ours, results.ours.summary
    kept = summary.rows_read - summary.rows_excluded
    problems = []
    if ours.train_rows + ours.eval_rows + ours.test_rows != kept:
        problems.append(f"rows read minus excluded is {kept:,}, not train + eval + test")
    if summary.eval_count is not None and summary.eval_count != ours.test_rows:
        problems.append(f"the model was scored on {summary.eval_count:,} test examples")
    if problems:
        return "**Inconsistent**: " + "; ".join(problems) + "."
    scored = " and the model was scored on all test examples" if summary.eval_count else ""
    return f"The counts agree{scored}."


def _against_best_baseline(results: BenchResults) -> str:
    """One sentence comparing our best test RMSE (tuned if run) with the best baseline's."""
    best = min(results.ours.baselines, key=lambda score: score.rmse)
    name, ours = "Our model", results.ours.summary.eval_rmse
    if results.tuned is not None:
        name, ours = "Our tuned model", results.tuned.summary.eval_rmse
    gap = best.rmse - ours
    if gap >= 0:
        return f"{name}'s RMSE is ${gap:.2f} lower than the best baseline's ({best.name})."
    return f"{name}'s RMSE is ${-gap:.2f} higher than the best baseline's ({best.name})."


def render_markdown(
    results: BenchResults,
    commands: Sequence[str],
    monitoring_run: MonitoringRun | None = None,
    monitoring_note: str = "",
) -> str:
    """Renders the full ``BENCHMARKS.md``.

    Args:
        results: The figures.
        commands: Shell lines that reproduce the benchmark and its two runs.
        monitoring_run: The skew-check benchmark, or None when it was not run.
        monitoring_note: Why it was not run, when it was not.
    """
    machine, example, ours, summary = (
        results.machine, results.example, results.ours, results.ours.summary
    )  # fmt: skip
    ref_run = results.reference
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m bench` on {results.started:%Y-%m-%d %H:%M} UTC. "
        "Our pipeline is compared with the Chicago taxi example that ships inside TFX "
        f"(`{reference.PIPELINE_SCRIPT}`), run unmodified on its own sample data.",
        "",
        *machine_lines(machine),
        "",
        "## Targets",
        "",
        *_table(
            ("Figure", "Target", "Ours", "Result"),
            ((c.name, c.target, c.value, f"**{c.verdict.value}**") for c in results.checks()),
        ),
        "",
    ]
    if ref_run is None:
        lines += ["The reference run was skipped (`--skip-reference`), so no ratio is given.", ""]
    warnings = busy_warnings(results)
    lines += [f"- **Warning**: {warning}" for warning in warnings] + ([""] if warnings else [])

    ref_columns = _run_columns(ref_run.measurement if ref_run else None)
    our_columns = _run_columns(ours.measurement)
    run_rows = [(label, ref_columns[label], our_columns[label]) for label in _RUN_ROWS]
    run_rows += [
        (
            "Training examples (steps x batch size)",
            f"{example.train_steps:,} x {example.batch_size} = {example.examples_trained:,}",
            (
                f"{summary.train_steps:,} x {summary.batch_size} = {summary.examples_trained:,}"
                if summary.train_steps is not None
                else (
                    f"{summary.epochs_run} epochs x {summary.steps_per_epoch:,} steps x "
                    f"{summary.batch_size} = {summary.trained_examples:,}"
                    if summary.trained_examples is not None
                    else f"epochs of batch {summary.batch_size}, early stopping on eval"
                )
            ),
        ),
        (
            "Model blessed and pushed",
            _yes_no(ref_run.pushed) if ref_run else "skipped",
            f"blessed: {_yes_no(summary.blessed)}; "
            f"pushed: {_yes_no(summary.pushed_to is not None)}",
        ),
    ]
    lines += [
        "## Runs",
        "",
        *_table(("Figure", "Reference (TFX example)", "Ours"), run_rows),
        "",
        f"Our run read {summary.rows_read:,} rows and excluded {summary.rows_excluded:,} "
        f"as implausible; its Examples hold {ours.train_rows:,} train, {ours.eval_rows:,} eval "
        f"and {ours.test_rows:,} test examples. {_consistency(results)}",
        "",
        "## Test error",
        "",
        f"All on our test split ({ours.test_rows:,} examples), which nothing looks at before "
        "this score: early stopping, tuning and the gradient boosting grid choose on the eval "
        "split. Baselines are fitted on our train split. The reference example predicts "
        "whether a trip is tipped, not the fare, so it has no fare error to compare.",
        "",
    ]
    rmse_target = f"RMSE under ${targets.MAX_EVAL_RMSE_DOLLARS:.2f}"
    error_rows = [
        (
            "**Ours**, configured hyperparameters (from `summary.json`)",
            f"${summary.eval_rmse:.2f}",
            f"${summary.eval_mae:.2f}",
            _yes_no(summary.eval_rmse < targets.MAX_EVAL_RMSE_DOLLARS),
        )
    ]
    tuned = results.tuned.summary if results.tuned else None
    if tuned is not None:
        error_rows.append(
            (
                f"**Ours, tuned** ({tuned.tuning_trials} trials, `tuning.enabled=true`)",
                f"${tuned.eval_rmse:.2f}",
                f"${tuned.eval_mae:.2f}",
                _yes_no(tuned.eval_rmse < targets.MAX_EVAL_RMSE_DOLLARS),
            )
        )
    error_rows += [
        (
            f"Baseline: {score.name}",
            f"${score.rmse:.2f}",
            f"${score.mae:.2f}",
            _yes_no(score.rmse < targets.MAX_EVAL_RMSE_DOLLARS),
        )
        for score in ours.baselines
    ]
    lines += [*_table(("Predictor", "RMSE", "MAE", rmse_target), error_rows), ""]
    lines += _training_notes(results)
    lines += [f"- {score.name}: {score.detail}." for score in ours.baselines]
    lines += ["", _against_best_baseline(results)] if ours.baselines else []
    lines += ["", *serving_section(results.serving, results.serving_note)]
    lines += ["", *monitoring.markdown_section(monitoring_run, monitoring_note)]
    lines += ["", *_method_notes(results), "", "## Commands", "", "```sh", *commands, "```", ""]
    return "\n".join(lines)


def _training_notes(results: BenchResults) -> list[str]:
    """How long each of our runs trained, and what the tuning found and cost."""
    notes = []
    runs = [("Ours", results.ours)] + ([("Ours, tuned", results.tuned)] if results.tuned else [])
    for name, run in runs:
        s = run.summary
        if s.epochs_run is not None:
            notes.append(
                f"- {name}: {s.epochs_run} epochs of {s.steps_per_epoch:,} steps of "
                f"{s.batch_size} (early stopping on eval, best weights kept), "
                f"{s.trained_examples:,} examples; the whole run took "
                f"{run.measurement.wall_seconds:.0f} s."
            )
    tuned = results.tuned.summary if results.tuned else None
    if tuned is not None and tuned.tuned_hyperparameters:
        values = ", ".join(f"{k}={v}" for k, v in sorted(tuned.tuned_hyperparameters.items()))
        seconds = f"{tuned.tuning_seconds:.0f} s" if tuned.tuning_seconds is not None else "n/a"
        notes.append(
            f"- Tuning: {tuned.tuning_trials} trials (random search over model and "
            f"preprocessing knobs, scored on eval) in {seconds} of Tuner wall time; "
            f"best: {values}."
        )
    elif results.tuned_note:
        notes.append(f"- The tuned run was not measured: {results.tuned_note}.")
    return notes


def _method_notes(results: BenchResults) -> list[str]:
    """The section that says how each figure is measured."""
    example = results.example
    return [
        "## How each figure is measured",
        "",
        "- The two runs go one after the other, not side by side, each in a fresh "
        "temporary directory (also its `TMPDIR`), so neither reuses the other's artifacts "
        "or cache. Each figure comes from a single run; repeat the benchmark to see "
        "run-to-run spread.",
        "- **Reference**: TFX's `examples/chicago_taxi_pipeline/"
        f"{reference.PIPELINE_SCRIPT}` from the installed `tfx` package, unmodified, with "
        "`HOME` pointing at a fresh directory that holds the shipped "
        f"`{reference.DATA_FILE.as_posix()}` as `taxi/data/simple/data.csv` and the shipped "
        f"`{reference.MODULE_FILE}` in `taxi/`. It needs `TF_USE_LEGACY_KERAS=1` to run at "
        "all: it is written for Keras 2 (`tf-keras`), while TensorFlow 2.16 makes Keras 3 "
        "the default. Its training budget is read from the shipped files: "
        f"`TrainArgs(num_steps={example.train_steps})` in the pipeline and batch size "
        f"{example.batch_size} in the module file's `run_fn`.",
        f"- **Ours**: `python -m pipeline run --config {results.config}` with `root` set to a "
        "fresh directory; its test errors, training record, blessing and row counts come from its "
        "`<root>/summary.json`.",
        "- **Wall time**: each command is started by a small wrapper process "
        "(`python -m bench.rss_wrapper`), which times it from start to exit.",
        "- **Peak RSS, largest process (getrusage)**: after the command exits, the wrapper "
        "reads its own `getrusage(RUSAGE_CHILDREN).ru_maxrss`, the peak resident set of "
        "the largest single process among all its waited-for descendants (Beam workers "
        "included). The wrapper has no other children, so each run's figure is "
        "independent of the other run. This is the figure judged against the target.",
        "- **Sampled figures**: psutil reads the RSS of every process in the run's tree "
        f"every {SAMPLE_INTERVAL_SECONDS:g} s; the whole-tree figure is the highest sum at "
        "one instant. Sampling can miss short spikes, so these are lower bounds.",
        "- **CPU time**: user plus system time of all waited-for descendants (getrusage). "
        "*Other processes meanwhile* is the machine's total busy CPU time over the run "
        "(psutil) minus the run's own: it shows whether anything else competed for the "
        "CPUs and inflated the wall time.",
        "- **Test error baselines**: our Examples artifact's `Split-train`, `Split-eval` and "
        "`Split-test` gzipped TFRecords are read directly; every predictor is scored on "
        "test, the split our Evaluator blesses on. The mean baseline predicts the training "
        "mean fare; the distance baseline fits `fare = a + b x haversine miles` "
        "(pickup to dropoff) by least squares on train trips with all four coordinates, "
        "and predicts the training mean for trips lacking any. Gradient boosting "
        "(scikit-learn's HistGradientBoostingRegressor) sees the raw booking-time fields "
        "plus haversine distance and takes the best of a small grid by eval RMSE.",
        f"- Peak RSS target: {targets.MAX_PEAK_RSS_BYTES / 1e9:g} GB means "
        f"{targets.MAX_PEAK_RSS_BYTES:,} bytes.",
    ]


def _ms(value: float) -> str:
    """Milliseconds with two decimals."""
    return f"{value:,.2f} ms"


def _cpu(ms: float | None) -> str:
    """CPU milliseconds per request, or a dash when not applicable."""
    return "-" if ms is None else _ms(ms)


def serving_section(run: ServingRun | None, note: str = "") -> list[str]:
    """The "Serving" section: figures, targets, and how they were measured."""
    lines = ["## Serving", ""]
    if run is None:
        return [*lines, f"Not measured: {note or 'skipped'}."]
    rows = [
        (
            series.label,
            f"{series.requests:,}",
            f"{series.errors:,}",
            _ms(series.p50_ms),
            _ms(series.p99_ms),
            f"{series.requests_per_s:,.0f}",
            _cpu(series.server_cpu_ms),
            _cpu(series.client_cpu_ms),
        )
        for series in run.series
    ]
    lines += [
        f"Version {run.version} of the pushed model (`<serving root>/{run.model_dir.name}`), "
        f"one instance per call or request, cycling through {run.trips:,} real trips.",
        "",
        *_table(
            (
                "Series",
                "Requests",
                "Errors",
                "p50",
                "p99",
                "Requests/s",
                "Server CPU / request",
                "Client CPU / request",
            ),
            rows,
        ),
        "",
        *_table(
            ("Figure", "Target", "Measured", "Result"),
            ((c.name, c.target, c.value, f"**{c.verdict.value}**") for c in run.checks()),
        ),
        "",
        " ".join(
            f"After the {protocol} request-log run the server took {log.stop_seconds:.1f} s to"
            f" exit after SIGTERM (exit code {log.stop_exit_code})."
            for protocol, log in run.log_runs.items()
        ),
        "",
        *serving_method_notes(),
    ]
    return lines


def serving_method_notes() -> list[str]:
    """How the serving figures are measured."""
    return [
        "How measured:",
        "",
        f"- **Instances**: the first {serving.TRIPS:,} rows of the TFX example's "
        f"`{reference.DATA_FILE.as_posix()}` that the server's request validation accepts, "
        "reduced to the model's raw input fields under their feature names, empty optional "
        "fields left out (JSON objects, as a client sends them). The in-process calls get the "
        'same trips as shape-[1] tensors, a missing field set to its sentinel (NaN, -1, "").',
        "- **In process**: `tf.saved_model.load` on the highest version folder, then the "
        f"`serving_default` signature called {serving.IN_PROCESS_CALLS} times, one trip per "
        f"call, after {serving.IN_PROCESS_WARM_UP_CALLS} warm-up calls; each call is timed "
        "from the call to the predicted fare as numpy, inputs built beforehand.",
        "- **HTTP**: `python -m pipeline serve --model-dir <dir> --host 127.0.0.1 "
        "--port <free port> --log-dir <tmp>` with its defaults otherwise, started once "
        "`GET /v1/models/taxifare` lists a version AVAILABLE; load from "
        "`bench.load_client.run_load` in the benchmark process on the same machine: "
        "a lean client, so that it measures the server rather than itself (its CPU per "
        "request is in the table): one thread multiplexing as many keep-alive HTTP/1.1 "
        "connections as the concurrency with `selectors`, each with one request in flight, "
        "request bytes encoded before the clock starts, answers read up to their "
        "`Content-Length`. Latency per request from just before its bytes are sent to the "
        f"last byte of its answer. {serving.HTTP_WARM_UP_REQUESTS} warm-up requests, then "
        f"{serving.SINGLE_CLIENT_REQUESTS} at concurrency 1 and "
        f"{serving.CONCURRENT_REQUESTS:,} at concurrency {serving.CONCURRENT_CLIENTS}. "
        "Client and server share the machine's cores.",
        "- **gRPC**: the same server also serves TF Serving's gRPC API (`--grpc-port <free "
        "port>`); load from `bench.load_client.run_grpc_load`: as many `Predict` calls in "
        "flight on one channel as the concurrency, each answer starting the next call from "
        "grpc's callback thread (no thread per call, no asyncio), each a "
        "`PredictRequest` of `serving_default` (one tensor per raw field) serialized before "
        "the clock starts, answers not parsed (status OK is a success). Same warm-up and "
        "request counts as HTTP.",
        "- **CPU / request**: user plus system CPU time (psutil) over a series divided by its "
        "requests: the server process (and any workers) on one side, the benchmark process "
        "that sends the requests (or makes the in-process calls) on the other. When their "
        "sum per request approaches the wall time per request times the cores, the machine, "
        "not the server's design, bounds the throughput.",
        "- **Request log**: for each protocol, a fresh server with an empty `--log-dir` takes "
        f"exactly {serving.LOG_RUN_REQUESTS:,} requests at concurrency "
        f"{serving.LOG_RUN_CLIENTS} and "
        "nothing else, is stopped with SIGTERM, and once it has exited the instances in its "
        "log are counted with `pipeline.serving.request_log.read_request_log`; every file "
        "must have been finished (no `.inprogress` left) and the exit code must be 0.",
        f"- Targets: HTTP p50 at concurrency 1 at most {targets.MAX_HTTP_OVERHEAD_MS:g} ms "
        f"and gRPC p50 at most {targets.MAX_GRPC_OVERHEAD_MS:g} ms "
        "above the in-process p50; for each protocol, requests/s at concurrency "
        f"{serving.CONCURRENT_CLIENTS} at least {targets.MIN_CONCURRENCY_SPEEDUP:g}x that at "
        "concurrency 1; zero errors and every instance logged in the request-log run.",
    ]


def serving_summary(run: ServingRun | None, note: str = "") -> list[str]:
    """Terminal lines for the serving benchmark."""
    if run is None:
        return [f"serving: not measured, {note or 'skipped'}"]
    lines = [
        f"{series.label:>48}: p50 {series.p50_ms:7.2f} ms, p99 {series.p99_ms:7.2f} ms, "
        f"{series.requests_per_s:8,.0f} req/s, {series.errors} errors, CPU per request: "
        f"server {_cpu(series.server_cpu_ms)}, client {_cpu(series.client_cpu_ms)}"
        for series in run.series
    ]
    for protocol, log in run.log_runs.items():
        lines.append(
            f"{f'Instances in the request log ({protocol} run)':>48}: {log.logged_instances:,}"
        )
    lines += [
        f"[{c.verdict.value:>4}] {c.name}: {c.value} (target {c.target})" for c in run.checks()
    ]
    return lines


def render_partial_markdown(
    title: str,
    flag: str,
    started_text: str,
    machine_lines: Sequence[str],
    section: Sequence[str],
    commands: Sequence[str],
) -> str:
    """A report of one part of the benchmark alone (``--serving-only``, ``--monitoring-only``).

    Args:
        title: The report's heading.
        flag: The ``python -m bench`` flag that ran it.
        started_text: When it started (UTC), as text.
        machine_lines: The "Machine" section.
        section: The part's own section.
        commands: Shell lines that reproduce it.
    """
    lines = [
        f"# {title}",
        "",
        f"Generated by `python -m bench {flag}` on {started_text} UTC.",
        "",
        *machine_lines,
        "",
        *section,
        "",
        "## Commands",
        "",
        "```sh",
        *commands,
        "```",
        "",
    ]
    return "\n".join(lines)


def machine_lines(machine: Machine) -> list[str]:
    """The "Machine" section."""
    return [
        "## Machine",
        "",
        f"- CPU: {machine.cpu_model}, {machine.logical_cores} logical cores "
        f"({machine.usable_cores} usable by the benchmark)",
        f"- Memory: {machine.memory_bytes / 1024**3:.1f} GiB",
        f"- OS: {machine.os}",
        f"- Python {machine.python}; "
        + ", ".join(f"{name} {version}" for name, version in machine.packages.items()),
    ]


def render_summary(
    results: BenchResults, monitoring_run: MonitoringRun | None = None, monitoring_note: str = ""
) -> str:
    """A few lines for the terminal."""
    lines = []
    for label, run in (
        ("reference", results.reference.measurement if results.reference else None),
        ("ours", results.ours.measurement),
    ):
        if run is None:
            lines.append(f"{label:>9}: skipped")
        else:
            lines.append(
                f"{label:>9}: {run.wall_seconds:7.1f} s wall, "
                f"peak RSS {run.max_rss_bytes / 1e9:.2f} GB largest process, "
                f"{run.tree.total_bytes / 1e9:.2f} GB whole tree (sampled)"
            )
    lines += [f"{s.name:>30}: RMSE ${s.rmse:.2f}, MAE ${s.mae:.2f}" for s in results.ours.baselines]
    summary = results.ours.summary
    lines.append(f"{'Ours':>30}: RMSE ${summary.eval_rmse:.2f}, MAE ${summary.eval_mae:.2f}")
    lines += [
        f"[{c.verdict.value:>4}] {c.name}: {c.value} (target {c.target})" for c in results.checks()
    ]
    lines += serving_summary(results.serving, results.serving_note)
    lines += monitoring.summary_lines(monitoring_run, monitoring_note)
    lines += [f"warning: {warning}" for warning in busy_warnings(results)]
    return "\n".join(lines)


def write_partial(
    path: Path,
    title: str,
    flag: str,
    started_text: str,
    machine_lines: Sequence[str],
    section: Sequence[str],
    commands: Sequence[str],
) -> str:
    """Writes one part's figures; returns how ("updated the ... section of" or "wrote").

    When ``path`` is a full report (``python -m bench``'s, e.g. BENCHMARKS.md) that has the
    part's section, only that section is replaced, with a line saying when and how it was
    measured: the other sections keep their figures. Otherwise the part's own report
    (render_partial_markdown) is written.
    """
    heading = section[0]
    old = path.read_text() if path.exists() else ""
    if not old.startswith("# Benchmarks"):
        path.write_text(
            render_partial_markdown(title, flag, started_text, machine_lines, section, commands)
        )
        return "wrote"
    stamp = f"Measured by `python -m bench {flag}` on {started_text} UTC, apart from the rest."
    own = list(section[1:])
    while own and not own[0].strip():
        own.pop(0)
    body = "\n".join([heading, "", stamp, "", *own]).rstrip("\n") + "\n"
    bounds = _section_bounds(old, heading)
    if bounds is None:  # a report without this part yet: it goes before the commands
        commands = _section_bounds(old, "## Commands")
        if commands is None:
            path.write_text(old.rstrip("\n") + "\n\n" + body)
            return f"added the {heading.lstrip('# ')!r} section to"
        bounds = (commands[0], commands[0])
    rest = old[bounds[1] :]
    path.write_text(old[: bounds[0]] + body + ("\n" + rest if rest else ""))
    return f"updated the {heading.lstrip('# ')!r} section of"


def _section_bounds(text: str, heading: str) -> tuple[int, int] | None:
    """Where the section under ``heading`` (a "## " line) starts and ends in ``text``."""
    start = text.find(f"\n{heading}\n")
    if start < 0:
        return None
    end = text.find("\n## ", start + len(heading) + 2)
    return start + 1, (end + 1 if end >= 0 else len(text))


def section_text(text: str, heading: str) -> str:
    """The section under ``heading`` in ``text``, ending in one newline ('' if absent)."""
    bounds = _section_bounds(text, heading)
    return text[bounds[0] : bounds[1]].rstrip("\n") + "\n" if bounds else ""


def keep_sections(new: str, old: str, headings: Sequence[str]) -> str:
    """``new`` with the sections under ``headings`` taken from ``old`` where it has them.

    A part skipped in this run (``--skip-serving`` ...) keeps the figures an earlier run
    measured, marked with when, instead of being replaced by "Not measured".
    """
    for heading in headings:
        here, there = _section_bounds(new, heading), _section_bounds(old, heading)
        if here is None or there is None:
            continue
        kept = old[there[0] : there[1]].rstrip("\n")
        if "apart from the rest" not in kept and "kept from an earlier run" not in kept:
            stamp = old.split("\n", 3)[2] if old.count("\n") >= 3 else ""
            when = stamp.split(" on ", 1)[1].split(" UTC", 1)[0] if " on " in stamp else ""
            note = f"Not measured in this run; kept from an earlier run ({when} UTC)."
            kept = kept.replace(heading, f"{heading}\n\n{note}", 1)
        rest = new[here[1] :].lstrip("\n")
        new = new[: here[0]] + kept + ("\n\n" + rest if rest else "\n")
    return new
