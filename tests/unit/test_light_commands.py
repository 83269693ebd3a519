"""Commands that only read, print help or check a config import no TensorFlow, TFX or Beam.

Each is run in a fresh interpreter (a test process has long imported them all) and the
modules it loaded are listed with `-X importtime`, the interpreter's own record.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "tfx", "apache_beam", "tensorflow_model_analysis",
         "tensorflow_data_validation", "tensorflow_transform", "keras", "tf_keras")


def _imported(args: list[str]) -> tuple[int, set[str], str]:
    """Runs `python -X importtime <args>`; its exit code, top-level modules and stdout."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    modules = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            modules.add(name.split(".")[0])
    return done.returncode, modules, done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["-m", "pipeline", "--help"],
        ["-m", "pipeline", "runs", "--help"],
        ["-m", "pipeline", "report", "--help"],
        ["-m", "pipeline", "run", "--help"],
        ["-m", "pipeline", "serve", "--help"],
        ["-m", "pipeline", "skew", "--help"],
        ["-m", "taxifare_modules.task", "--help"],
        ["-c", "import pipeline.runs, pipeline.cli"],
    ],
    ids=lambda a: " ".join(a),
)
def test_help_and_read_only_modules_import_nothing_heavy(args):
    code, modules, _ = _imported(args)
    assert code == 0
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


@pytest.mark.parametrize(
    "override",
    ["bogus.key=1", "training.seed=abc", "data.min_fare=-"],
)
def test_a_config_error_is_found_without_importing_tensorflow(override):
    code, modules, _ = _imported(["-m", "pipeline", "run", "--set", override])
    assert code == 2
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_runs_of_an_empty_folder_answers_without_tensorflow(tmp_path):
    code, modules, _ = _imported(["-m", "pipeline", "runs", "--root", str(tmp_path)])
    assert code != 0
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_the_printed_tensorboard_command_starts():
    # The run's summary prints `tensorboard --logdir ...`: TensorBoard 2.16 imports
    # pkg_resources, which setuptools 81 removed (the lock pins setuptools below it).
    tensorboard = Path(sys.executable).parent / "tensorboard"
    done = subprocess.run(
        [str(tensorboard), "--help"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--logdir" in done.stdout
