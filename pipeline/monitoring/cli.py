"""`taxifare skew` and `taxifare drift`: the checks on demand.

Exit codes: 0 nothing found; 5 skew (or drift) found, `verdict.json` and `report.html` say
where; 2 usage error (bad flags, missing or empty inputs, statistics of another schema, a
threshold out of range); 1 the check itself failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from pipeline.curated_schema import shipped_schema_file
from taxifare_modules import features as f

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_FOUND = 5

SKEW_KEYS = f.SKEW_KEYS
DRIFT_KEYS = f.DRIFT_KEYS


def add_monitoring_parsers(subparsers: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Registers `skew` and `drift` on the `taxifare` subparsers.

    Args:
      subparsers: what `ArgumentParser.add_subparsers()` returned.

    Returns:
      The command functions by subcommand name; each returns the exit code.
    """
    skew = subparsers.add_parser(
        "skew",
        help="compare a request log with the training data (training/serving skew)",
        description="Compare the requests a server logged with the data its model was trained"
        " on (training/serving skew). Exit 0: no skew; 5: skew found (verdict.json and"
        " report.html say where); 2: usage error; 1: the check failed.",
    )
    skew.add_argument(
        "--serving-logs",
        required=True,
        help="the request log directory of `taxifare serve`, or Vertex's request-response"
        " logging rows: a BigQuery table (bq://project.dataset.table) or its JSONL export",
    )
    source = skew.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--pipeline-root",
        "--root",
        dest="pipeline_root",
        help="a pipeline root: the training statistics and schema of the model version that"
        " served the logged requests, found through its lineage in MLMD",
    )
    source.add_argument(
        "--training-stats", help="TFDV statistics of the training data (binary or text)"
    )
    skew.add_argument(
        "--model",
        help="the served SavedModel (a version folder): also compare what it computes (trip"
        " distance, predicted fare) with what it computed on its eval split; with"
        " --pipeline-root, the pushed model of the logged version is used",
    )
    _common(skew)
    drift = subparsers.add_parser(
        "drift",
        help="compare two spans of training data (data drift)",
        description="Compare two spans of training data, or their statistics (data drift)."
        " Exit 0: no drift; 5: drift found (verdict.json and report.html say where);"
        " 2: usage error; 1: the check failed.",
    )
    drift.add_argument("--baseline", required=True, help="data (CSV/TFRecord) or statistics")
    drift.add_argument("--current", required=True, help="data (CSV/TFRecord) or statistics")
    _common(drift)
    return {"skew": cmd_skew, "drift": cmd_drift}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", help="schema (.pbtxt); default: the run's, else the curated")
    parser.add_argument(
        "--config", help="YAML with a `monitoring:` section of thresholds (default: built-in)"
    )
    parser.add_argument("--out", required=True, help="where verdict.json and report.html go")
    parser.add_argument("--verbose", action="store_true", help="show TFDV and Beam logs")


def _curated_schema_file() -> str:
    # The shipped schema, as curated_schema_file resolves it without a config
    # (importing the DAG would load all of TFX for a path).
    return shipped_schema_file()


def _load_schema(path: str) -> Any:
    import tensorflow_data_validation as tfdv

    from pipeline.monitoring.stats import InputError

    try:
        return tfdv.load_schema_text(path)
    except Exception as e:  # noqa: BLE001 - any read/parse failure is a usage error
        raise InputError(f"cannot read schema {path}: {e}") from e


def _thresholds(args: argparse.Namespace) -> Any:
    from pipeline.monitoring.thresholds import default_thresholds, load_thresholds

    return load_thresholds(args.config) if args.config else default_thresholds()


def _check_out(out_dir: str) -> None:
    """Raises InputError when `--out` cannot be a folder (checked before the long work)."""
    import tensorflow as tf

    from pipeline.monitoring.stats import InputError

    if tf.io.gfile.exists(out_dir) and not tf.io.gfile.isdir(out_dir):
        raise InputError(
            f"--out {out_dir} is a file; give a folder for verdict.json and report.html"
        )


def _finish(verdict: dict[str, Any], out_dir: str) -> int:
    from pipeline.monitoring.compare import TOO_FEW
    from pipeline.monitoring.report import write_outputs

    json_path, html_path = write_outputs(verdict, out_dir)
    failed = verdict["failed_features"]
    if verdict["found"]:
        print(
            f"{verdict['check']} found in {len(failed)} of {verdict['features_checked']} "
            f"features: {', '.join(failed) or '(dataset)'}"
        )
    elif verdict["verdict"] == TOO_FEW:
        print(f"{verdict['check']} not judged: {verdict['notes'][-1]}")
    else:
        print(f"no {verdict['check']}: {verdict['features_checked']} features checked")
    sides = "; ".join(f"{name} {side['examples']:,}" for name, side in verdict["sides"].items())
    print(f"examples: {sides}")
    if verdict.get("not_compared"):
        print(
            f"not compared: {', '.join(verdict['not_compared'])} (identify the span; presence"
            " and schema checked)"
        )
    print(f"verdict: {json_path}\nreport: {html_path}")
    return EXIT_FOUND if verdict["found"] else EXIT_OK


def _serving_log(location: str, workdir: str) -> tuple[str, str]:
    """The request log to read, and how to name it: `taxifare serve`'s log as it is, or
    Vertex's request-response logging rows (a BigQuery table or its JSONL export) turned
    into one in `workdir`."""
    from pipeline.monitoring.vertex_log import convert_vertex_log, is_vertex_log

    if not is_vertex_log(location):
        return location, f"request log {location}"
    converted = os.path.join(workdir, "vertex-log")
    count = convert_vertex_log(location, converted)
    print(f"taxifare: read {count:,} logged instances from {location}", file=sys.stderr)
    return converted, f"Vertex request-response log {location}"


