"""The reference run: TFX's own Chicago taxi example (native Keras), run as shipped.

The example script reads ``$HOME/taxi/data/simple`` and
``$HOME/taxi/taxi_utils_native_keras.py`` and writes under ``$HOME/tfx`` and
``$HOME/taxi/serving_model``. It is run unmodified from the installed ``tfx`` package,
with ``HOME`` pointed at a fresh directory laid out the way it expects.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

EXAMPLE_SUBDIR = Path("examples", "chicago_taxi_pipeline")
PIPELINE_SCRIPT = "taxi_pipeline_native_keras.py"
MODULE_FILE = "taxi_utils_native_keras.py"
DATA_FILE = Path("data", "simple", "data.csv")
PIPELINE_NAME = "chicago_taxi_native_keras"

EXTRA_ENV = {"TF_USE_LEGACY_KERAS": "1"}
"""Environment the example needs: it is written for Keras 2 (``tf-keras``), while
TensorFlow 2.16 makes Keras 3 the default ``tf.keras``."""


@dataclass(frozen=True)
class ReferenceExample:
    """Where the shipped example lives and how much it trains.

    Attributes:
        directory: The example's folder inside the installed ``tfx`` package.
        train_steps: ``TrainArgs(num_steps=...)`` read from the pipeline script.
        batch_size: Training batch size read from the module file's ``run_fn``.
    """

    directory: Path
    train_steps: int
    batch_size: int

    @property
    def script(self) -> Path:
        """The pipeline script that is run."""
        return self.directory / PIPELINE_SCRIPT

    @property
    def module_file(self) -> Path:
        """The user module with ``preprocessing_fn`` and ``run_fn``."""
        return self.directory / MODULE_FILE

    @property
    def data_csv(self) -> Path:
        """The sample data shipped with the example."""
        return self.directory / DATA_FILE

    @property
    def examples_trained(self) -> int:
        """Number of examples fed to training: steps times batch size."""
        return self.train_steps * self.batch_size


def find_reference() -> ReferenceExample:
    """Locates the example in the installed ``tfx`` package and reads its training budget.

    Raises:
        FileNotFoundError: If ``tfx`` or one of the example's files is missing.
        ValueError: If the training steps or batch size cannot be read from the files.
    """
    spec = importlib.util.find_spec("tfx")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the tfx package is not installed in this environment")
    directory = Path(next(iter(spec.submodule_search_locations))) / EXAMPLE_SUBDIR
    for path in (directory / PIPELINE_SCRIPT, directory / MODULE_FILE, directory / DATA_FILE):
        if not path.is_file():
            raise FileNotFoundError(f"the tfx example file {path} is missing")
    return ReferenceExample(
        directory=directory,
        train_steps=read_train_steps(directory / PIPELINE_SCRIPT),
        batch_size=read_train_batch_size(directory / MODULE_FILE),
    )


def read_train_steps(script: Path) -> int:
    """Reads ``trainer_pb2.TrainArgs(num_steps=N)`` from the pipeline script."""
    match = re.search(r"TrainArgs\(\s*num_steps\s*=\s*(\d+)", script.read_text())
    if match is None:
        raise ValueError(f"cannot find TrainArgs(num_steps=...) in {script}")
    return int(match.group(1))


def read_train_batch_size(module_file: Path) -> int:
    """Reads the batch size that ``run_fn`` passes to ``_input_fn`` for the training files."""
    pattern = r"train_dataset\s*=\s*_input_fn\(\s*fn_args\.train_files\s*,[^)]*?,\s*(\d+)\s*\)"
    match = re.search(pattern, module_file.read_text())
    if match is None:
        raise ValueError(f"cannot find the training batch size in {module_file}")
    return int(match.group(1))


def prepare_home(example: ReferenceExample, home: Path) -> None:
    """Lays out ``home`` the way the example expects: data and module file under ``taxi/``."""
    data_dir = home / "taxi" / "data" / "simple"
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(example.data_csv, data_dir / "data.csv")
    shutil.copyfile(example.module_file, home / "taxi" / MODULE_FILE)


def command(example: ReferenceExample) -> list[str]:
    """The command that runs the example with this interpreter."""
    return [sys.executable, str(example.script)]


def environment(home: Path) -> dict[str, str]:
    """This process's environment with ``HOME`` redirected and the example's needs added."""
    return {**os.environ, **EXTRA_ENV, "HOME": str(home)}


def pushed_model(home: Path) -> Path | None:
    """The model version the example's Pusher wrote, if the Evaluator blessed it."""
    serving_dir = home / "taxi" / "serving_model" / PIPELINE_NAME
    versions = sorted(p for p in serving_dir.glob("*") if p.is_dir())
    return versions[-1] if versions else None
