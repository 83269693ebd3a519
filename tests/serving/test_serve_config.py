"""The `serving:` section of the typed config: file, `--set` overrides and flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.serving import cli as serving_cli

LOCAL = str(Path(__file__).resolve().parents[2] / "configs" / "local.yaml")


def _serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serving_cli.add_serve_parsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", "--config", LOCAL, *argv])


def test_the_local_config_has_the_serving_defaults():
    serving = load_config(LOCAL).serving
    assert (serving.host, serving.port, serving.grpc_port) == ("127.0.0.1", 8501, None)
    assert serving.strict_examples is False and serving.max_connections == 4096


def test_set_overrides_and_flags_override_single_fields(tmp_path):
    args = _serve_args(
        "--set",
        "serving.port=9001",
        "--set",
        "serving.max_instances=7",
        "--grpc-port",
        "9002",
        "--strict-examples",
        "--model-dir",
        str(tmp_path),
        "--log-rotate-mb",
        "2",
    )
    cfg = serving_cli.serve_config_from_args(args)
    assert (cfg.port, cfg.grpc_port, cfg.max_instances) == (9001, 9002, 7)
    assert cfg.strict_examples is True and cfg.model_dir == str(tmp_path)
    assert cfg.log_rotate_bytes == 2 * 2**20
    # A flag wins over --set.
    cfg = serving_cli.serve_config_from_args(
        _serve_args("--set", "serving.port=9001", "--port", "9005")
    )
    assert cfg.port == 9005
    # No --model-dir: the config's serving directory.
    assert serving_cli.serve_config_from_args(_serve_args()).model_dir.endswith("serving/taxifare")


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (("--port", "70000"), "serving.port"),
        (("--max-instances", "0"), "serving.max_instances"),
        (("--set", "serving.nope=1"), "serving.nope: unknown key"),
        (("--port", "8600", "--grpc-port", "8600"), "must differ"),
    ],
)
def test_bad_values_are_one_config_error_naming_the_key(argv, fragment):
    with pytest.raises(ConfigError) as info:
        serving_cli.serve_config_from_args(_serve_args(*argv))
    assert fragment in str(info.value)


def test_serve_exits_2_on_a_bad_value(capsys):
    args = _serve_args("--log-sample-rate", "2")
    assert serving_cli.cmd_serve(args) == serving_cli.EXIT_USAGE
    assert "serving.log_sample_rate" in capsys.readouterr().err


def test_max_fare_defaults_to_the_schemas_fare_maximum():
    from pipeline.serving.config import ServeConfig
    from pipeline.serving.validation import schema_ranges

    schema_max = schema_ranges(("fare",))["fare"][1]
    assert schema_max == 1000.0  # the curated schema's label domain
    assert ServeConfig().max_fare == schema_max
    assert load_config(LOCAL).serving.max_fare == schema_max
    assert ServeConfig(max_fare=50).max_fare == 50
