"""Config loading, overrides and rejection (no TensorFlow needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.config import TFX_SAMPLE, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "configs" / "local.yaml"


def test_local_config_loads_with_the_real_sample_as_input():
    cfg = load_config(LOCAL)
    assert cfg.data.input == TFX_SAMPLE
    assert cfg.schema_config.source == "curated"
    assert cfg.serving_model_dir.endswith("serving/taxifare")


def test_every_shipped_config_loads():
    for path in (REPO / "configs").glob("*.yaml"):
        load_config(path)


def test_set_overrides_single_fields_with_yaml_types():
    cfg = load_config(
        LOCAL,
        [
            "training.train_steps=10",
            "training.model.hidden_units=[8]",
            "orchestrator.enable_cache=false",
            "root=/tmp/x",
        ],
    )
    assert cfg.training.train_steps == 10
    assert cfg.training.model.hidden_units == (8,)
    assert cfg.orchestrator.enable_cache is False
    assert cfg.root == "/tmp/x"


def test_unknown_key_is_named_with_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  train_stepz: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "training.train_stepz: unknown key" in str(e.value)
    assert str(path) in str(e.value)


def test_wrong_type_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  batch_size: many\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "training.batch_size" in str(e.value)
    assert "'many'" in str(e.value)


def test_out_of_range_and_inconsistent_values_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="training.batch_size"):
        load_config(LOCAL, ["training.batch_size=0"])
    with pytest.raises(ConfigError, match="max_fare"):
        load_config(LOCAL, ["data.min_fare=100", "data.max_fare=50"])
    with pytest.raises(ConfigError, match="orchestrator.runner"):
        load_config(LOCAL, ["orchestrator.runner=airflow"])


def test_missing_file_and_bad_yaml_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(LOCAL, ["training.train_steps"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(LOCAL, ["nosuch.key=1"])


def test_config_is_frozen():
    cfg = load_config(LOCAL)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.training.train_steps = 3  # type: ignore[misc]


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_rejects_a_bad_config_with_exit_2_before_any_tfx_work(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("colour: blue\n")
    result = _cli("run", "--config", str(path), "--set", f"root={tmp_path / 'root'}")
    assert result.returncode == 2
    assert "colour: unknown key" in result.stderr
    assert str(path) in result.stderr
    assert not (tmp_path / "root").exists()


def test_cli_rejects_missing_config_file_and_bad_set(tmp_path):
    result = _cli("run", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert "missing.yaml" in result.stderr
    result = _cli("run", "--set", "training.train_steps=-5", "--set", f"root={tmp_path}/r")
    assert result.returncode == 2
    assert "training.train_steps" in result.stderr


def test_cli_empty_input_folder_is_a_clear_message(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _cli("run", "--set", f"data.input={empty}", "--set", f"root={tmp_path}/r")
    assert result.returncode == 2
    assert "no input files" in result.stderr and str(empty) in result.stderr
    assert "Traceback" not in result.stderr
    result = _cli("run", "--set", f"data.input={tmp_path}/absent", "--set", f"root={tmp_path}/r")
    assert result.returncode == 2
    assert "folder not found" in result.stderr