def run_skew(args: argparse.Namespace) -> dict[str, Any]:
    """The skew check; returns the verdict. Raises InputError/ThresholdError on bad input.

    With `--pipeline-root`, the training side is the one of the model that served the
    requests: the log's model version, looked up in the pipeline's MLMD (see lineage.py).
    When the log holds several versions, the newest is checked, on the requests it answered
    (a second pass over the log), and the verdict says which versions were found.
    """
    from pipeline.monitoring import stats
    from pipeline.monitoring.compare import SKEW, Side, compare

    thresholds = _thresholds(args)
    _check_out(args.out)
    notes: list[str] = []
    extra: dict[str, Any] = {}
    stats_file, schema_file = args.training_stats, args.schema
    if stats_file:  # read before the pass over the log: a bad file fails fast
        stats.load_statistics_file(stats_file)
    with tempfile.TemporaryDirectory(prefix="taxifare-skew-") as workdir:
        log_dir, serving_source = _serving_log(args.serving_logs, workdir)
        serving_stats = stats.serving_statistics(
            log_dir, workdir, with_versions=bool(args.pipeline_root)
        )
        if args.pipeline_root:
            from pipeline.monitoring import lineage

            versions = stats.model_versions(serving_stats)
            if not versions:
                raise stats.InputError(
                    f"request log {args.serving_logs} records no model version (not written"
                    " by `taxifare serve`?); pass --training-stats instead of --pipeline-root"
                )
            version = max(versions)
            store = lineage.open_pipeline_store(args.pipeline_root)
            trained = lineage.training_inputs(store, version, args.pipeline_root)
            extra = {
                "model_version": version,
                "log_model_versions": {str(v): n for v, n in sorted(versions.items())},
                "model_uri": trained.model_uri,
            }
            if len(versions) > 1:
                listed = ", ".join(f"{v} ({n:,} instances)" for v, n in sorted(versions.items()))
                notes.append(
                    f"the request log holds {len(versions)} model versions: {listed}; checked"
                    f" the newest, {version}, on the {versions[version]:,} instances it answered"
                )
                print(f"taxifare: {notes[-1]}", file=sys.stderr)
                serving_stats = stats.version_statistics(log_dir, workdir, version)
                serving_source += f" (model version {version} only)"
            else:
                serving_source += f" (model version {version})"
            stats_file = trained.statistics_file
            schema_file = args.schema or trained.schema_file
            model_dir = args.model or trained.pushed_uri
        else:
            version, model_dir = None, args.model
        serving = Side(serving_stats, serving_source)
        derived = None
        if model_dir:
            reference = stats.derived_reference_statistics(model_dir, workdir)
            if reference is None:
                notes.append(
                    f"the model {model_dir} records no reference of what it computes: only"
                    " the raw fields were compared"
                )
            else:
                derived = (
                    Side(reference, f"the model's eval split ({model_dir})"),
                    Side(
                        stats.derived_serving_statistics(log_dir, model_dir, workdir, version),
                        serving_source,
                    ),
                )
    training = Side(stats.load_statistics_file(stats_file), f"statistics {stats_file}")
    schema = _load_schema(schema_file or _curated_schema_file())
    verdict = compare(SKEW, training, serving, schema, thresholds, SKEW_KEYS, derived=derived)
    verdict.update(extra)
    if notes:
        verdict["notes"] = notes + verdict.get("notes", [])
    return verdict


def run_drift(args: argparse.Namespace) -> dict[str, Any]:
    """The drift check; returns the verdict. Raises InputError/ThresholdError on bad input."""
    from pipeline.monitoring import stats
    from pipeline.monitoring.compare import DRIFT, Side, compare

    thresholds = _thresholds(args)
    _check_out(args.out)
    schema = _load_schema(args.schema or _curated_schema_file())
    with tempfile.TemporaryDirectory(prefix="taxifare-drift-") as workdir:
        baseline = Side(*stats.data_or_stats(args.baseline, DRIFT_KEYS, workdir))
        current = Side(*stats.data_or_stats(args.current, DRIFT_KEYS, workdir))
    return compare(DRIFT, baseline, current, schema, thresholds, DRIFT_KEYS)


def _run(run: Callable[[argparse.Namespace], dict[str, Any]], args: argparse.Namespace) -> int:
    from pipeline.monitoring.stats import InputError
    from pipeline.monitoring.thresholds import ThresholdError

    try:
        verdict = run(args)
    except (InputError, ThresholdError) as e:
        print(f"taxifare: {e}", file=sys.stderr)
        return EXIT_USAGE
    return _finish(verdict, args.out)


def cmd_skew(args: argparse.Namespace) -> int:
    """`taxifare skew`: serving traffic against the training data."""
    return _run(run_skew, args)


def cmd_drift(args: argparse.Namespace) -> int:
    """`taxifare drift`: the current span of data against a baseline span."""
    return _run(run_drift, args)


def main(argv: list[str] | None = None) -> int:
    """Runs `skew` or `drift` standalone (the `taxifare` CLI registers the same parsers)."""
    from pipeline.env import configure_environment

    parser = argparse.ArgumentParser(prog="taxifare")
    commands = add_monitoring_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    configure_environment(verbose=args.verbose)
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
