"""``python -m bench``: run our pipeline and TFX's reference example, write BENCHMARKS.md.

After the runs, the model our pipeline pushed is served and benchmarked (``bench.serving``);
``--skip-serving`` leaves that out, and ``--serving-only --model-dir DIR`` benchmarks only
the serving of an existing model directory, without running the pipelines. Then the skew
check is timed on 100,000 logged requests next to TFDV's statistics pass (``bench.monitoring``);
``--skip-monitoring`` leaves that out and ``--monitoring-only`` runs only that.

Exits 0 when every run completes, whether or not the targets are met (a benchmark
reports; it does not gate). Exits 1 when a run itself fails, showing its stderr tail.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from bench import (
    baselines,
    detection,
    examples_io,
    machine,
    monitoring,
    ours,
    reference,
    report,
    serving,
)
from bench.measure import Measurement, run_measured
from bench.results import BenchResults, OursRun, ReferenceRun

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT_SECONDS = 3600.0


class RunFailedError(Exception):
    """A measured run, or what it was expected to produce, failed."""


def _parse_args(argv: list[str]) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark our pipeline against TFX's Chicago taxi example.",
    )
    parser.add_argument(
        "--skip-reference", action="store_true", help="run only our pipeline (quick check)"
    )
    parser.add_argument(
        "--skip-tuning",
        action="store_true",
        help="do not run our pipeline a second time with tuning.enabled=true (the tuned row)",
    )
    parser.add_argument(
        "--skip-serving", action="store_true", help="do not benchmark serving the pushed model"
    )
    parser.add_argument(
        "--serving-only",
        action="store_true",
        help="benchmark only serving the model in --model-dir; run no pipeline",
    )
    parser.add_argument(
        "--skip-monitoring",
        action="store_true",
        help="do not benchmark the skew check on 100,000 logged requests",
    )
    parser.add_argument(
        "--monitoring-only",
        action="store_true",
        help="benchmark only the skew check against TFDV's statistics pass; run no pipeline",
    )
    parser.add_argument(
        "--skip-detection",
        action="store_true",
        help="do not measure the skew check's detection power and false alarms",
    )
    parser.add_argument(
        "--detection-only",
        action="store_true",
        help="run our pipeline, then measure only the skew check's detection power and false"
        " alarms (fault corpus, clean replays through the real server)",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="run only the scale benchmark: ours on 200k and 2M synthetic trips, TFX's"
        " example on 2M (writes the Scale section of the report)",
    )
    parser.add_argument(
        "--scale-rows", help="with --scale: comma-separated row counts (default: 200000,2000000)"
    )
    parser.add_argument(
        "--scale-dir", type=Path, help="with --scale: keep the data and runs in this folder"
    )
    parser.add_argument(
        "--scale-cap-gib",
        type=float,
        help="with --scale: above 2M rows, stop TFX's CsvExampleGen alone once its process"
        " tree's RSS passes this many GiB (default: 16)",
    )
    parser.add_argument(
        "--scale-cap-seconds",
        type=float,
        help="with --scale: above 2M rows, stop TFX's CsvExampleGen alone after this many"
        " seconds (default: 3600)",
    )
    parser.add_argument(
        "--trainer-input",
        action="store_true",
        help="run only the Trainer-input benchmark: model.fit on the Trainer's streamed input"
        " against the same transformed batches in memory (writes its section of the report)",
    )
    parser.add_argument(
        "--cli",
        action="store_true",
        help="run only the command start-up benchmark: read-only commands and help, each in a"
        " fresh process, against the bare interpreter (writes its section of the report)",
    )
    parser.add_argument(
        "--trainer-input-rows",
        type=int,
        help="with --trainer-input: synthetic trips to transform and train on (default: 200000)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="with --serving-only: a versioned model directory (<serving root>/taxifare)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "BENCHMARKS.md",
        help="report file to write (default: BENCHMARKS.md at the repository root)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary run directories and print them"
    )
    parser.add_argument(
        "--config",
        default=str(ours.DEFAULT_CONFIG),
        help="pipeline config for our run, relative to the repository root (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="kill a run after this many seconds (default: %(default)g; with --scale, per 2M"
        " rows of the run)",
    )
    args = parser.parse_args(argv)
    if args.serving_only and args.model_dir is None:
        parser.error("--serving-only needs --model-dir")
    if args.model_dir is not None and not args.serving_only:
        parser.error("--model-dir goes with --serving-only")
    if args.serving_only and args.skip_serving:
        parser.error("--serving-only and --skip-serving exclude each other")
    if args.monitoring_only and (args.serving_only or args.skip_monitoring):
        parser.error("--monitoring-only excludes --serving-only and --skip-monitoring")
    if args.detection_only and (args.serving_only or args.monitoring_only or args.skip_detection):
        parser.error("--detection-only excludes the other -only modes and --skip-detection")
    if args.trainer_input_rows is not None and not args.trainer_input:
        parser.error("--trainer-input-rows goes with --trainer-input")
    return args


def _check(run: Measurement, completed: tuple[int, ...] = (0,)) -> None:
    """Raises RunFailedError, with the run's stderr tail, unless it exited as completed.

    Args:
        run: The measured run.
        completed: Exit codes that mean the run finished and produced its outputs.
    """
    if run.returncode in completed:
        return
    status = "timed out" if run.returncode is None else f"exited with {run.returncode}"
    raise RunFailedError(
        f"the {run.name} run {status} after {run.wall_seconds:.1f} s.\n"
        f"--- last lines of its stderr ({run.stderr_path.name}) ---\n{run.stderr_tail()}"
    )


def _with_private_tmp(env: dict[str, str], tmp: Path) -> dict[str, str]:
    """Returns ``env`` with ``TMPDIR`` set to ``tmp``, created if needed.

    A run's temporary files then stay in its workspace and go with it; TFX and
    TensorFlow leave some behind in the system temporary directory otherwise.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    return {**env, "TMPDIR": str(tmp)}


