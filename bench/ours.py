"""Our run: the project's pipeline CLI, and the ``summary.json`` it leaves behind.

Contract: ``python -m pipeline run --config CONFIG --set root=ROOT`` runs the whole
pipeline and writes ``ROOT/summary.json`` with at least the fields of
:class:`RunSummary`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("configs", "local.yaml")
SUMMARY_FILE = "summary.json"
# The Tuner's node id in summary.json's durations (pipeline/dag.py's TUNER_ID).
TUNER_ID = "Tuner"
# The overrides of the tuned run: the config's tuning section, switched on.
TUNED_OVERRIDES = ("tuning.enabled=true",)

COMPLETED_EXIT_CODES = (0, 4)
"""Exit codes of a complete run: 0, or 4 when the model was trained and evaluated but not
blessed (so not pushed). Either way every benchmarked figure exists."""


class SummaryError(ValueError):
    """``summary.json`` is missing or does not follow the contract."""


@dataclass(frozen=True)
class RunSummary:
    """The fields of ``summary.json`` the benchmark relies on.

    Attributes:
        rows_read: Rows read from the raw data.
        rows_excluded: Rows dropped as implausible before splitting.
        eval_rmse: RMSE of the trained model on the split the Evaluator scored (test), in dollars.
        eval_mae: MAE of the trained model on that split, in dollars.
        blessed: Whether the evaluator blessed the model.
        pushed_to: Where the model was pushed, or None if it was not.
        train_steps: The configured cap on training steps; None: epochs with early stopping.
        batch_size: Training batch size.
        examples_uri: The Examples artifact with ``Split-train/`` and ``Split-eval/``.
        eval_count: Eval examples the model was scored on, if the summary says (optional).
    """

    rows_read: int
    rows_excluded: int
    eval_rmse: float
    eval_mae: float
    blessed: bool
    pushed_to: str | None
    train_steps: int | None
    batch_size: int
    examples_uri: Path
    eval_count: int | None = None
    # From the Trainer's training record (epochs with early stopping): what it really ran.
    epochs_run: int | None = None
    steps_per_epoch: int | None = None
    trained_examples: int | None = None
    # Set when the run tuned: the Tuner's trials, its wall time and the values it chose.
    tuning_trials: int | None = None
    tuning_seconds: float | None = None
    tuned_hyperparameters: dict[str, Any] | None = None

    @property
    def examples_trained(self) -> int | None:
        """Examples fed to training: capped steps times batch size, else what training ran."""
        if self.train_steps is None:
            return self.trained_examples
        return self.train_steps * self.batch_size


def command(config: Path, root: Path, overrides: tuple[str, ...] = ()) -> list[str]:
    """The command that runs our pipeline with this interpreter (and `--set` overrides)."""
    sets = [arg for override in overrides for arg in ("--set", override)]
    return [
        sys.executable, "-m", "pipeline", "run", "--config", str(config), "--set", f"root={root}",
        *sets,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    """The environment for our run: this process's own, unchanged."""
    return dict(os.environ)


def load_summary(root: Path, repo_root: Path) -> RunSummary:
    """Reads and checks ``root/summary.json``.

    Args:
        root: The ``root`` the pipeline was run with.
        repo_root: Directory the pipeline ran in; a relative ``examples_uri`` is resolved
            against it.

    Raises:
        SummaryError: If the file is missing, is not JSON, or breaks the contract.
    """
    path = root / SUMMARY_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise SummaryError(f"{path} was not written") from err
    except ValueError as err:
        raise SummaryError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise SummaryError(f"{path} must hold a JSON object")
    pushed_to = data.get("pushed_to")
    if pushed_to is not None and not isinstance(pushed_to, str):
        raise SummaryError(f"{path}: 'pushed_to' must be a string or null")
    eval_count = data.get("eval_count")
    if eval_count is not None and (not isinstance(eval_count, int) or isinstance(eval_count, bool)):
        raise SummaryError(f"{path}: 'eval_count' must be an integer or null")
    examples_uri = Path(_field(data, "examples_uri", str))
    if not examples_uri.is_absolute():
        examples_uri = repo_root / examples_uri
    training = data.get("training") or {}
    if not isinstance(training, dict):
        raise SummaryError(f"{path}: 'training' must be an object or null")
    durations = data.get("durations") or {}
    return RunSummary(
        epochs_run=training.get("epochs_run"),
        steps_per_epoch=training.get("steps_per_epoch"),
        trained_examples=training.get("examples_trained"),
        tuning_trials=data.get("tuning_trials"),
        tuning_seconds=durations.get(TUNER_ID) if data.get("tuning_trials") else None,
        tuned_hyperparameters=data.get("tuned_hyperparameters"),
        rows_read=_field(data, "rows_read", int),
        rows_excluded=_field(data, "rows_excluded", int),
        eval_rmse=float(_field(data, "eval_rmse", float)),
        eval_mae=float(_field(data, "eval_mae", float)),
        blessed=_field(data, "blessed", bool),
        pushed_to=pushed_to,
        train_steps=data.get("train_steps"),
        batch_size=_field(data, "batch_size", int),
        examples_uri=examples_uri,
        eval_count=eval_count,
    )


def _field(data: dict[str, Any], key: str, kind: type) -> Any:
    """Returns ``data[key]`` after checking it is present and of the expected JSON type."""
    if key not in data:
        raise SummaryError(f"summary.json lacks the field {key!r}")
    value = data[key]
    if kind is float:
        valid = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        valid = isinstance(value, int) and not isinstance(value, bool)
    else:
        valid = isinstance(value, kind)
    if not valid:
        raise SummaryError(f"summary.json field {key!r} must be {kind.__name__}, got {value!r}")
    return value
