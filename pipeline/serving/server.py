"""Runs the server under uvicorn (REST, and gRPC beside it), in one process or several.

With `workers > 1`, uvicorn's supervisor binds the REST port once and starts that many worker
processes, each importing the app through `app_from_env` (the config travels in an
environment variable); each worker serves gRPC on the shared port too (gRPC binds with
SO_REUSEPORT). Every worker loads the model, batches its own requests and writes its own
request log files (the names carry the process id). The workers are started with
multiprocessing's "spawn", which re-imports the entry script: it must run the command under
`if __name__ == "__main__"` (the `taxifare` console script and `python -m pipeline` do).
SIGTERM, SIGHUP or Ctrl-C stops gracefully: the ports close, requests in flight get
`shutdown_timeout_seconds` to be answered (the rest get 503), then the log is flushed. (With
`workers > 1`, uvicorn's supervisor takes SIGHUP as "restart the workers", each of which
stops gracefully.)
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
from typing import TYPE_CHECKING, Any

from pipeline.serving.config import ServeConfig
from pipeline.serving.http import CONFIG_ENV, protocol_class

if TYPE_CHECKING:
    from pipeline.serving.app import RestApp

_LOG = logging.getLogger(__name__)
VERBOSE_ENV = "TAXIFARE_SERVE_VERBOSE"
# File handles kept for the model folder scan, the log and the listening sockets.
_SPARE_FILES = 256
NO_AUTH_WARNING = (
    "listening on {host}, beyond this machine: this server has no authentication or TLS;"
    " put it behind a proxy or load balancer that provides them"
)


def _configure_logging(verbose: bool) -> None:
    from pipeline.env import configure_environment

    configure_environment(verbose=verbose)
    # The server's own messages (versions loaded, log recovery) show even when quiet.
    logging.getLogger("pipeline.serving").setLevel(logging.INFO)


def app_from_env() -> RestApp:
    """The app factory uvicorn's worker processes import (`module:function`, factory=True)."""
    _configure_logging(os.environ.get(VERBOSE_ENV) == "1")
    from pipeline.serving.app import create_app

    return create_app(ServeConfig.from_json(os.environ[CONFIG_ENV]))


def _port_problem(host: str, port: int) -> str | None:
    """Why (host, port) cannot be bound, or None; checked before the model is loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind((host, port))
        except OSError as e:
            return f"cannot listen on {host}:{port}: {e.strerror or e}"
    return None


def _raise_file_limit(connections: int) -> None:
    """Lets the process hold `connections` sockets besides its own files, if the hard
    limit allows; otherwise says how many it can."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + _SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            _LOG.warning(
                "the open file limit (%d) allows about %d connections, fewer than"
                " max_connections (%d)",
                new,
                new - _SPARE_FILES,
                connections,
            )


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)


def _sigterm_on_sighup(signum, frame) -> None:
    # A hang-up (the terminal closed, a supervisor's stop) is a stop: the graceful one.
    signal.raise_signal(signal.SIGTERM)


def uvicorn_options(config: ServeConfig, verbose: bool = False) -> dict[str, Any]:
    """The uvicorn settings of the server (also used by tests that run it in a thread)."""
    return {
        "access_log": verbose,
        "log_level": "info",
        "timeout_graceful_shutdown": config.shutdown_timeout_seconds,
        "timeout_keep_alive": config.keep_alive_seconds,
        # The C event loop; the httptools parser under the limits of `http.py`.
        "loop": "uvloop",
        "http": protocol_class(config),
        "ws": "none",
        "lifespan": "on",
    }


def serve(config: ServeConfig, verbose: bool = False) -> int:
    """Serves until stopped (SIGTERM or Ctrl-C).

    Args:
      config: the server settings (`model_dir` set).
      verbose: log every request and the libraries' messages.

    Returns:
      0 after a graceful stop, 1 if the server could not start (e.g. a port is taken).
    """
    import uvicorn

    _configure_logging(verbose)
    for port in (config.port, config.grpc_port):
        problem = _port_problem(config.host, port) if port is not None else None
        if problem:
            _LOG.error("%s", problem)
            return 1
    if not config.is_loopback:
        _LOG.warning(NO_AUTH_WARNING.format(host=config.host))
    _raise_file_limit(config.max_connections)
    # uvicorn stops gracefully on SIGTERM, then re-raises it to the handler it found: this
    # one turns it into a clean exit instead of death by signal.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # uvicorn handles only SIGINT and SIGTERM; SIGHUP would kill the process mid-request.
    signal.signal(signal.SIGHUP, _sigterm_on_sighup)
    options = dict(uvicorn_options(config, verbose), host=config.host, port=config.port)
    os.environ[CONFIG_ENV] = config.to_json()
    try:
        if config.workers == 1:
            from pipeline.serving.app import create_app

            uvicorn.run(create_app(config), **options)
        else:
            os.environ[VERBOSE_ENV] = "1" if verbose else "0"
            options["http"] = "pipeline.serving.http:EnvLimitedHttpProtocol"
            uvicorn.run(
                f"{__name__}:{app_from_env.__name__}",
                factory=True,
                workers=config.workers,
                **options,
            )
    except SystemExit as e:  # uvicorn exits this way when it cannot bind or start
        return 0 if not e.code else 1
    except KeyboardInterrupt:  # Ctrl-C, re-raised by uvicorn after its graceful stop
        return 0
    return 0
