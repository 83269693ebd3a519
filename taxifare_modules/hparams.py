"""The tunable hyperparameters: their names and how a set of values reaches a model.

The Tuner searches these names (tuning.py), TFX hands the best values to the Trainer as a
KerasTuner HyperParameters config, and run_fn applies them here over the configured
ModelParams and TrainingSettings, so the model that is trained and pushed is the one the
best trial trained. Kept free of KerasTuner imports: the Trainer does not need it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from taxifare_modules import features as f

# Hyperparameter names (the same words as the config's `training.*` fields they set).
HIDDEN_LAYERS = "hidden_layers"  # how many hidden layers
HIDDEN_UNITS = "hidden_units"  # units of the first hidden layer; each next one has half
LEARNING_RATE = "learning_rate"
EMBEDDING_DIM = "embedding_dim"
BATCH_SIZE = "batch_size"
COORDINATE_BUCKETS = "coordinate_buckets"  # preprocessing: the coordinate grid
CROSS_HASH_BUCKETS = "cross_hash_buckets"  # preprocessing: the pickup x dropoff cross
NAMES = (
    HIDDEN_LAYERS,
    HIDDEN_UNITS,
    LEARNING_RATE,
    EMBEDDING_DIM,
    BATCH_SIZE,
    COORDINATE_BUCKETS,
    CROSS_HASH_BUCKETS,
)
# What training did (epochs, steps, examples), beside the TensorBoard logs: written by the
# Trainer, read by the run summary, `taxifare runs` and the benchmark.
TRAINING_RECORD = "training.json"
# The narrowest hidden layer a halving may give.
MIN_UNITS = 8


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """Hyperparameters of the model (filled from the typed config via custom_config)."""

    hidden_units: tuple[int, ...] = (64, 32)
    embedding_dim: int = 8
    learning_rate: float = 0.003
    dropout: float = 0.0
    fare_prior: float = 12.0  # initial output bias: about the mean fare
    # Huber loss with this delta (dollars), robust to the long tail of fares; None: MSE.
    huber_delta: float | None = 5.0
    # Coarse quantile buckets per coordinate of the pickup/dropoff grid: a divisor of
    # features.COORDINATE_QUANTILES (see CoordinateGrid).
    coordinate_buckets: int = f.COORDINATE_BUCKETS
    # Hash buckets of the pickup-cell x dropoff-cell cross.
    cross_hash_buckets: int = f.CELL_CROSS_BUCKETS

    def __post_init__(self) -> None:
        if f.COORDINATE_QUANTILES % self.coordinate_buckets:
            raise ValueError(
                f"coordinate_buckets ({self.coordinate_buckets}) must divide"
                f" {f.COORDINATE_QUANTILES}, one of {f.COORDINATE_BUCKET_CHOICES}"
            )


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How long and on what batches a model trains (the config's `training.*` but `model`)."""

    batch_size: int = 128
    eval_batch_size: int = 256
    # At most this many passes over the train split; early stopping usually ends sooner.
    epochs: int = 30
    # Stop after this many validations (epochs, or rounds: see validation_examples) without a
    # better eval RMSE; the best one's weights are the ones kept.
    early_stopping_patience: int = 3
    # An eval RMSE counts as better only when it is at least this much lower (US dollars):
    # on 2M trips the eval RMSE wandered by a few tenths of a cent for epochs on end, and each
    # such "improvement" bought `early_stopping_patience` more passes over 1.2M examples.
    early_stopping_min_delta: float = 0.01
    # A cap on the total training steps (quick runs); None: the epochs decide.
    train_steps: int | None = None
    # A cap on the eval batches of each validation; None: the whole eval split.
    eval_steps: int | None = None
    seed: int | None = 42
    # Read a split into memory when it has at most in_memory_max_rows examples.
    in_memory: bool = True
    in_memory_max_rows: int = 1_000_000
    # Validate every this many training examples (a round) when a pass over the train split
    # is longer: the epochs then bound the rounds to that many passes' examples and the
    # patience counts rounds. None: validate once per pass, however long.
    validation_examples: int | None = 500_000


_P = TypeVar("_P")
_S = TypeVar("_S")


def hidden_units(layers: int, first: int) -> tuple[int, ...]:
    """Units per hidden layer: `first`, then half of the previous one (at least MIN_UNITS)."""
    return tuple(max(MIN_UNITS, first >> i) for i in range(layers))


def hyperparameter_values(config: dict[str, Any]) -> dict[str, Any]:
    """The values of a KerasTuner HyperParameters config (what TFX gives run_fn)."""
    values = config.get("values", config)
    unknown = sorted(set(values) - set(NAMES))
    if unknown:
        raise ValueError(f"unknown hyperparameters {unknown}; known: {list(NAMES)}")
    return dict(values)


def apply_hyperparameters(values: dict[str, Any], params: _P, settings: _S) -> tuple[_P, _S]:
    """Returns (model params, training settings) with `values` applied over them.

    Args:
      values: hyperparameter values by the names above (any subset).
      params: a model.ModelParams.
      settings: a trainer.TrainingSettings.
    """
    model: dict[str, Any] = {}
    if HIDDEN_LAYERS in values or HIDDEN_UNITS in values:
        current = params.hidden_units  # type: ignore[attr-defined]
        model["hidden_units"] = hidden_units(
            int(values.get(HIDDEN_LAYERS, len(current))),
            int(values.get(HIDDEN_UNITS, current[0] if current else 64)),
        )
    for name, cast in (
        (LEARNING_RATE, float),
        (EMBEDDING_DIM, int),
        (COORDINATE_BUCKETS, int),
        (CROSS_HASH_BUCKETS, int),
    ):
        if name in values:
            model[name] = cast(values[name])
    training = {BATCH_SIZE: int(values[BATCH_SIZE])} if BATCH_SIZE in values else {}
    return (
        dataclasses.replace(params, **model),  # type: ignore[type-var]
        dataclasses.replace(settings, **training),  # type: ignore[type-var]
    )
