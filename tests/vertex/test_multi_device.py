"""The multi-device path really runs: run_fn on two logical CPUs under MirroredStrategy.

What a `multi-gpu` Vertex VM does with its GPUs, done here with one CPU split in two: the
strategy comes from the devices, the global batch is the per-replica batch times the number
of replicas, and the exported model keeps the serving contract (both signatures, raw fields
in, the same finite fare out).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taxifare_modules import features as f
from tests.vertex import multi_device_child as child

REPO = Path(__file__).resolve().parents[2]
ROWS = 300

# A fresh interpreter that fits Transform and traces a two-replica model: minutes, not seconds.
pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def results(sample_csv: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("multi_device")
    env = dict(os.environ)
    # A TF_CONFIG from the environment would make choose_strategy go multi-worker.
    env.pop("TF_CONFIG", None)
    # A fresh process: this one may already have initialised TensorFlow's devices.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.vertex.multi_device_child",
            str(workdir),
            sample_csv,
            str(ROWS),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((workdir / "results.json").read_text())


def test_two_logical_devices_give_mirrored_strategy_with_two_replicas(results):
    assert results["strategy"] == "MirroredStrategy"
    assert results["replicas"] == 2
    assert len(results["devices"]) == 2
    assert all("CPU" in d for d in results["devices"])


def test_global_batch_scales_with_the_replicas(results):
    from taxifare_modules.trainer import REFERENCE_BATCH_SIZE

    # The model gets a training and an eval dataset whose batches are batch x replicas.
    assert results["batch_sizes"] == [child.BATCH_SIZE * 2, child.BATCH_SIZE * 2]
    # Then one pass over the eval split for the monitoring reference (on the chief).
    assert results["factory_batch_sizes"][-1] == REFERENCE_BATCH_SIZE


def test_exported_model_keeps_the_serving_contract(results):
    assert set(results["signatures"]) == {
        f.SERVING_DEFAULT_SIGNATURE,
        f.SERVING_TF_EXAMPLE_SIGNATURE,
        f.TRANSFORM_FEATURES_SIGNATURE,
    }
    assert results["serving_default_inputs"] == sorted(f.RAW_FEATURE_KEYS)
    by_name, by_example = results["by_name"], results["by_example"]
    assert len(by_name) == len(by_example) == 64
    assert all(math.isfinite(x) for x in by_name)
    for a, b in zip(by_name, by_example, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-4)


def test_trained_model_predicts_plausible_fares(results):
    # Trained a few dozen steps from a prior of about the mean fare: in the fares' range,
    # and closer to them than a constant zero would be.
    pairs = [(p, y) for p, y in zip(results["by_name"], results["fares"], strict=True) if y]
    assert all(-5.0 < p < 300.0 for p, _ in pairs)
    error = sum(abs(p - y) for p, y in pairs) / len(pairs)
    assert error < sum(abs(y) for _, y in pairs) / len(pairs)


def test_tensorboard_logs_go_to_the_model_run_dir(results):
    assert any(name.startswith("logs") for name in results["tensorboard_files"])