def _run_ours(
    args: argparse.Namespace, workspace: Path, name: str = "ours", overrides: tuple[str, ...] = ()
) -> tuple[Measurement, ours.RunSummary]:
    """Runs our pipeline (with `--set` overrides) in a fresh root and reads its summary."""
    if not (REPO_ROOT / args.config).is_file():
        raise RunFailedError(f"the pipeline config {args.config} does not exist")
    root = workspace / name / "root"
    root.mkdir(parents=True)
    shown = "".join(f" --set {o}" for o in overrides)
    print(f"bench: running our pipeline ({args.config}{shown}) ...", flush=True)
    run = run_measured(
        name,
        ours.command(Path(args.config), root, overrides),
        cwd=REPO_ROOT,
        env=_with_private_tmp(ours.environment(), workspace / name / "tmp"),
        log_dir=workspace / "logs",
        timeout_seconds=args.timeout,
    )
    _check(run, ours.COMPLETED_EXIT_CODES)
    print(f"bench: {name} done in {run.wall_seconds:.1f} s", flush=True)
    try:
        summary = ours.load_summary(root, REPO_ROOT)
    except ours.SummaryError as err:
        raise RunFailedError(f"the ours run succeeded but its summary is unusable: {err}") from err
    return run, summary


def _run_reference(
    args: argparse.Namespace, workspace: Path, example: reference.ReferenceExample
) -> ReferenceRun:
    """Runs TFX's example, unmodified, in a fresh HOME."""
    home = workspace / "reference" / "home"
    reference.prepare_home(example, home)
    print(f"bench: running the TFX reference example ({reference.PIPELINE_SCRIPT}) ...", flush=True)
    run = run_measured(
        "reference",
        reference.command(example),
        cwd=home,
        env=_with_private_tmp(reference.environment(home), workspace / "reference" / "tmp"),
        log_dir=workspace / "logs",
        timeout_seconds=args.timeout,
    )
    _check(run)
    print(f"bench: reference done in {run.wall_seconds:.1f} s", flush=True)
    return ReferenceRun(example, run, pushed=reference.pushed_model(home) is not None)


def _score_baselines(summary: ours.RunSummary) -> tuple[int, int, int, list[baselines.Score]]:
    """Reads our Examples splits and scores the baselines on the test split.

    Returns:
      The train, eval and test example counts, and the baselines' scores.
    """
    print("bench: scoring baselines on our test split ...", flush=True)
    try:
        train = examples_io.read_split(summary.examples_uri, "train")
        validation = examples_io.read_split(summary.examples_uri, "eval")
        test = examples_io.read_split(summary.examples_uri, "test")
        booking_train, codes = baselines.read_booking_rows(summary.examples_uri, "train")
        booking_eval, _ = baselines.read_booking_rows(summary.examples_uri, "eval", codes)
        booking_test, _ = baselines.read_booking_rows(summary.examples_uri, "test", codes)
        scores = [
            baselines.mean_baseline(train, test),
            baselines.distance_baseline(train, test),
            baselines.gradient_boosting_baseline(booking_train, booking_eval, booking_test),
        ]
    except (FileNotFoundError, ValueError) as err:
        raise RunFailedError(f"cannot score baselines on {summary.examples_uri}: {err}") from err
    return len(train), len(validation), len(test), scores


