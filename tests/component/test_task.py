"""`python -m taxifare_modules.task`: the trainer as a module with flags, on real rows."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from taxifare_modules import features as f
from taxifare_modules import hparams, task
from taxifare_modules.model import ModelParams, build_model
from taxifare_modules.trainer import TrainingSettings
from tests.trips import csv_row_to_instance, instance_to_example, instances_to_named_tensors

TRAIN_ROWS = 400
EVAL_ROWS = 150


def _write_csv(path, rows, header):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def task_run(tmp_path_factory, sample_rows):
    work = tmp_path_factory.mktemp("task")
    header = list(sample_rows[0])
    _write_csv(work / "train-0.csv", sample_rows[:TRAIN_ROWS], header)
    _write_csv(work / "eval.csv", sample_rows[TRAIN_ROWS : TRAIN_ROWS + EVAL_ROWS], header)
    out = work / "out"
    command = [
        sys.executable, "-m", "taxifare_modules.task",
        "--train-data-paths", str(work / "train-*.csv"),
        "--eval-data-paths", str(work / "eval.csv"),
        "--output-dir", str(out),
        "--epochs", "3",
        "--batch-size", "32",
        "--hidden-units", "16,8",
        "--embedding-dim", "4",
        "--coordinate-buckets", "8",
        "--cross-hash-buckets", "300",
    ]  # fmt: skip
    # As a Vertex job attached to a TensorBoard is told where to write (vertex.tensorboard).
    env = {**os.environ, "AIP_TENSORBOARD_LOG_DIR": str(work / "vertex-tensorboard")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, out, sample_rows[TRAIN_ROWS : TRAIN_ROWS + 20]


@pytest.mark.e2e
def test_task_prints_one_result_line_and_exports_both_signatures(task_run):
    done, out, trips = task_run
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert 0 < result["eval_rmse"] < 50
    assert 1 <= result["best_epoch"] <= result["epochs"] <= 3
    # 400 rows, a few with implausible fares dropped, in batches of 32.
    assert result["steps_per_epoch"] == result["train_examples"] // 32
    assert result["params"]["coordinate_buckets"] == 8
    # TensorBoard logs of the training and its validation.
    assert tf.io.gfile.glob(os.path.join(out, task.LOGS_DIR, "train", "events.out.*"))
    assert tf.io.gfile.glob(os.path.join(out, task.LOGS_DIR, "validation", "events.out.*"))
    # And where Vertex TensorBoard streams from, under the job's id ("local" outside a job).
    streamed = os.path.join(out.parent, "vertex-tensorboard", "local")
    assert tf.io.gfile.glob(os.path.join(streamed, "validation", "events.out.*"))

    loaded = tf.saved_model.load(result["model_dir"])
    assert set(loaded.signatures) == {
        f.SERVING_DEFAULT_SIGNATURE,
        f.SERVING_TF_EXAMPLE_SIGNATURE,
        f.TRANSFORM_FEATURES_SIGNATURE,
    }
    instances = [csv_row_to_instance(row) for row in trips]
    examples = tf.constant([instance_to_example(t) for t in instances])
    by_example = loaded.signatures[f.SERVING_TF_EXAMPLE_SIGNATURE](examples)[f.PREDICTION_KEY]
    by_name = loaded.signatures[f.SERVING_DEFAULT_SIGNATURE](
        **instances_to_named_tensors(instances)
    )[f.PREDICTION_KEY]
    assert by_example.shape == (len(trips),)
    np.testing.assert_allclose(by_example.numpy(), by_name.numpy(), rtol=1e-5)
    assert np.all(np.isfinite(by_example.numpy()))
    # The model's grid is the one the flag asked for.
    model_layers = loaded.signatures[f.TRANSFORM_FEATURES_SIGNATURE](examples)
    assert set(f.COORDINATE_BUCKET_XF) <= set(model_layers)


@pytest.mark.slow
def test_an_eval_rmse_better_by_less_than_min_delta_does_not_count(task_run):
    """Early stopping counts an epoch as better only when its eval RMSE is lower by at least
    `early_stopping_min_delta`: with a min_delta no improvement can reach, the first epoch's
    weights are kept and reported, whatever later epochs scored."""
    import tensorflow_transform as tft
    from tfx.components.trainer.fn_args_utils import DataAccessor

    from taxifare_modules import trainer

    _, out, _ = task_run
    data = trainer.TrainingData(
        train_files=[os.path.join(out, task.TRANSFORMED_DIR, "Split-train", "*")],
        eval_files=[os.path.join(out, task.TRANSFORMED_DIR, "Split-eval", "*")],
        data_accessor=DataAccessor(
            tf_dataset_factory=task.tf_dataset_factory,
            record_batch_factory=None,
            data_view_decode_fn=None,
        ),
        tf_transform_output=tft.TFTransformOutput(os.path.join(out, task.TRANSFORM_DIR)),
    )
    params = ModelParams(
        hidden_units=(16, 8), embedding_dim=4, coordinate_buckets=8, cross_hash_buckets=300
    )
    epochs = []
    recorder = tf.keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: epochs.append(logs["val_rmse"])
    )
    settings = TrainingSettings(
        batch_size=32, epochs=4, early_stopping_patience=2, early_stopping_min_delta=1e6
    )
    result = trainer.fit_model(params, settings, data, callbacks=[recorder])
    # Patience 2 after epoch 1: three epochs, though training lowers the RMSE after the first.
    assert result.epochs_run == len(epochs) == 3
    assert min(epochs) < epochs[0]
    assert (result.best_epoch, result.best_eval_rmse) == (1, pytest.approx(epochs[0]))
    # The weights kept are the first epoch's.
    _, rmse, _ = result.model.evaluate(
        trainer._input_fn(
            data.eval_files, data.data_accessor, data.tf_transform_output, 256, None, True, False
        ),
        verbose=0,
    )
    assert rmse == pytest.approx(epochs[0], rel=1e-4)


def test_each_flag_family_lands_where_it_says():
    args = task.build_parser().parse_args(
        [
            "--train-data-paths", "a.csv", "--eval-data-paths", "b.csv", "--output-dir", "o",
            "--epochs", "7", "--early-stopping-patience", "2", "--train-steps", "90",
            "--early-stopping-min-delta", "0.05",
            "--eval-steps", "4", "--batch-size", "16", "--eval-batch-size", "48", "--seed", "3",
            "--in-memory-max-rows", "0", "--validation-examples", "1000",
            "--hidden-units", "32,16,8", "--embedding-dim", "6", "--learning-rate", "0.01",
            "--dropout", "0.1", "--fare-prior", "10", "--huber-delta", "0",
            "--coordinate-buckets", "32", "--cross-hash-buckets", "777",
        ]
    )  # fmt: skip
    params, settings = task.params_from_args(args)
    assert settings == TrainingSettings(
        batch_size=16, eval_batch_size=48, epochs=7, early_stopping_patience=2,
        early_stopping_min_delta=0.05, train_steps=90, eval_steps=4, seed=3, in_memory=False,
        in_memory_max_rows=0, validation_examples=1000,
    )  # fmt: skip
    # 0: validate once per pass; the default is the pipeline's.
    for flags, every in (
        (["--validation-examples", "0"], None),
        ([], TrainingSettings().validation_examples),
    ):
        parsed = task.build_parser().parse_args(
            ["--train-data-paths", "a", "--eval-data-paths", "b", "--output-dir", "o", *flags]
        )
        assert task.params_from_args(parsed)[1].validation_examples == every
    assert params == ModelParams(
        hidden_units=(32, 16, 8), embedding_dim=6, learning_rate=0.01, dropout=0.1,
        fare_prior=10.0, huber_delta=None, coordinate_buckets=32, cross_hash_buckets=777,
    )  # fmt: skip
    # The model flags reach the built model: its grid and its layers.
    model = build_model(params)
    grid = model.get_layer("grid")
    assert (grid.buckets, grid.cross_buckets) == (32, 777)
    assert model.get_layer(f"{f.PICKUP_CELL_XF}_embedding").input_dim == 33**2
    assert [model.get_layer(f"hidden_{i}").units for i in range(3)] == [32, 16, 8]
    # Each flag has help text.
    for action in task.build_parser()._actions:
        assert action.help, action.dest


def test_a_bad_flag_or_a_missing_file_fails_with_a_message(tmp_path):
    with pytest.raises(SystemExit):
        task.build_parser().parse_args(
            ["--train-data-paths", "a", "--eval-data-paths", "b", "--output-dir", "o",
             "--coordinate-buckets", "10"]
        )  # fmt: skip
    with pytest.raises(ValueError, match="no files match"):
        task.expand_paths([str(tmp_path / "nothing-*.csv")])


def test_hyperparameters_apply_over_the_configured_values():
    params, settings = hparams.apply_hyperparameters(
        {
            hparams.HIDDEN_LAYERS: 3,
            hparams.HIDDEN_UNITS: 64,
            hparams.COORDINATE_BUCKETS: 4,
            hparams.CROSS_HASH_BUCKETS: 500,
            hparams.BATCH_SIZE: 256,
        },
        ModelParams(learning_rate=0.02),
        TrainingSettings(epochs=4),
    )
    assert params.hidden_units == (64, 32, 16)
    assert (params.coordinate_buckets, params.cross_hash_buckets) == (4, 500)
    assert params.learning_rate == 0.02
    assert (settings.batch_size, settings.epochs) == (256, 4)
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        hparams.hyperparameter_values({"values": {"nope": 1}})


def _artifact(kind, uri, splits=None):
    from tfx.types import artifact_utils

    artifact = kind()
    artifact.uri = str(uri)
    if splits:
        artifact.split_names = artifact_utils.encode_split_names(splits)
    os.makedirs(artifact.uri, exist_ok=True)
    return artifact


@pytest.mark.e2e
def test_two_trials_change_the_grid_and_the_trainer_trains_the_best(task_run, tmp_path):
    """TFX's Tuner and Trainer executors on the task's transformed rows (no Transform rerun)."""
    from tfx.components.trainer import executor as trainer_executor
    from tfx.components.tuner import executor as tuner_executor
    from tfx.dsl.components.base import base_executor
    from tfx.proto import trainer_pb2
    from tfx.types import standard_artifacts
    from tfx.types import standard_component_specs as keys
    from tfx.utils import proto_utils

    from pipeline import dag
    from pipeline.config import load_config
    from taxifare_modules import tuning

    _, out, _ = task_run
    cfg = load_config(
        "configs/local.yaml",
        [
            "tuning.enabled=true",
            "tuning.trials=2",
            "tuning.epochs=2",
            "training.epochs=2",
            "training.batch_size=64",
            # Only the grid varies, so the two trials must differ in it.
            "tuning.search_space={coordinate_buckets: [4, 32], hidden_layers: [1],"
            " hidden_units: [16], embedding_dim: [4], batch_size: [64],"
            " learning_rate: [0.01], cross_hash_buckets: [500]}",
        ],
    )
    examples = _artifact(standard_artifacts.Examples, out / task.TRANSFORMED_DIR, ["train", "eval"])
    graph = _artifact(standard_artifacts.TransformGraph, out / task.TRANSFORM_DIR)
    best = _artifact(standard_artifacts.HyperParameters, tmp_path / "best")
    results = _artifact(standard_artifacts.TunerResults, tmp_path / "results")
    common = {
        keys.TRAIN_ARGS_KEY: proto_utils.proto_to_json(trainer_pb2.TrainArgs(splits=["train"])),
        keys.EVAL_ARGS_KEY: proto_utils.proto_to_json(trainer_pb2.EvalArgs(splits=["eval"])),
    }
    context = base_executor.BaseExecutor.Context(tmp_dir=str(tmp_path / "tmp"), unique_id="1")
    tuner_executor.Executor(context).Do(
        {keys.EXAMPLES_KEY: [examples], keys.TRANSFORM_GRAPH_KEY: [graph]},
        {keys.BEST_HYPERPARAMETERS_KEY: [best], keys.TUNER_RESULTS_KEY: [results]},
        {
            **common,
            keys.TUNER_FN_KEY: dag.TUNER_FN,
            keys.CUSTOM_CONFIG_KEY: json.dumps(dag.tuner_custom_config(cfg)),
        },
    )
    trials = json.loads((tmp_path / "results" / "tuner_results.json").read_text())
    assert sorted(t[hparams.COORDINATE_BUCKETS] for t in trials) == [4, 32]
    chosen = min(trials, key=lambda t: t["score"])
    best_values = json.loads((tmp_path / "best" / "best_hyperparameters.txt").read_text())
    assert best_values["values"][hparams.COORDINATE_BUCKETS] == chosen[hparams.COORDINATE_BUCKETS]
    assert tuning.OBJECTIVE == "val_rmse"

    model = _artifact(standard_artifacts.Model, tmp_path / "model")
    model_run = _artifact(standard_artifacts.ModelRun, tmp_path / "model_run")
    trainer_executor.GenericExecutor(context).Do(
        {
            keys.EXAMPLES_KEY: [examples],
            keys.TRANSFORM_GRAPH_KEY: [graph],
            keys.HYPERPARAMETERS_KEY: [best],
        },
        {keys.MODEL_KEY: [model], keys.MODEL_RUN_KEY: [model_run]},
        {
            **common,
            keys.RUN_FN_KEY: dag.RUN_FN,
            keys.CUSTOM_CONFIG_KEY: json.dumps(dag.trainer_custom_config(cfg)),
        },
    )
    # The pushed model's own grid: its pickup-cell embedding has one row per cell of the
    # best trial's grid, not of the config's default (16 buckets).
    buckets = chosen[hparams.COORDINATE_BUCKETS]
    loaded = tf.saved_model.load(str(tmp_path / "model" / "Format-Serving"))
    serving = loaded.signatures[f.SERVING_TF_EXAMPLE_SIGNATURE]
    shapes = {v.name: tuple(v.shape) for v in serving.variables if f"{f.PICKUP_CELL_XF}_" in v.name}
    assert shapes and all(shape[0] == (buckets + 1) ** 2 for shape in shapes.values()), shapes


def test_distributed_tuners_sharing_a_disk_keep_each_others_trials(tmp_path, monkeypatch):
    """TFX's Vertex Tuner gives the oracle and every replica the same working folder."""
    from taxifare_modules import tuning

    def build(tuner_id):
        monkeypatch.setenv("KERASTUNER_TUNER_ID", tuner_id)
        oracle = tuning.make_oracle(tuning.RANDOM, 2, 0, tuning.search_space(None))
        return tuning.FareTuner(
            oracle=oracle,
            directory=tuning.tuner_directory(str(tmp_path)),
            project_name="taxifare",
            overwrite=True,
        )

    first = build("tfx-tuner-workerpool0-0")
    trial_file = os.path.join(first.project_dir, "trial_00", "trial.json")
    os.makedirs(os.path.dirname(trial_file))
    with open(trial_file, "w") as fh:
        fh.write("{}")
    second = build("tfx-tuner-workerpool1-0")
    assert second.project_dir != first.project_dir
    assert os.path.exists(trial_file), "a replica's start deleted another replica's trials"
    monkeypatch.delenv("KERASTUNER_TUNER_ID")
    assert tuning.tuner_directory(str(tmp_path)) == str(tmp_path)
