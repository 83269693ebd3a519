"""Helpers of the serving tests: real servers on loopback ports, polling."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

MODEL_NAME = "taxifare"

# `python -c SERVE_ENTRY serve ...`: the serving subcommands as the `taxifare` CLI wires them,
# in a process of their own.
SERVE_ENTRY = """
import argparse, sys
from pipeline.env import configure_environment
from pipeline.serving.cli import add_serve_parsers
parser = argparse.ArgumentParser(prog="taxifare")
commands = add_serve_parsers(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
configure_environment(verbose=getattr(args, "verbose", False))
sys.exit(commands[args.command](args))
"""


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers in other processes)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class InProcessServer:
    """`create_app(config)` under uvicorn in a background thread, on a loopback socket."""

    def __init__(self, config) -> None:
        import uvicorn

        from pipeline.serving.app import create_app
        from pipeline.serving.server import uvicorn_options

        self.app = create_app(config)
        self.state = self.app.state.serving
        # Bound here, so the port is ours before the server starts.
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        options = dict(uvicorn_options(config), log_level="warning", log_config=None)
        self._server = uvicorn.Server(uvicorn.Config(self.app, **options))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 180
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        # gRPC (when configured) is up with the app; port 0 lets it pick a free one.
        port = self.app.grpc_bound_port
        self.grpc_target = f"127.0.0.1:{port}" if port else None

    def stop(self) -> None:
        """Graceful stop, as on SIGTERM."""
        self._server.should_exit = True
        self._thread.join(timeout=60)
        self._socket.close()


def wait_for(predicate, timeout: float, interval: float = 0.1, message: str = "") -> None:
    """Polls `predicate` until it is true, or fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(message or f"condition not met within {timeout}s")
        time.sleep(interval)


def repo_root() -> str:
    """The project root (subprocess servers run from it)."""
    return str(Path(__file__).resolve().parents[2])


def subprocess_env() -> dict[str, str]:
    """The environment of a subprocess server: the project importable, TF quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = repo_root() + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env