def _run_serving(
    model_dir: Path, example: reference.ReferenceExample, workspace: Path
) -> serving.ServingRun:
    """Benchmarks serving ``model_dir``; its servers' files go under ``workspace``."""
    print(f"bench: benchmarking serving of {_display_path(model_dir)} ...", flush=True)
    try:
        return serving.run(
            model_dir,
            example.data_csv,
            workspace,
            cwd=REPO_ROOT,
            progress=lambda line: print(f"bench: {line}", flush=True),
        )
    except serving.ServingError as err:
        raise RunFailedError(f"the serving benchmark failed: {err}") from err


def _pushed_model_dir(summary: ours.RunSummary) -> Path | None:
    """The versioned model directory our run pushed to (parent of ``pushed_to``), if any."""
    if summary.pushed_to is None:
        return None
    pushed = Path(summary.pushed_to)
    if not pushed.is_absolute():
        pushed = REPO_ROOT / pushed
    return pushed.parent


def _display_python() -> str:
    """This interpreter as a reader would type it: relative to the repository if inside."""
    try:
        return Path(sys.executable).relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return "python"


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it, else absolute."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(resolved)


def _commands(args: argparse.Namespace, argv: list[str]) -> list[str]:
    """Shell lines that reproduce the benchmark and each measured run."""
    python = _display_python()
    example_dir = f"<site-packages>/tfx/{reference.EXAMPLE_SUBDIR.as_posix()}"
    env = " ".join(f"{key}={value}" for key, value in reference.EXTRA_ENV.items())
    return [
        "# The whole benchmark, from the repository root:",
        shlex.join([python, "-m", "bench", *argv]),
        "",
        "# Reference, run by the benchmark in a fresh HOME:",
        "mkdir -p $TMP_HOME/taxi/data/simple",
        f"cp {example_dir}/{reference.DATA_FILE.as_posix()} $TMP_HOME/taxi/data/simple/",
        f"cp {example_dir}/{reference.MODULE_FILE} $TMP_HOME/taxi/",
        f"(cd $TMP_HOME && HOME=$TMP_HOME {env} {python} "
        f"{example_dir}/{reference.PIPELINE_SCRIPT})",
        "",
        "# Ours, run by the benchmark from the repository root with a fresh root:",
        f"{python} -m pipeline run --config {shlex.quote(args.config)} --set root=$TMP_ROOT",
        *_serve_commands(python, "$TMP_ROOT/serving/taxifare"),
        "",
        "# Ours with tuning (the tuned row), in another fresh root:",
        f"{python} -m pipeline run --config {shlex.quote(args.config)} --set root=$TMP_ROOT2"
        + "".join(f" --set {o}" for o in ours.TUNED_OVERRIDES),
        "",
        "# Monitoring benchmark alone (the skew check on 100,000 logged requests vs TFDV):",
        f"{python} -m bench --monitoring-only --output $TMP_REPORT",
    ]


def _serve_commands(python: str, model_dir: str) -> list[str]:
    """Shell lines that start a server like the serving benchmark does."""
    return [
        "",
        "# Serving benchmark: each server it starts (free port, fresh log directory):",
        f"{python} -m pipeline serve --model-dir {model_dir} --host {serving.HOST} "
        "--port $PORT --grpc-port $GRPC_PORT --log-dir $TMP_LOG",
    ]


def _in_workspace(
    args: argparse.Namespace, prefix: str, kept: str, run: Callable[[Path], T]
) -> T | None:
    """Runs `run` in a fresh temporary directory, kept with ``--keep``; None if it failed."""
    workspace = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return run(workspace)
    except (RunFailedError, FileNotFoundError, ValueError) as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return None
    finally:
        if args.keep:
            print(f"bench: kept {kept} in {workspace}", file=sys.stderr)
        else:
            shutil.rmtree(workspace, ignore_errors=True)


def _main_serving_only(args: argparse.Namespace, argv: list[str]) -> int:
    """``--serving-only``: benchmarks serving an existing model directory."""
    started = datetime.now(timezone.utc)
    run = _in_workspace(
        args,
        "taxifare-bench-serving-",
        "the servers' files",
        lambda workspace: _run_serving(
            args.model_dir.resolve(), reference.find_reference(), workspace
        ),
    )
    if run is None:
        return 1
    commands = [
        "# This report, from the repository root:",
        shlex.join([_display_python(), "-m", "bench", *argv]),
        *_serve_commands(_display_python(), shlex.quote(str(args.model_dir))),
    ]
    how = report.write_partial(
        args.output,
        "Serving benchmark",
        "--serving-only",
        f"{started:%Y-%m-%d %H:%M}",
        report.machine_lines(machine.describe()),
        report.serving_section(run),
        commands,
    )
    print("\n".join(report.serving_summary(run)))
    print(f"bench: {how} {_display_path(args.output)}")
    return 0


