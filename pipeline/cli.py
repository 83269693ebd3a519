"""The `taxifare` command line.

Exit codes: 0 success; 1 a component failed; 2 usage or config error (nothing ran);
3 the data has anomalies against the schema (the gate stopped the run, nothing pushed);
4 the model was trained but not blessed (nothing pushed); 5 skew or drift found (`skew`,
`drift`; and `run` when `monitoring.*.on_detect` is `stop`: nothing trained or pushed).
"""

from __future__ import annotations

import argparse
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
    run = sub.add_parser("run", help="run the whole pipeline locally")
    add_config_args(run)
    infer = sub.add_parser(
        "infer-schema", help="infer a schema from the configured data and write it for review"
    )
    add_config_args(infer)
    infer.add_argument("--output", required=True, help="where to write the schema (.pbtxt)")
    from pipeline.serving.cli import add_serve_parsers

    _COMMANDS.update(add_serve_parsers(sub))
    from pipeline.vertex.cli import add_vertex_parsers

    _COMMANDS.update(add_vertex_parsers(sub))
    from pipeline.monitoring.cli import add_monitoring_parsers

    _COMMANDS.update(add_monitoring_parsers(sub))
    return parser


def _load(args: argparse.Namespace):
    from pipeline.config import ConfigError, load_config

    try:
        return load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"taxifare: {e}", file=sys.stderr)
        return None


def _check_input(cfg) -> bool:
    from pipeline.data_source import DataSourceError, resolve_input

    try:
        resolve_input(cfg)
    except DataSourceError as e:
        print(f"taxifare: {e}", file=sys.stderr)
        return False
    logs = cfg.monitoring.skew.serving_logs
    if logs is not None and not logs.startswith("gs://") and not os.path.isdir(logs):
        print(
            f"taxifare: monitoring.skew.serving_logs: request log folder not found: {logs}"
            " (the --log-dir of `taxifare serve`; null for no skew check)",
            file=sys.stderr,
        )
        return False
    return True


def cmd_run(args: argparse.Namespace) -> int:
    """`taxifare run`: the whole pipeline, then the summary."""
    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    if cfg.vertex is not None:
        print(
            f"taxifare: {args.config} has a vertex section: it runs on Vertex AI, not here."
            " Use 'taxifare compile' and 'taxifare submit' (or drop the vertex section).",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not _check_input(cfg):
        return EXIT_USAGE
    from pipeline.runner import run_local
    from pipeline.summary import build_summary, render, write_summary

    print(
        f"taxifare: running pipeline '{cfg.name}' ({cfg.orchestrator.runner} orchestrator)"
        f" into {cfg.root}",
        flush=True,
    )
    outcome = run_local(cfg)
    summary = build_summary(cfg, outcome.nodes, outcome.seconds)
    write_summary(summary, cfg)
    if outcome.error is not None:
        from pipeline import dag
        from pipeline.anomalies import format_anomalies

        if summary.anomalies and summary.components.get(dag.ANOMALY_GATE_ID) == "FAILED":
            print(
                f"\ntaxifare: the data has {len(summary.anomalies)} anomalies against the schema;"
                " the run stopped before Transform. Nothing was trained or pushed.\n"
                + format_anomalies(summary.anomalies),
                file=sys.stderr,
            )
            return EXIT_ANOMALIES
        if summary.monitoring_stopped:
            print(render(summary, cfg))
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
        where = summary.failed_node or "the pipeline"
        # Beam wraps a component's error in its own traceback text; the last line is the cause.
        lines = [line for line in str(outcome.error).strip().splitlines() if line.strip()]
        cause = lines[-1] if lines else type(outcome.error).__name__
        print(
            f"\ntaxifare: {where} failed: {cause}\n"
            f"(artifacts and MLMD under {cfg.root}; re-run with --verbose for the full logs)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(render(summary, cfg))
    if summary.blessed is False:
        return EXIT_NOT_BLESSED
    return EXIT_OK


def cmd_infer_schema(args: argparse.Namespace) -> int:
    """`taxifare infer-schema`: ExampleGen → StatisticsGen → SchemaGen, schema written out."""
    cfg = _load(args)
    if cfg is None or not _check_input(cfg):
        return EXIT_USAGE
    import os
    import shutil

    from pipeline import dag
    from pipeline.runner import run_local

    cfg = cfg.model_copy(
        update={"schema_": cfg.schema_config.model_copy(update={"source": "inferred"})}
    )
    outcome = run_local(cfg, until=dag.SCHEMA_GEN_ID)
    node = outcome.nodes.get(dag.SCHEMA_GEN_ID)
    if outcome.error is not None or node is None or not node.outputs.get("schema"):
        print(f"taxifare: schema inference failed: {outcome.error}", file=sys.stderr)
        return EXIT_FAILED
    source = os.path.join(node.outputs["schema"][0].uri, "schema.pbtxt")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    shutil.copyfile(source, args.output)
    print(
        f"taxifare: inferred schema written to {args.output}; review it, then point"
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
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
