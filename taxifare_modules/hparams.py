"""The tunable hyperparameters: their names and how a set of values reaches a model.

The Tuner searches these names (tuning.py), TFX hands the best values to the Trainer as a
KerasTuner HyperParameters config, and run_fn applies them here over the configured
ModelParams and TrainingSettings, so the model that is trained and pushed is the one the
best trial trained. Kept free of KerasTuner imports: the Trainer does not need it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

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
# The narrowest hidden layer a halving may give.
MIN_UNITS = 8

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