def _run_monitoring(data_csv: Path, workspace: Path) -> monitoring.MonitoringRun:
    """Times the skew check on 100,000 logged requests next to TFDV's statistics pass."""
    print("bench: benchmarking the skew check ...", flush=True)
    workspace.mkdir(parents=True, exist_ok=True)
    try:
        return monitoring.run(
            data_csv, workspace, progress=lambda line: print(f"bench: {line}", flush=True)
        )
    except monitoring.MonitoringBenchError as err:
        raise RunFailedError(f"the monitoring benchmark failed: {err}") from err


def _run_detection(
    root: Path, model_dir: Path, data_csv: Path, workspace: Path
) -> detection.DetectionRun:
    """The skew check's false alarms and detection power (see bench/detection.py)."""
    print("bench: measuring the skew check's detection power and false alarms ...", flush=True)
    workspace.mkdir(parents=True, exist_ok=True)
    version_dir = serving.latest_version(model_dir)
    try:
        return detection.run(
            data_csv,
            root,
            version_dir,
            workspace,
            lambda models, log_dir, output: serving.Server(models, log_dir, output, REPO_ROOT),
            progress=lambda line: print(f"bench: {line}", flush=True),
        )
    except (RuntimeError, serving.ServingError) as err:
        raise RunFailedError(f"the detection benchmark failed: {err}") from err


def _main_detection_only(args: argparse.Namespace) -> int:
    """``--detection-only``: our pipeline, then the skew check's detection figures."""
    started = datetime.now(timezone.utc)

    def measure(workspace: Path) -> detection.DetectionRun:
        _, summary = _run_ours(args, workspace)
        model_dir = _pushed_model_dir(summary)
        if model_dir is None:
            raise RunFailedError("our run pushed no model (it was not blessed)")
        return _run_detection(
            workspace / "ours" / "root",
            model_dir,
            reference.find_reference().data_csv,
            workspace / "detection",
        )

    run = _in_workspace(args, "taxifare-bench-detection-", "the logs and verdicts", measure)
    return _write_partial(
        args, started, "Skew detection benchmark", "--detection-only", run, detection
    )


def _main_monitoring_only(args: argparse.Namespace) -> int:
    """``--monitoring-only``: the skew check against TFDV's statistics pass, nothing else."""
    started = datetime.now(timezone.utc)
    run = _in_workspace(
        args,
        "taxifare-bench-monitoring-",
        "the log and reports",
        lambda workspace: _run_monitoring(reference.find_reference().data_csv, workspace),
    )
    return _write_partial(
        args, started, "Monitoring benchmark", "--monitoring-only", run, monitoring
    )


def _write_partial(
    args: argparse.Namespace,
    started: datetime,
    title: str,
    flag: str,
    run: Any,
    part: Any,
    argv: list[str] | None = None,
) -> int:
    """Writes the report of one part of the benchmark run alone (1 when it failed)."""
    if run is None:
        return 1
    how = report.write_partial(
        args.output,
        title,
        flag,
        f"{started:%Y-%m-%d %H:%M}",
        report.machine_lines(machine.describe()),
        part.markdown_section(run),
        [
            "# From the repository root:",
            shlex.join([_display_python(), "-m", "bench", *(argv or [flag])]),
        ],
    )
    print("\n".join(part.summary_lines(run)))
    print(f"bench: {how} {_display_path(args.output)}")
    return 0


def _main_trainer_input(args: argparse.Namespace, argv: list[str], part: Any) -> int:
    """``--trainer-input``: the Trainer's streamed input against the same batches in memory."""
    started = datetime.now(timezone.utc)
    run = _in_workspace(
        args,
        "taxifare-bench-trainer-input-",
        "the trips and transformed examples",
        lambda workspace: part.main(args, workspace),
    )
    return _write_partial(
        args, started, "Trainer input benchmark", "--trainer-input", run, part, argv
    )


