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
