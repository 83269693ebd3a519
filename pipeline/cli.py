"""The `taxifare` command line.

Exit codes: 0 success; 1 a component failed; 2 usage or config error, or an unusable or busy
root (nothing ran); 3 the data is not what it claims to be: a malformed input file (nothing
ran, or ExampleGen stopped on it), too few trips after the fare range (FareFilter stopped the
run) or anomalies against the schema (the gate stopped it); nothing trained or pushed;
4 the model was trained but not blessed (nothing pushed); 5 skew or drift found (`skew`,
`drift`; and `run` when `monitoring.*.on_detect` is `stop`: nothing trained or pushed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from pipeline.cli_args import add_config_args

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ANOMALIES = 3
EXIT_NOT_BLESSED = 4
EXIT_DRIFT_OR_SKEW = 5


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="taxifare",
        description="Train, validate, evaluate and push a taxi-fare model with TFX.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run the whole pipeline locally",
        description="Run the whole pipeline on this machine (ExampleGen to Pusher), then print"
        " its summary and write its report (<root>/runs/<run id>/report.html).",
    )
    add_config_args(run)
    run.add_argument(
        "--no-wait",
        action="store_true",
        help="if another run holds the root, stop at once (exit 2) instead of waiting for it",
    )
    infer = sub.add_parser(
        "infer-schema",
        help="infer a schema from the configured data and write it for review",
        description="Run ExampleGen, StatisticsGen and SchemaGen on the configured data and"
        " write the inferred schema for review.",
    )
    add_config_args(infer)
    infer.add_argument("--output", required=True, help="where to write the schema (.pbtxt)")
    add_history_parsers(sub)
    from pipeline.serving.cli import add_serve_parsers

    _COMMANDS.update(add_serve_parsers(sub))
    from pipeline.vertex.cli import add_vertex_parsers

    _COMMANDS.update(add_vertex_parsers(sub))
    from pipeline.monitoring.cli import add_monitoring_parsers

    _COMMANDS.update(add_monitoring_parsers(sub))
    from pipeline.data.cli import add_data_parsers

    _COMMANDS.update(add_data_parsers(sub))
    _describe_every_command(sub)
    return parser


def _describe_every_command(sub: argparse._SubParsersAction) -> None:
    """Gives each subcommand without a description of its own its one-line help as one."""
    for action in sub._choices_actions:  # noqa: SLF001 - argparse keeps the help lines here
        parser = sub.choices[action.dest]
        if not parser.description and action.help:
            parser.description = action.help[0].upper() + action.help[1:] + "."
        for flag in parser._actions:  # noqa: SLF001
            if flag.dest == "verbose" and flag.help in (None, argparse.SUPPRESS):
                flag.help = "show TensorFlow and library logs"


def add_history_parsers(sub: argparse._SubParsersAction) -> None:
    """Registers `runs` and `report`: what the runs of a root did, read from its MLMD."""
    runs = sub.add_parser(
        "runs",
        help="list the runs of a pipeline root, newest first",
        description="List the runs recorded in a pipeline root's ML Metadata, newest first:"
        " status, input, hyperparameters, metrics, blessing and pushed version.",
    )
    _add_root_arg(runs)
    runs.add_argument("--limit", type=int, default=None, help="show at most this many runs")
    runs.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    runs.add_argument("--verbose", action="store_true", help="show TensorFlow and TFMA logs")
    report = sub.add_parser(
        "report",
        help="write the HTML report of a run (offline, one self-contained file)",
        description="Write one self-contained HTML page about a run: its path through the"
        " pipeline, its data, training curves, evaluation and where the model went.",
    )
    _add_root_arg(report)
    report.add_argument("--run", help="the run id (default: the newest run)")
    report.add_argument("--out", required=True, help="the folder to write report-<run id>.html to")
    report.add_argument("--verbose", action="store_true", help="show TensorFlow and TFMA logs")
    _COMMANDS.update({"runs": cmd_runs, "report": cmd_report})


def _add_root_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        default="build/taxifare",
        help="the pipeline root (the `root` of the config; default: %(default)s)",
    )


def _say(message: str) -> None:
    print(f"taxifare: {message}", file=sys.stderr, flush=True)


def _plan(args: argparse.Namespace, adjust=None):
    """The run's validated plan (pipeline/run_plan.py), or the exit code and one line.

    `adjust`: a change to the loaded config before it is checked (infer-schema's source).
    """
    from pipeline.run_plan import DataError, UsageError, load, plan_run

    try:
        cfg = load(args.config, args.overrides)
        if adjust is not None:
            cfg = adjust(cfg)
        if cfg.vertex is not None:
            raise UsageError(
                f"{args.config} has a vertex section: it runs on Vertex AI, not here."
                " Use 'taxifare compile' and 'taxifare submit' (or drop the vertex section)."
            )
        plan = plan_run(cfg)
    except UsageError as e:
        print(f"taxifare: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except DataError as e:
        print(f"taxifare: {e}", file=sys.stderr, flush=True)
        return EXIT_ANOMALIES
    report = plan.input
    if report is not None and report.duplicate_share > cfg.data.warn_duplicate_share:
        _say(
            f"warning: {report.duplicate_rows:,} of {report.rows:,} rows"
            f" ({report.duplicate_share:.1%}) repeat another row exactly (above"
            f" data.warn_duplicate_share {cfg.data.warn_duplicate_share:g}); they are used"
        )
    return plan


def _report_crash(cfg, run_id: str, error: BaseException) -> int:
    """One line for a run that failed outside any component (e.g. its disk filled up)."""
    import traceback

    from pipeline.components.atomic_pusher import describe_error
    from pipeline.runner import log_path_of

    log_path = log_path_of(cfg, run_id)
    where = f"full traceback: {log_path}"
    try:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "a") as fh:
            fh.write("".join(traceback.format_exception(error)))
    except OSError:
        where = "re-run with --verbose for the traceback"
    print(
        f"taxifare: the run on {cfg.root} failed: {describe_error(error)} ({where})",
        file=sys.stderr,
    )
    return EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    """`taxifare run`: the whole pipeline, then the summary."""
    plan = _plan(args)
    if isinstance(plan, int):
        return plan
    cfg = plan.cfg
    from pipeline.mlmd_store import StoreError
    from pipeline.root_lock import RootBusyError, hold_root
    from pipeline.runner import new_run_id, run_local
    from pipeline.summary import build_summary, render

    run_id = new_run_id()
    try:
        with hold_root(cfg.root, run_id, wait=not args.no_wait, notify=_say):
            _say(
                f"running pipeline '{cfg.name}' ({cfg.orchestrator.runner} orchestrator)"
                f" into {cfg.root}, run {run_id}"
            )
            # Libraries print progress to stdout (Keras' fit); stdout carries only the summary.
            with contextlib.redirect_stdout(sys.stderr):
                outcome = run_local(plan, run_id, verbose=args.verbose, notify=_say)
            summary = build_summary(
                cfg, outcome.nodes, outcome.seconds, run_id=run_id, log_path=outcome.log_path
            )
            summary.duplicate_rows = plan.input.duplicate_rows if plan.input else None
            try:
                _finish_run(summary, cfg, args.config)
            except OSError as e:
                if outcome.error is None:
                    raise
                # The component's failure is the news (a full disk stops Transform, then
                # the report cannot be written either): say that one, and this in a line.
                _say(f"the run's report and summary could not be written: {e}")
    except RootBusyError as e:
        _say(str(e))
        return EXIT_USAGE
    except StoreError as e:
        _say(f"{e}; nothing was run")
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - reported in one line, traceback to the log
        if args.verbose:
            raise
        return _report_crash(cfg, run_id, e)
    if outcome.error is not None:
        from pipeline import dag
        from pipeline.anomalies import format_anomalies
        from pipeline.runner import data_fault_of, error_cause, failed_node_of

        # Bad data is exit 3 whichever component found it (ExampleGen, FareFilter, the gate).
        if (fault := data_fault_of(outcome.error)) is not None:
            where = summary.failed_node or failed_node_of(outcome.error) or "the pipeline"
            print(
                f"taxifare: data: {fault}; the run stopped at {where}. Nothing was trained or"
                " pushed.",
                file=sys.stderr,
            )
            return EXIT_ANOMALIES
        if summary.anomalies and summary.components.get(dag.ANOMALY_GATE_ID) == "FAILED":
            print(
                f"\ntaxifare: the data has {len(summary.anomalies)} anomalies against the schema;"
                " the run stopped before Transform. Nothing was trained or pushed.\n"
                + format_anomalies(summary.anomalies),
                file=sys.stderr,
            )
            return EXIT_ANOMALIES
        if summary.monitoring_stopped:
            print(render(summary, cfg, args.config))
            found = [c for c in (summary.drift, summary.skew) if c is not None and c.stopped]
            print(
                "\ntaxifare: "
                + "; ".join(
                    f"{c.check} found in {', '.join(c.failed_features) or 'the dataset'}"
                    f" (monitoring.{c.check}.on_detect: stop)"
                    for c in found
                )
                + ": the run stopped before Transform. Nothing was trained or pushed; the"
                " pushed model is unchanged.",
                file=sys.stderr,
            )
            return EXIT_DRIFT_OR_SKEW
        where = summary.failed_node or failed_node_of(outcome.error) or "the pipeline"
        print(
            f"taxifare: {where} failed: {error_cause(outcome.error)}"
            f" (full log: {outcome.log_path})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(render(summary, cfg, args.config))
    if summary.blessed is False:
        return EXIT_NOT_BLESSED
    return EXIT_OK


# The run's trips file for `taxifare predict`: how many trips of the tested split it holds.
TRIPS_FILE = "trips.json"
TRIPS_SAMPLE_SIZE = 300


def _finish_run(summary, cfg, config_path: str) -> None:
    """The run's own files: a trips file to ask the served model with, its report, and its
    summary (with the wall time from the start of the process)."""
    from pipeline.progress import process_seconds
    from pipeline.report import reads
    from pipeline.report.page import REPORT_FILE, write_report
    from pipeline.summary import next_steps, run_dir, write_summary

    own = run_dir(cfg, summary.run_id)
    if (summary.pushed_to or summary.already_serving) and summary.examples_uri:
        from pipeline import artifact_io

        # A random sample of the split the model was tested on, large enough for the skew
        # check the summary prints next to judge (the first rows of a split are not a sample).
        rows = reads.sample_examples(
            summary.examples_uri,
            summary.eval_split or "eval",
            TRIPS_SAMPLE_SIZE,
            seed=cfg.training.seed,
        )
        if rows:
            summary.trips_file = os.path.join(own, TRIPS_FILE)
            artifact_io.write_text(
                summary.trips_file, json.dumps(reads.trips_request(rows), indent=2)
            )
    summary.next_steps = next_steps(summary, cfg, config_path)
    if summary.components:  # MLMD recorded the run (it may have failed before any component)
        summary.report = os.path.join(own, REPORT_FILE)
        write_report(cfg.root, summary.report, summary.run_id, summary=summary.to_json())
    summary.wall_seconds = process_seconds()
    write_summary(summary, cfg)


def cmd_runs(args: argparse.Namespace) -> int:
    """`taxifare runs`: the runs of a root, newest first, as a table or JSON."""
    from pipeline.runs import RunsError, format_table, read_runs

    if args.limit is not None and args.limit < 1:
        _say(f"--limit must be at least 1, not {args.limit}")
        return EXIT_USAGE
    try:
        records = read_runs(os.path.abspath(args.root), limit=args.limit)
    except RunsError as e:
        _say(str(e))
        return EXIT_USAGE
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2))
    else:
        print(format_table(records))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """`taxifare report`: one run's HTML page, written under --out; its path on stdout."""
    from pipeline.report.page import write_report
    from pipeline.runs import RunsError, load_run

    root = os.path.abspath(args.root)
    try:
        run_id = args.run or load_run(root)[0].run_id
        path = write_report(root, os.path.join(args.out, f"report-{run_id}.html"), run_id)
    except RunsError as e:
        _say(str(e))
        return EXIT_USAGE
    print(path)
    return EXIT_OK


def cmd_infer_schema(args: argparse.Namespace) -> int:
    """`taxifare infer-schema`: ExampleGen → StatisticsGen → SchemaGen, schema written out."""
    plan = _plan(
        args,
        adjust=lambda cfg: cfg.model_copy(
            update={"schema_": cfg.schema_config.model_copy(update={"source": "inferred"})}
        ),
    )
    if isinstance(plan, int):
        return plan
    import shutil

    from pipeline import dag
    from pipeline.root_lock import hold_root
    from pipeline.runner import error_cause, new_run_id, run_local

    cfg = plan.cfg
    from pipeline.mlmd_store import StoreError

    run_id = new_run_id()
    try:
        with hold_root(cfg.root, run_id, notify=_say):
            outcome = run_local(plan, run_id, until=dag.SCHEMA_GEN_ID, verbose=args.verbose)
    except StoreError as e:
        _say(f"{e}; nothing was run")
        return EXIT_USAGE
    node = outcome.nodes.get(dag.SCHEMA_GEN_ID)
    if outcome.error is not None or node is None or not node.outputs.get("schema"):
        cause = error_cause(outcome.error) if outcome.error is not None else "no schema"
        print(
            f"taxifare: schema inference failed: {cause} (full log: {outcome.log_path})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    source = os.path.join(node.outputs["schema"][0].uri, "schema.pbtxt")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    shutil.copyfile(source, args.output)
    _say(
        f"inferred schema written to {args.output}; review it, then point"
        " schema.path at it (or replace pipeline/schema/schema.pbtxt)"
    )
    return EXIT_OK


_COMMANDS = {"run": cmd_run, "infer-schema": cmd_infer_schema}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `taxifare` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from pipeline.env import configure_environment

    configure_environment(verbose=getattr(args, "verbose", False))
    return _COMMANDS[args.command](args)


def entry() -> None:
    """The console script: runs main, then exits without interpreter teardown.

    TensorFlow's function finalizers print spurious tracebacks when the interpreter tears
    down its modules; everything the command writes is flushed before leaving.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`taxifare runs --json | head`): what it read is all it wanted.
        code = EXIT_OK
    sys.stderr.flush()
    os._exit(code)
