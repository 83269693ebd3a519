"""`taxifare check-image`, run here on the environment the tests use (installed from the same
lock as the image): it passes, and it fails naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.vertex import image_check

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [REPO / "configs" / "vertex.yaml", REPO / "configs" / "vertex-bigquery.yaml"]
SCHEMA = REPO / "pipeline" / "schema" / "schema.pbtxt"
LOCK = REPO / "requirements.lock"


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "vertex.json"
    assert cli.main(["compile", "--config", str(CONFIGS[0]), "--output", str(path)]) == 0
    return path


def test_this_environment_passes_for_both_shipped_configs(capsys):
    args = ["check-image", "--lock", str(LOCK), "--schema", str(SCHEMA)]
    for config in CONFIGS:
        args += ["--config", str(config)]
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "2 spec(s) runnable here" in err


def test_a_missing_executor_fails_the_check(spec, tmp_path, capsys):
    job = json.loads(spec.read_text())
    container = job["pipelineSpec"]["deploymentSpec"]["executors"]["FareFilter_executor"][
        "container"
    ]
    args = container["args"]
    args[args.index("--executor_class_path") + 1] = "pipeline.components.gone.FareFilter_Executor"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(job))
    code = cli.main(
        ["check-image", "--spec", str(broken), "--lock", str(LOCK), "--schema", str(SCHEMA)]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert (
        f"{broken}: FareFilter_executor: pipeline.components.gone.FareFilter_Executor does not"
        " import (ModuleNotFoundError" in err
    )
    # The untouched spec passes.
    code = cli.main(
        ["check-image", "--spec", str(spec), "--lock", str(LOCK), "--schema", str(SCHEMA)]
    )
    assert code == 0, capsys.readouterr().err


def test_the_specs_code_paths_are_all_found(spec):
    paths = dict(image_check.spec_code_paths(json.loads(spec.read_text())))
    assert paths["Trainer.run_fn"] == "taxifare_modules.trainer.run_fn"
    assert paths["Transform.preprocessing_fn"] == "taxifare_modules.preprocessing.preprocessing_fn"
    assert paths["DriftCheck_executor"] == "pipeline.components.monitoring.DriftCheck_Executor"
    assert paths["Pusher_executor"] == "pipeline.vertex.pusher.Executor"
    bad = json.loads(spec.read_text())
    bad["pipelineSpec"]["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]["run_fn"] = {
        "runtimeValue": {"constantValue": {"stringValue": "taxifare_modules.trainer.no_fn"}}
    }
    assert image_check.check_code_paths(bad) == [
        "Trainer.run_fn: taxifare_modules.trainer.no_fn does not import (AttributeError:"
        " module 'taxifare_modules.trainer' has no attribute 'no_fn')"
    ]


def test_versions_off_the_lock_or_missing_are_named():
    import tensorflow as tf

    lock = LOCK.read_text()
    pins = image_check.lock_pins(lock)
    assert image_check.check_versions(pins) == []
    assert pins["tensorflow"] == tf.__version__
    off = dict(pins, tensorflow="2.15.1", **{"apache-beam": "2.59.0"})
    assert image_check.check_versions(off) == [
        f"tensorflow: {tf.__version__} installed, the lock pins 2.15.1"
    ]
    missing = {k: v for k, v in pins.items() if k != "tfx"}
    assert image_check.check_versions(missing) == ["tfx: not pinned in the lock"]


def test_a_missing_or_incomplete_schema_is_named(tmp_path):
    assert image_check.check_schema(str(SCHEMA)) == []
    assert image_check.check_schema(str(tmp_path / "none.pbtxt")) == [
        f"schema {tmp_path / 'none.pbtxt'}: not found"
    ]
    partial = tmp_path / "partial.pbtxt"
    text = SCHEMA.read_text()
    start = text.index('feature {\n  name: "payment_type"')
    partial.write_text(text[:start] + text[text.index("\n}\n", start) + 3 :])
    assert image_check.check_schema(str(partial)) == [
        f"schema {partial}: lacks the features ['payment_type']"
    ]


def test_keras_3_as_tf_keras_is_named():
    import subprocess
    import sys

    code = (
        "from pipeline.vertex.image_check import check_keras; import sys;"
        " p = check_keras(); print(p); sys.exit(1 if p else 0)"
    )
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}  # no TF_USE_LEGACY_KERAS
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "tf.keras is the keras package, not tf_keras (Keras 2)" in done.stdout
