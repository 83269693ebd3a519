"""Command-line arguments shared by every subcommand that reads a config."""

from __future__ import annotations

import argparse


def add_config_args(
    parser: argparse.ArgumentParser,
    default_config: str = "configs/local.yaml",
    example_override: str = "training.train_steps=100",
) -> None:
    """Adds --config, --set KEY=VALUE (repeatable) and --verbose to `parser`."""
    parser.add_argument(
        "--config", default=default_config, help="YAML config (default: %(default)s)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one config field, e.g. --set {example_override} (repeatable)",
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow, Beam and TFX logs")


def cli_command(name: str = "taxifare") -> str:
    """How to call the console script `name` of this environment from a new shell here.

    `name` when that name on PATH is this very script; else the script's path beside this
    interpreter (e.g. `.venv/bin/taxifare`), relative to the current folder when it lies
    below it.
    """
    import os
    import shutil
    import sys

    script = os.path.join(os.path.dirname(sys.executable), name)
    on_path = shutil.which(name)
    if on_path and os.path.realpath(on_path) == os.path.realpath(script):
        return name
    if not os.path.exists(script):
        module = "pipeline" if name == "taxifare" else name
        return f"{sys.executable} -m {module}"
    relative = os.path.relpath(script)
    return script if relative.startswith("..") else relative


def shell_quote(path: str) -> str:
    """A path as one shell word."""
    import shlex

    return shlex.quote(path)
