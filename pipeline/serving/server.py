"""Runs the REST application under uvicorn, in one process or several.

With `workers > 1`, uvicorn's supervisor binds the port once and starts that many worker
processes, each importing the app through `app_from_env` (the config travels in an
environment variable). Every worker loads the model, batches its own requests and writes
its own request log files (the names carry the process id). The workers are started with
multiprocessing's "spawn", which re-imports the entry script: it must run the command under
`if __name__ == "__main__"` (the `taxifare` console script and `python -m pipeline` do).
SIGTERM or Ctrl-C stops gracefully: the port closes, requests in flight are answered, then
the log is flushed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
from typing import TYPE_CHECKING

from pipeline.serving.config import ServeConfig

if TYPE_CHECKING:
    from starlette.applications import Starlette

CONFIG_ENV = "TAXIFARE_SERVE_CONFIG"
VERBOSE_ENV = "TAXIFARE_SERVE_VERBOSE"
# How long a graceful stop waits for requests in flight before closing their connections.
GRACEFUL_SHUTDOWN_SECONDS = 30


def _configure_logging(verbose: bool) -> None:
    from pipeline.env import configure_environment

    configure_environment(verbose=verbose)
    # The server's own messages (versions loaded, log recovery) show even when quiet.
    logging.getLogger("pipeline.serving").setLevel(logging.INFO)


def app_from_env() -> Starlette:
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


def _fastest(module: str, choice: str) -> str:
    """uvicorn's `choice` if `module` is installed, else "auto" (its pure-Python default)."""
    return choice if importlib.util.find_spec(module) is not None else "auto"


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)


def serve(config: ServeConfig, workers: int = 1, verbose: bool = False) -> int:
    """Serves until stopped (SIGTERM or Ctrl-C).

    Args:
      config: the server settings.
      workers: how many processes to run (each uses its own core for model calls).
      verbose: log every request and the libraries' messages.

    Returns:
      0 after a graceful stop, 1 if the server could not start (e.g. the port is taken).
    """
    import uvicorn

    _configure_logging(verbose)
    problem = _port_problem(config.host, config.port)
    if problem:
        logging.getLogger(__name__).error("%s", problem)
        return 1
    # uvicorn stops gracefully on SIGTERM, then re-raises it to the handler it found: this
    # one turns it into a clean exit instead of death by signal.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    common = {
        "host": config.host,
        "port": config.port,
        "access_log": verbose,
        "log_level": "info",
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
        # The C event loop and HTTP parser: several times less CPU per request than asyncio
        # and h11, which matters when the model call itself takes a millisecond or two.
        "loop": _fastest("uvloop", "uvloop"),
        "http": _fastest("httptools", "httptools"),
    }
    try:
        if workers == 1:
            from pipeline.serving.app import create_app

            uvicorn.run(create_app(config), **common)
        else:
            os.environ[CONFIG_ENV] = config.to_json()
            os.environ[VERBOSE_ENV] = "1" if verbose else "0"
            uvicorn.run(
                f"{__name__}:{app_from_env.__name__}", factory=True, workers=workers, **common
            )
    except SystemExit as e:  # uvicorn exits this way when it cannot bind or start
        return 0 if not e.code else 1
    except KeyboardInterrupt:  # Ctrl-C, re-raised by uvicorn after its graceful stop
        return 0
    return 0
