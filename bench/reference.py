"""The reference run: TFX's own Chicago taxi example (native Keras), run as shipped.

The example script reads ``$HOME/taxi/data/simple`` and
``$HOME/taxi/taxi_utils_native_keras.py`` and writes under ``$HOME/tfx`` and
``$HOME/taxi/serving_model``. It is run unmodified from the installed ``tfx`` package,
with ``HOME`` pointed at a fresh directory laid out the way it expects.

Beyond the rows the whole example can take on this machine, only its CsvExampleGen is run:
``python -m bench.reference --example-gen-only`` (with the same ``HOME``) imports the
example's script as a module, builds its pipeline with the script's own ``_create_pipeline``
and constants, and runs it with TFX's partial run (``RunOptions(to_nodes=[ExampleGen])``)
under the script's ``BeamDagRunner`` and Beam arguments: the example's ExampleGen exactly,
and nothing after it.
"""

from __future__ import annotations

import argparse
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
# The example's ExampleGen: its id in the pipeline (the class name, no with_id).
EXAMPLE_GEN_ID = "CsvExampleGen"
EXAMPLE_GEN_ONLY_FLAG = "--example-gen-only"

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


def example_gen_command(example: ReferenceExample) -> list[str]:
    """The command that runs only the example's CsvExampleGen (see the module's docstring)."""
    return [sys.executable, "-m", "bench.reference", EXAMPLE_GEN_ONLY_FLAG, str(example.script)]


def environment(home: Path) -> dict[str, str]:
    """This process's environment with ``HOME`` redirected and the example's needs added."""
    return {**os.environ, **EXTRA_ENV, "HOME": str(home)}


def example_gen_environment(home: Path) -> dict[str, str]:
    """`environment`, with the folder holding the ``bench`` package first on ``PYTHONPATH``,
    so that `example_gen_command` resolves from the example's working directory."""
    package_parent = str(Path(__file__).resolve().parent.parent)
    python_path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)
    return {**environment(home), "PYTHONPATH": python_path}


def example_gen_dir(home: Path) -> Path:
    """Where the example's CsvExampleGen writes its examples (under its pipeline root)."""
    return home / "tfx" / "pipelines" / PIPELINE_NAME / EXAMPLE_GEN_ID


def metadata_path(home: Path) -> Path:
    """The example's MLMD SQLite file."""
    return home / "tfx" / "metadata" / PIPELINE_NAME / "metadata.db"


def pushed_model(home: Path) -> Path | None:
    """The model version the example's Pusher wrote, if the Evaluator blessed it."""
    serving_dir = home / "taxi" / "serving_model" / PIPELINE_NAME
    versions = sorted(p for p in serving_dir.glob("*") if p.is_dir())
    return versions[-1] if versions else None


def run_example_gen_only(script: Path) -> None:
    """Runs the example's pipeline up to its CsvExampleGen, in this process.

    The script is imported as a module (its ``__main__`` block does not run) after
    ``HOME`` is set, since it reads ``$HOME`` at import; its ``_create_pipeline`` builds the
    whole pipeline with the script's own paths and Beam arguments, and TFX's partial run
    marks every node but the ExampleGen as skipped.
    """
    from tfx.orchestration import pipeline as tfx_pipeline

    spec = importlib.util.spec_from_file_location("tfx_taxi_example_pipeline", script)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import the example's script {script}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pipeline = module._create_pipeline(  # the example's own builder, as its __main__ calls it
        pipeline_name=module._pipeline_name,
        pipeline_root=module._pipeline_root,
        data_root=module._data_root,
        module_file=module._module_file,
        metadata_path=module._metadata_path,
        serving_model_dir=module._serving_model_dir,
        beam_pipeline_args=module._beam_pipeline_args,
    )
    ids = [component.id for component in pipeline.components]
    if EXAMPLE_GEN_ID not in ids:
        raise ValueError(f"the example's pipeline has no {EXAMPLE_GEN_ID} (its nodes: {ids})")
    module.BeamDagRunner().run(
        pipeline, run_options=tfx_pipeline.RunOptions(to_nodes=[EXAMPLE_GEN_ID])
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.reference --example-gen-only SCRIPT``: see `run_example_gen_only`."""
    parser = argparse.ArgumentParser(prog="python -m bench.reference")
    parser.add_argument(
        EXAMPLE_GEN_ONLY_FLAG,
        dest="script",
        type=Path,
        required=True,
        help="the example's pipeline script; run only its CsvExampleGen",
    )
    args = parser.parse_args(argv)
    os.environ.update(EXTRA_ENV)
    run_example_gen_only(args.script)
    return 0


if __name__ == "__main__":
    sys.exit(main())