def _main_cli(args: argparse.Namespace, argv: list[str]) -> int:
    """``--cli``: each read-only command's start-up against the bare interpreter."""
    from bench import cli_startup

    started = datetime.now(timezone.utc)
    run = _in_workspace(
        args, "taxifare-bench-cli-", "the smoke run's root", lambda w: cli_startup.main(args, w)
    )
    return _write_partial(args, started, "Command start-up benchmark", "--cli", run,
                          cli_startup, argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parse_args(argv)
    if args.scale:
        from bench import scale

        return scale.main(args)
    if args.trainer_input:
        from bench import trainer_input

        return _main_trainer_input(args, argv, trainer_input)
    if args.cli:
        return _main_cli(args, argv)
    if args.serving_only:
        return _main_serving_only(args, argv)
    if args.monitoring_only:
        return _main_monitoring_only(args)
    if args.detection_only:
        return _main_detection_only(args)
    started = datetime.now(timezone.utc)
    workspace = Path(tempfile.mkdtemp(prefix="taxifare-bench-"))
    try:
        example = reference.find_reference()
        our_run, summary = _run_ours(args, workspace)
        reference_run = None if args.skip_reference else _run_reference(args, workspace, example)
        train_rows, eval_rows, test_rows, scores = _score_baselines(summary)
        tuned, tuned_note = None, "skipped with --skip-tuning"
        if not args.skip_tuning:
            tuned_run, tuned_summary = _run_ours(args, workspace, "tuned", ours.TUNED_OVERRIDES)
            tuned = OursRun(tuned_run, tuned_summary, train_rows, test_rows, eval_rows=eval_rows)
        serving_run, serving_note = None, ""
        model_dir = _pushed_model_dir(summary)
        if args.skip_serving:
            serving_note = "skipped with --skip-serving"
        elif model_dir is None:
            serving_note = "our run pushed no model (it was not blessed)"
        else:
            serving_run = _run_serving(model_dir, example, workspace / "serving")
        monitoring_run, monitoring_note = None, "skipped with --skip-monitoring"
        if not args.skip_monitoring:
            monitoring_run = _run_monitoring(example.data_csv, workspace / "monitoring")
        detection_run, detection_note = None, "skipped with --skip-detection"
        if model_dir is None:
            detection_note = "our run pushed no model (it was not blessed)"
        elif not args.skip_detection:
            detection_run = _run_detection(
                workspace / "ours" / "root", model_dir, example.data_csv, workspace / "detection"
            )
    except RunFailedError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        if not args.keep:
            print("bench: re-run with --keep to inspect the run's files and logs", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"bench: kept run directories and logs in {workspace}", file=sys.stderr)
        else:
            shutil.rmtree(workspace, ignore_errors=True)

    results = BenchResults(
        started=started,
        machine=machine.describe(),
        example=example,
        reference=reference_run,
        ours=OursRun(our_run, summary, train_rows, test_rows, scores, eval_rows),
        config=args.config,
        serving=serving_run,
        serving_note=serving_note,
        tuned=tuned,
        tuned_note=tuned_note,
    )
    markdown = report.render_markdown(
        results, _commands(args, argv), monitoring_run, monitoring_note
    )
    from bench.cli_startup import SECTION_TITLE as CLI_TITLE
    from bench.scale import SECTION_TITLE as SCALE_TITLE
    from bench.trainer_input import SECTION_TITLE as TRAINER_INPUT_TITLE

    old_report = args.output.read_text() if args.output.exists() else ""
    # Measured by --scale, --trainer-input and --cli only: kept as they were.
    scale_section = report.section_text(old_report, SCALE_TITLE)
    trainer_input_section = report.section_text(old_report, TRAINER_INPUT_TITLE)
    cli_section = report.section_text(old_report, CLI_TITLE)
    full = (
        markdown.rstrip("\n")
        + "\n\n"
        + "\n".join(detection.markdown_section(detection_run, detection_note))
        + "\n"
        + (f"\n{trainer_input_section}" if trainer_input_section else "")
        + (f"\n{cli_section}" if cli_section else "")
        + (f"\n{scale_section}" if scale_section else "")
    )
    # A part skipped in this run keeps the figures an earlier run wrote (marked as such).
    skipped = [
        heading
        for heading, skip in (
            ("## Serving", serving_run is None and args.skip_serving),
            ("## Monitoring (skew check)", args.skip_monitoring),
            ("## Skew detection: power and false alarms", args.skip_detection),
        )
        if skip
    ]
    args.output.write_text(report.keep_sections(full, old_report, skipped))
    print(report.render_summary(results, monitoring_run, monitoring_note))
    print("\n".join(detection.summary_lines(detection_run, detection_note)))
    print(f"bench: wrote {_display_path(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
