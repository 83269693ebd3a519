"""tuner_fn for TFX Tuner: a KerasTuner search over the model and the preprocessing.

Each trial trains through the same `trainer.fit_model` as the Trainer (epochs with early
stopping on the eval split) and is scored by its best eval RMSE; the test split is never
looked at. The search space (hparams.NAMES) covers the model (layers, units, learning
rate, embedding size, batch size) and the preprocessing: the coordinate grid's bucket
count and the hash size of the pickup x dropoff cross. Both live in the model's
CoordinateGrid layer over Transform's fine quantile buckets (see model.py), so a trial
with another bucket count really trains on that bucketization without a Transform per
trial.

KerasTuner 1.4 imports `keras`, which is Keras 3 under TensorFlow 2.16, and its Keras
`Tuner` rejects our tf-keras (Keras 2) model with a FatalTypeError when it checks what the
hypermodel built. `FareTuner` therefore subclasses KerasTuner's framework-neutral
`BaseTuner` and implements `run_trial` itself, returning the trial's score: KerasTuner
never sees a model, only hyperparameters and a number. TFX's Tuner executor asks the
oracle for its `max_trials` best trials after the search; Hyperband's oracle has no
max_trials, so only random search and Bayesian optimization are offered.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import keras_tuner
import tensorflow_transform as tft
from keras_tuner.engine import base_tuner
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.components.tuner.component import TunerFnResult

from taxifare_modules import features as f
from taxifare_modules import hparams, trainer

_LOG = logging.getLogger(__name__)

# Keys of the Tuner's custom_config (besides the Trainer's, which it shares).
TRIALS_KEY = "tuning_trials"
ALGORITHM_KEY = "tuning_algorithm"
TRIAL_EPOCHS_KEY = "tuning_epochs"
# Narrows the search: hyperparameter name -> the values to try (one value fixes it).
SPACE_KEY = "tuning_search_space"
RANDOM = "random"
BAYESIAN = "bayesian"
ALGORITHMS = (RANDOM, BAYESIAN)
# What a trial is scored by (lower is better): Keras' name of the eval split's RMSE.
OBJECTIVE = "val_rmse"


def search_space(narrowed: dict[str, list] | None = None) -> keras_tuner.HyperParameters:
    """The hyperparameters searched, with their ranges; `narrowed` replaces some ranges."""
    narrowed = dict(narrowed or {})
    unknown = sorted(set(narrowed) - set(hparams.NAMES))
    if unknown:
        raise ValueError(f"tuning.search_space: unknown {unknown}; known: {list(hparams.NAMES)}")
    hp = keras_tuner.HyperParameters()
    for name, values in narrowed.items():
        if len(values) == 1:
            hp.Fixed(name, values[0])
        else:
            hp.Choice(name, list(values))
    if hparams.HIDDEN_LAYERS not in narrowed:
        hp.Int(hparams.HIDDEN_LAYERS, 1, 3)
    if hparams.HIDDEN_UNITS not in narrowed:
        hp.Choice(hparams.HIDDEN_UNITS, [32, 64, 128, 256])
    if hparams.LEARNING_RATE not in narrowed:
        hp.Float(hparams.LEARNING_RATE, 1e-3, 3e-2, sampling="log")
    if hparams.EMBEDDING_DIM not in narrowed:
        hp.Choice(hparams.EMBEDDING_DIM, [4, 8, 16])
    if hparams.BATCH_SIZE not in narrowed:
        hp.Choice(hparams.BATCH_SIZE, [64, 128, 256])
    if hparams.COORDINATE_BUCKETS not in narrowed:
        hp.Choice(hparams.COORDINATE_BUCKETS, list(f.COORDINATE_BUCKET_CHOICES))
    if hparams.CROSS_HASH_BUCKETS not in narrowed:
        hp.Choice(hparams.CROSS_HASH_BUCKETS, [500, 2_000, 8_000])
    return hp


def make_oracle(
    algorithm: str, trials: int, seed: int | None, hyperparameters: keras_tuner.HyperParameters
) -> keras_tuner.Oracle:
    """KerasTuner's search algorithm (random or bayesian) over `hyperparameters`."""
    objective = keras_tuner.Objective(OBJECTIVE, direction="min")
    common = {
        "objective": objective,
        "max_trials": trials,
        "seed": seed,
        "hyperparameters": hyperparameters,
        "tune_new_entries": False,
        "allow_new_entries": False,
    }
    if algorithm == RANDOM:
        return keras_tuner.oracles.RandomSearchOracle(**common)
    if algorithm == BAYESIAN:
        return keras_tuner.oracles.BayesianOptimizationOracle(**common)
    raise ValueError(f"tuning algorithm {algorithm!r}: expected one of {list(ALGORITHMS)}")


class FareTuner(base_tuner.BaseTuner):
    """Runs each trial through trainer.fit_model; no Keras-type checks on the model."""

    def run_trial(
        self,
        trial: Any,
        params: trainer.ModelParams,
        settings: trainer.TrainingSettings,
        data: trainer.TrainingData,
    ) -> float:
        values = trial.hyperparameters.values
        trial_params, trial_settings = hparams.apply_hyperparameters(values, params, settings)
        _LOG.info("trial %s: %s", trial.trial_id, values)
        result = trainer.fit_model(trial_params, trial_settings, data)
        return result.best_eval_rmse


def tuner_directory(working_dir: str) -> str:
    """Where this tuner keeps its trials: its own folder when tuning is distributed.

    TFX's Vertex Tuner runs the chief oracle, the chief's own trials and every worker with
    the same working directory (`/tmp`), and each tuner built with `overwrite=True` deletes
    its project folder on start. On separate machines that is harmless; replicas that share
    a disk (a rehearsal, several replicas on one VM) would delete each other's trials. Each
    distributed tuner (KERASTUNER_TUNER_ID is set by TFX before `tuner_fn` runs) therefore
    gets a folder of its own; the oracle's state travels over its gRPC service, not files.
    """
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID")
    return os.path.join(working_dir, tuner_id) if tuner_id else working_dir


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
    """Builds the tuner and its search arguments. Called by TFX Tuner.

    Args:
      fn_args: TFX's arguments; `custom_config` holds the Trainer's settings (the starting
        point of every trial) and the tuning keys above.
    """
    config = fn_args.custom_config or {}
    settings = trainer.settings_from_custom_config(config, fn_args.train_steps, fn_args.eval_steps)
    settings = trainer.dataclasses.replace(
        settings, epochs=int(config.get(TRIAL_EPOCHS_KEY, settings.epochs))
    )
    oracle = make_oracle(
        str(config.get(ALGORITHM_KEY, RANDOM)),
        int(config.get(TRIALS_KEY, 10)),
        settings.seed,
        search_space(config.get(SPACE_KEY)),
    )
    tuner = FareTuner(
        oracle=oracle,
        directory=tuner_directory(fn_args.working_dir),
        project_name="taxifare",
        overwrite=True,
    )
    data = trainer.TrainingData(
        train_files=fn_args.train_files,
        eval_files=fn_args.eval_files,
        data_accessor=fn_args.data_accessor,
        tf_transform_output=tft.TFTransformOutput(fn_args.transform_graph_path),
    )
    return TunerFnResult(
        tuner=tuner,
        fit_kwargs={
            "params": trainer.model_params_from_custom_config(config),
            "settings": settings,
            "data": data,
        },
    )
