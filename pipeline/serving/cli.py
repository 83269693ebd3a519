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

from pipeline.cli_args import add_config_args
from pipeline.serving import config as serve_config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


# Flags of `taxifare serve` -> (field of the `serving:` config section, type, help).
# Every flag defaults to None: only a flag that is given overrides the config.
_SERVE_FLAGS: dict[str, tuple[str, type, str]] = {
    "--model-dir": (
        "model_dir",
        str,
        "the versioned model directory the Pusher writes: <serving root>/<model name>"
        " (default: the config's)",
    ),
    "--model-name": ("model_name", str, "the model name in URLs and gRPC model specs"),
    "--host": ("host", str, "address to bind (default 127.0.0.1, loopback only)"),
    "--port": ("port", int, "the REST port (default 8501)"),
    "--grpc-port": ("grpc_port", int, "also serve TF Serving's gRPC API here (e.g. 8500)"),
    "--workers": ("workers", int, "server processes, each with its own copy of the model"),
    "--log-dir": ("log_dir", str, "write the request log (TFRecord) here; off if unset"),
    "--log-sample-rate": ("log_sample_rate", float, "fraction of requests logged, 0..1"),
    "--max-body-bytes": ("max_body_bytes", int, "larger bodies / gRPC messages are refused"),
    "--max-instances": ("max_instances", int, "most instances per request"),
    "--max-batch-size": ("max_batch_size", int, "most instances merged into one model call"),
    "--max-wait-ms": (
        "max_wait_ms",
        float,
        "how long a batch that could start waits for more requests to share its model call;"
        " 0 runs at once, and requests arriving during a call share the next one",
    ),
    "--batch-threads": ("batch_threads", int, "model calls that may run at once per process"),
    "--grpc-max-calls": (
        "grpc_max_calls",
        int,
        "gRPC calls in progress at once per process; more get RESOURCE_EXHAUSTED",
    ),
    "--poll-seconds": ("poll_seconds", float, "how often to look for a newly pushed version"),
    "--empty-version-timeout": (
        "empty_version_timeout_seconds",
        float,
        "seconds a version folder may stay without a model before it is reported failed",
    ),
    "--max-fare": (
        "max_fare",
        float,
        "a predicted fare beyond this is never answered (default: the schema's fare maximum)",
    ),
    "--max-header-bytes": ("max_header_bytes", int, "larger request heads get 431"),
    "--header-timeout": ("header_timeout_seconds", float, "seconds to send a request head"),
    "--body-timeout": ("body_timeout_seconds", float, "seconds to send a request body (408)"),
    "--keep-alive": ("keep_alive_seconds", float, "seconds an idle connection is kept"),
    "--write-timeout": (
        "write_timeout_seconds",
        float,
        "seconds a client may leave an answer unread before its connection is dropped",
    ),
    "--max-connections": ("max_connections", int, "connections beyond this get 503"),
    "--shutdown-timeout": (
        "shutdown_timeout_seconds",
        float,
        "seconds requests in flight get to finish on SIGTERM",
    ),
}


def _add_serve_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the pushed model over TF Serving's REST (and gRPC) API",
        description=(
            "Serve the highest version under the model directory over TF Serving's REST API"
            " (/v1/models/<name>...) and, with --grpc-port, its gRPC PredictionService,"
            " switching to newly pushed versions as they appear, and log every served"
            " instance to --log-dir. Settings come from the `serving:` section of --config;"
            " --set serving.KEY=VALUE and the flags below override single fields."
        ),
    )
    add_config_args(parser, example_override="serving.port=8502")
    for flag, (field, kind, text) in _SERVE_FLAGS.items():
        parser.add_argument(flag, dest=f"serving_{field}", type=kind, default=None, help=text)
    parser.add_argument(
        "--log-rotate-mb",
        type=float,
        default=None,
        help="start a new log file past this size in MiB (default 64)",
    )
    parser.add_argument(
        "--log-rotate-minutes",
        type=float,
        default=None,
        help="... or when the current one is this old (default 60)",
    )
    parser.add_argument(
        "--strict-examples",
        dest="serving_strict_examples",
        action="store_const",
        const=True,
        default=None,
        help="reject tf.Example features the model does not declare (default: ignore them,"
        " as TF Serving does, and count them in /stats)",
    )


def serve_config_from_args(args: argparse.Namespace) -> serve_config.ServeConfig:
    """The serving settings: the config file's `serving:` section, `--set` overrides, then
    the flags that were given; relative paths made absolute.

    Raises:
      ConfigError: the file, an override or a flag value is invalid (names the key).
    """
    from pydantic import ValidationError

    from pipeline.config import ConfigError, _format_error, load_config

    cfg = load_config(args.config, args.overrides)
    values = cfg.serving.model_dump()
    for key, value in vars(args).items():
        if key.startswith("serving_") and value is not None:
            values[key[len("serving_") :]] = value
    if args.log_rotate_mb is not None:
        values["log_rotate_bytes"] = int(args.log_rotate_mb * 2**20)
    if args.log_rotate_minutes is not None:
        values["log_rotate_seconds"] = args.log_rotate_minutes * 60
    values["model_dir"] = os.path.abspath(values["model_dir"] or cfg.serving_model_dir)
    if values["log_dir"]:
        values["log_dir"] = os.path.abspath(values["log_dir"])
    try:
        return serve_config.ServeConfig.model_validate(values)
    except ValidationError as e:
        message = _format_error(e, f"{args.config} (serving section, with flags)")
        raise ConfigError(message.replace("\n  ", "\n  serving.")) from None


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
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--url", default="http://127.0.0.1:8501", help="a REST server (default: %(default)s)"
    )
    target.add_argument("--grpc", metavar="HOST:PORT", help="a gRPC server (TF Serving's API)")
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
    """`taxifare serve`: runs the server until stopped."""
    from pipeline.config import ConfigError

    try:
        cfg = serve_config_from_args(args)
    except ConfigError as e:
        print(f"taxifare: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not os.path.isdir(cfg.model_dir):
        print(
            f"taxifare: no model directory at {cfg.model_dir} (run the pipeline so the Pusher"
            " writes one, or point --model-dir at <serving root>/<model name>)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if cfg.log_dir:
        try:
            os.makedirs(cfg.log_dir, exist_ok=True)
        except OSError as e:
            print(f"taxifare: cannot create --log-dir {cfg.log_dir}: {e}", file=sys.stderr)
            return EXIT_USAGE
        if not os.access(cfg.log_dir, os.W_OK):
            print(f"taxifare: --log-dir {cfg.log_dir} is not writable", file=sys.stderr)
            return EXIT_USAGE
    from pipeline.serving.server import NO_AUTH_WARNING, serve

    grpc = f" and grpc://{cfg.host}:{cfg.grpc_port}" if cfg.grpc_port is not None else ""
    print(
        f"taxifare: serving {cfg.model_dir} as model '{cfg.model_name}' on"
        f" http://{cfg.host}:{cfg.port}{grpc} ({cfg.workers} worker(s))",
        file=sys.stderr,
        flush=True,
    )
    if not cfg.is_loopback:
        print(f"taxifare: warning: {NO_AUTH_WARNING.format(host=cfg.host)}", file=sys.stderr)
    return serve(cfg, verbose=args.verbose)


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
        if args.grpc:
            from pipeline.serving.client import predict_grpc

            predict_fn = predict_grpc
            target = args.grpc
        else:
            predict_fn = predict
            target = args.url
        fares = predict_fn(
            target,
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
