"""The `serve` and `predict` subcommands, registered on the `taxifare` parser.

Exit codes: 0 success; 1 failure (the server could not start, or a prediction request was
refused or could not be sent); 2 usage error (bad flag value, missing model directory or
unreadable instances file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from pipeline.serving import config as serve_config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _add_serve_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the pushed model over TF Serving's REST API",
        description=(
            "Serve the highest version under --model-dir over TF Serving's REST API"
            " (/v1/models/<name>...), switching to newly pushed versions as they appear,"
            " and log every served instance to --log-dir."
        ),
    )
    parser.add_argument(
        "--model-dir",
        required=True,
        help="the versioned model directory the Pusher writes: <serving root>/<model name>",
    )
    parser.add_argument(
        "--model-name",
        default=serve_config.DEFAULT_MODEL_NAME,
        help="the model name in the URLs (default: %(default)s)",
    )
    parser.add_argument(
        "--host",
        default=serve_config.DEFAULT_HOST,
        help="address to bind (default: %(default)s, loopback only; 0.0.0.0 for all)",
    )
    parser.add_argument(
        "--port", type=int, default=serve_config.DEFAULT_PORT, help="(default: %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes, each with its own copy of the model (default: %(default)s)",
    )
    parser.add_argument("--log-dir", help="write the request log (TFRecord) here; off if unset")
    parser.add_argument(
        "--log-sample-rate",
        type=float,
        default=1.0,
        help="fraction of requests logged, 0..1 (default: %(default)s)",
    )
    parser.add_argument(
        "--log-rotate-mb",
        type=float,
        default=serve_config.DEFAULT_LOG_ROTATE_BYTES / 2**20,
        help="start a new log file past this size in MiB (default: %(default)s)",
    )
    parser.add_argument(
        "--log-rotate-minutes",
        type=float,
        default=serve_config.DEFAULT_LOG_ROTATE_SECONDS / 60,
        help="... or when the current one is this old (default: %(default)s)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=serve_config.DEFAULT_MAX_BODY_BYTES,
        help="larger request bodies get 413 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-instances",
        type=int,
        default=serve_config.DEFAULT_MAX_INSTANCES,
        help="most instances per request (default: %(default)s)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=serve_config.DEFAULT_MAX_BATCH_SIZE,
        help="most instances merged into one model call (default: %(default)s)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=serve_config.DEFAULT_MAX_WAIT_MS,
        help=(
            "how long a batch that could start waits for more requests to share its model call;"
            " 0 runs at once, and requests arriving during a call share the next one"
            " (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--batch-threads",
        type=int,
        default=1,
        help="model calls that may run at once per process (default: %(default)s)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=1.0,
        help="how often to look for a newly pushed version (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")


def _add_predict_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="send trips to a running server and print the predicted fares",
        description=(
            "Send trips from a JSON file (a list of instances or {'instances': [...]}; '-' for"
            " stdin) or a CSV file in the training data's layout to a running server and print"
            " one predicted fare per line."
        ),
    )
    parser.add_argument(
        "--url", default="http://127.0.0.1:8501", help="the server (default: %(default)s)"
    )
    parser.add_argument("--instances", required=True, help="a .json or .csv file of trips")
    parser.add_argument(
        "--model-name", default=serve_config.DEFAULT_MODEL_NAME, help="(default: %(default)s)"
    )
    parser.add_argument("--model-version", type=int, help="a specific version (default: latest)")
    parser.add_argument("--signature-name", help="default: chosen by the server")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="instances per request (default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--json", action="store_true", help='print {"predictions": [...]}')
    parser.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)


def cmd_serve(args: argparse.Namespace) -> int:
    """`taxifare serve`: runs the REST server until stopped."""
    if not os.path.isdir(args.model_dir):
        print(
            f"taxifare: no model directory at {args.model_dir} (run the pipeline so the Pusher"
            " writes one, or point --model-dir at <serving root>/<model name>)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.log_dir:
        try:
            os.makedirs(args.log_dir, exist_ok=True)
        except OSError as e:
            print(f"taxifare: cannot create --log-dir {args.log_dir}: {e}", file=sys.stderr)
            return EXIT_USAGE
        if not os.access(args.log_dir, os.W_OK):
            print(f"taxifare: --log-dir {args.log_dir} is not writable", file=sys.stderr)
            return EXIT_USAGE
    if args.workers < 1:
        print(f"taxifare: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = serve_config.ServeConfig(
            model_dir=os.path.abspath(args.model_dir),
            model_name=args.model_name,
            host=args.host,
            port=args.port,
            log_dir=os.path.abspath(args.log_dir) if args.log_dir else None,
            log_sample_rate=args.log_sample_rate,
            log_rotate_bytes=int(args.log_rotate_mb * 2**20),
            log_rotate_seconds=args.log_rotate_minutes * 60,
            max_body_bytes=args.max_body_bytes,
            max_instances=args.max_instances,
            max_batch_size=args.max_batch_size,
            max_wait_ms=args.max_wait_ms,
            batch_threads=args.batch_threads,
            poll_seconds=args.poll_seconds,
        )
    except serve_config.ConfigError as e:
        print(f"taxifare: {e}", file=sys.stderr)
        return EXIT_USAGE
    from pipeline.serving.server import serve

    print(
        f"taxifare: serving {cfg.model_dir} as model '{cfg.model_name}' on"
        f" http://{cfg.host}:{cfg.port} ({args.workers} worker(s))",
        file=sys.stderr,
        flush=True,
    )
    return serve(cfg, workers=args.workers, verbose=args.verbose)


def cmd_predict(args: argparse.Namespace) -> int:
    """`taxifare predict`: prints one predicted fare per instance."""
    from pipeline.serving.client import InstancesError, PredictError, load_instances, predict

    if args.batch_size < 1:
        print(f"taxifare: --batch-size must be at least 1, got {args.batch_size}", file=sys.stderr)
        return EXIT_USAGE
    try:
        instances = load_instances(args.instances)
    except InstancesError as e:
        print(f"taxifare: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        fares = predict(
            args.url,
            instances,
            model_name=args.model_name,
            version=args.model_version,
            signature_name=args.signature_name,
            batch_size=args.batch_size,
            timeout=args.timeout,
        )
    except PredictError as e:
        print(f"taxifare: {e}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"predictions": fares}))
    else:
        for fare in fares:
            print(fare)
    return EXIT_OK


def add_serve_parsers(subparsers) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Registers `serve` and `predict` on the `taxifare` subparsers.

    Args:
      subparsers: what `ArgumentParser.add_subparsers()` returned.

    Returns:
      The command functions by subcommand name; each returns the exit code.
    """
    _add_serve_parser(subparsers)
    _add_predict_parser(subparsers)
    return {"serve": cmd_serve, "predict": cmd_predict}
