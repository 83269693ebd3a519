"""run_fn for TFX Trainer: trains the fare model and exports it with its serving signatures.

The exported SavedModel applies the Transform graph itself, so clients send raw trip fields:
- `serving_default`: raw fields as named tensors (what a JSON client sends); a missing value
  is given as `features.MISSING_FLOAT` (NaN), `MISSING_INT` (-1) or `MISSING_STRING` ("").
- `serving_tf_example`: serialized tf.Examples; a missing field is left out of the example.
- `transform_features`: serialized tf.Examples to transformed features (used by TFMA).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
from tfx_bsl.public import tfxio

from taxifare_modules import compat
from taxifare_modules import features as f
from taxifare_modules.hparams import (
    TRAINING_RECORD,
    ModelParams,
    TrainingSettings,
    apply_hyperparameters,
    hyperparameter_values,
)
from taxifare_modules.model import build_model
from taxifare_modules.monitoring_reference import write_reference

_LOG = logging.getLogger(__name__)

# Keys of the Trainer's custom_config (built from the typed config by the pipeline).
BATCH_SIZE_KEY = "batch_size"
EVAL_BATCH_SIZE_KEY = "eval_batch_size"
MODEL_PARAMS_KEY = "model"
SEED_KEY = "seed"
IN_MEMORY_KEY = "in_memory"
IN_MEMORY_MAX_ROWS_KEY = "in_memory_max_rows"
EPOCHS_KEY = "epochs"
PATIENCE_KEY = "early_stopping_patience"
MIN_DELTA_KEY = "early_stopping_min_delta"
VALIDATION_EXAMPLES_KEY = "validation_examples"
# The ExampleGen split the train and eval splits come from and why (pipeline/split_sizing.py),
# copied into the training record so that the run summary and `taxifare runs` show it.
DATA_SPLIT_KEY = "data_split"

# On a training cluster (Vertex AI), training state is backed up to <model_run_dir>/backup
# after every epoch, so a replica that restarts (preemption, maintenance) resumes there
# instead of from the start. A local run never resumes (a retried Trainer gets a new run
# dir), so it skips the backups, which cost about 1 s each.
# Set by Vertex AI in a training job's containers; TF_CONFIG or CLUSTER_SPEC also mean a cluster.
_CLUSTER_ENV_VARS = ("CLOUD_ML_JOB_ID", "CLUSTER_SPEC", "TF_CONFIG")
# How long a non-chief worker waits for the chief's export before TFX checks it exists.
_CHIEF_EXPORT_TIMEOUT_S = 600

# Vertex AI names its worker pools workerpool0..3 in CLUSTER_SPEC; TensorFlow's TF_CONFIG
# calls the same roles chief, worker, ps and evaluator.
_VERTEX_POOL_ROLES = {
    "workerpool0": "chief",
    "workerpool1": "worker",
    "workerpool2": "ps",
    "workerpool3": "evaluator",
}


def tf_config_from_cluster_spec() -> None:
    """Sets TF_CONFIG from Vertex's CLUSTER_SPEC when only CLUSTER_SPEC is set."""
    if os.environ.get("TF_CONFIG") or not os.environ.get("CLUSTER_SPEC"):
        return
    spec = json.loads(os.environ["CLUSTER_SPEC"])
    cluster = {
        _VERTEX_POOL_ROLES[pool]: addresses
        for pool, addresses in spec.get("cluster", {}).items()
        if pool in _VERTEX_POOL_ROLES and addresses
    }
    task = spec.get("task", {})
    task_type = _VERTEX_POOL_ROLES.get(task.get("type"), task.get("type"))
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": cluster, "task": {"type": task_type, "index": task.get("index", 0)}}
    )


def choose_strategy() -> tf.distribute.Strategy:
    """Picks a tf.distribute strategy from the devices and cluster this process sees.

    A TF_CONFIG (or Vertex's CLUSTER_SPEC) naming more than one worker gives
    MultiWorkerMirroredStrategy; several GPUs give MirroredStrategy; otherwise the default
    strategy, which places the ops on the one GPU when there is one (and, unlike
    OneDeviceStrategy, works with BackupAndRestore). Several logical CPU devices (tests) also
    give MirroredStrategy.
    """
    tf_config_from_cluster_spec()
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    cluster = tf_config.get("cluster", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


# Records read at a time when counting a split.
_COUNT_BATCH_RECORDS = 4096


def count_examples(file_pattern: list[str] | str) -> int:
    """Counts the tf.Examples in a split's (gzipped) TFRecord files without parsing them.

    The files are read one after another and the records counted a batch at a time: a
    parallel read hands every record from thread to thread, which cost 35 s (44 s of CPU)
    on the 1.2M-record train split of 2M trips on two cores, against 2.6 s this way.
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted(name for pattern in patterns for name in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no example files match {patterns}")
    compression = "GZIP" if files[0].endswith(".gz") else ""
    batches = tf.data.TFRecordDataset(files, compression_type=compression).batch(
        _COUNT_BATCH_RECORDS
    )
    count = batches.reduce(
        tf.constant(0, tf.int64), lambda n, batch: n + tf.shape(batch, out_type=tf.int64)[0]
    )
    return int(count.numpy())


# TFXIO's reader threads for the Trainer's datasets. None: its interleave over the files
# runs in the reading thread (still taking records from several files in turn). Any number,
# even 1, makes it a parallel interleave that hands each record between threads: on two
# cores that cost ~17 us of CPU per record, 5x the reading, shuffling, batching and parsing
# of it together (200k transformed records: 4.6 s of CPU against 1.0 s), and the training
# steps share those cores. One thread reads ~400k records/s, far above what training uses.
_READER_THREADS = None


def _stream(
    file_pattern: list[str],
    data_accessor: DataAccessor,
    schema: Any,
    batch_size: int,
    seed: int | None,
    num_epochs: int | None,
) -> tf.data.Dataset:
    """Batches streamed from the split's files: TFXIO interleaves the shards (in the reading
    thread, see _READER_THREADS), batches the serialized records before parsing each batch
    at once, and prefetches; only a shuffle buffer of examples is in memory."""
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size,
            label_key=f.LABEL_KEY,
            shuffle=num_epochs is None,
            shuffle_seed=seed,
            num_epochs=num_epochs,
            reader_num_threads=_READER_THREADS,
            prefetch_buffer_size=tf.data.AUTOTUNE,
            sloppy_ordering=seed is None,
        ),
        schema,
    )


# Rows parsed at a time when streaming (rounded down to a multiple of the batch size).
_PARSE_BATCH_ROWS = 2048


def _input_fn(
    file_pattern: list[str],
    data_accessor: DataAccessor,
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    seed: int | None,
    in_memory: bool,
    training: bool = True,
) -> tf.data.Dataset:
    """Batches of (transformed features, label).

    For training, shuffled and repeated forever; otherwise one pass in file order.
    With `in_memory`, the split is read once into tensors and each batch is a gather of
    row indices: much faster per step on data that fits in memory. Otherwise the examples
    are streamed from the files (any size).
    """
    schema = tf_transform_output.transformed_metadata.schema
    if not in_memory:
        # TFXIO parses each batch in one call, then renames the features and pops the label
        # in two more maps: a fixed cost per batch, large beside the parsing itself at the
        # Trainer's batch sizes. Parsing a multiple of the batch size at a time and cutting
        # it up gives the very same batches (shuffling is per record, before batching) for
        # less CPU, which the training steps share on a small machine.
        parse_rows = batch_size * max(1, _PARSE_BATCH_ROWS // batch_size)
        batches = _stream(
            file_pattern, data_accessor, schema, parse_rows, seed, None if training else 1
        ).rebatch(batch_size, drop_remainder=training)
        if seed is None:
            # TFXIO ignores `sloppy_ordering`: without a seed nothing needs a fixed order.
            options = tf.data.Options()
            options.deterministic = False
            batches = batches.with_options(options)
        return batches.prefetch(tf.data.AUTOTUNE)
    parts = list(_stream(file_pattern, data_accessor, schema, 8192, None, 1))
    features = {k: tf.concat([p[0][k] for p in parts], axis=0) for k in parts[0][0]}
    labels = tf.concat([p[1] for p in parts], axis=0)
    rows = int(labels.shape[0])

    def gather(indices: tf.Tensor):
        return {k: tf.gather(v, indices) for k, v in features.items()}, tf.gather(labels, indices)

    indices = tf.data.Dataset.range(rows)
    if training:
        indices = (
            indices.shuffle(rows, seed=seed, reshuffle_each_iteration=True)
            .repeat()
            .batch(batch_size, drop_remainder=True)
        )
    else:
        indices = indices.batch(batch_size)
    return indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# Batch size of the one pass over the eval split that records the monitoring reference.
REFERENCE_BATCH_SIZE = 4096


def _eval_pass(
    file_pattern: list[str], data_accessor: DataAccessor, tf_transform_output: tft.TFTransformOutput
) -> tf.data.Dataset:
    """One pass over a split in large batches of (transformed features, label)."""
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=REFERENCE_BATCH_SIZE,
            label_key=f.LABEL_KEY,
            num_epochs=1,
            reader_num_threads=_READER_THREADS,
        ),
        tf_transform_output.transformed_metadata.schema,
    )


def _serving_raw_spec(tf_transform_output: tft.TFTransformOutput) -> dict[str, Any]:
    """The raw feature spec a serving request carries: the schema's, less the label."""
    spec = dict(tf_transform_output.raw_feature_spec())
    spec.pop(f.LABEL_KEY, None)
    return spec


def _dense_to_sparse(value: tf.Tensor, missing: float | int | str) -> tf.SparseTensor:
    """A [batch] tensor to a [batch, 1] SparseTensor without the entries equal to `missing`."""
    value = tf.reshape(value, [-1])
    if isinstance(missing, float) and math.isnan(missing):
        present = tf.logical_not(tf.math.is_nan(value))
    else:
        present = tf.not_equal(value, tf.constant(missing, value.dtype))
    rows = tf.where(present)
    indices = tf.concat([rows, tf.zeros_like(rows)], axis=1)
    return tf.SparseTensor(
        indices=indices,
        values=tf.gather_nd(value, rows),
        dense_shape=tf.stack([tf.shape(value, out_type=tf.int64)[0], tf.constant(1, tf.int64)]),
    )


_SERVING_INPUT_DTYPES: dict[str, tf.DType] = {
    **{k: tf.float32 for k in f.FLOAT_FEATURE_KEYS},
    **{k: tf.int64 for k in f.INT_FEATURE_KEYS},
    **{k: tf.string for k in f.STRING_FEATURE_KEYS},
}
_MISSING_BY_DTYPE = {
    tf.float32: f.MISSING_FLOAT,
    tf.int64: f.MISSING_INT,
    tf.string: f.MISSING_STRING,
}


def serving_input_signature() -> dict[str, tf.TensorSpec]:
    """Input specs of `serving_default`: one [batch] tensor per raw trip field."""
    return {k: tf.TensorSpec([None], dtype, name=k) for k, dtype in _SERVING_INPUT_DTYPES.items()}


def build_signatures(
    model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput
) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """Builds the serving signatures; each applies the Transform graph inside the model."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = _serving_raw_spec(tf_transform_output)

    def _predict(raw: dict[str, Any]) -> dict[str, tf.Tensor]:
        transformed = model.tft_layer(raw)
        transformed.pop(f.LABEL_KEY, None)
        fare = tf.reshape(model(transformed, training=False), [-1])
        return {f.PREDICTION_KEY: fare}

    @tf.function
    def serve_tf_examples(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        return _predict(tf.io.parse_example(examples, raw_spec))

    @tf.function
    def serve_raw(**fields: tf.Tensor) -> dict[str, tf.Tensor]:
        raw = {}
        for key, value in fields.items():
            spec = raw_spec[key]
            value = tf.cast(value, spec.dtype) if value.dtype != spec.dtype else value
            raw[key] = _dense_to_sparse(value, _MISSING_BY_DTYPE[_SERVING_INPUT_DTYPES[key]])
        return _predict(raw)

    @tf.function
    def transform_features(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(examples, tf_transform_output.raw_feature_spec())
        return model.tft_layer(parsed)

    examples_spec = tf.TensorSpec([None], tf.string, name=f.SERVING_TF_EXAMPLE_INPUT_KEY)
    return {
        f.SERVING_DEFAULT_SIGNATURE: serve_raw.get_concrete_function(**serving_input_signature()),
        f.SERVING_TF_EXAMPLE_SIGNATURE: serve_tf_examples.get_concrete_function(examples_spec),
        f.TRANSFORM_FEATURES_SIGNATURE: transform_features.get_concrete_function(examples_spec),
    }


def on_training_cluster() -> bool:
    """True in a training job's container (Vertex AI) or any process given a TF_CONFIG."""
    return any(os.environ.get(name) for name in _CLUSTER_ENV_VARS)


def export_model(
    model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput, export_dir: str
) -> None:
    """Saves the model with its serving signatures (see the module docstring) to export_dir.

    Keras' own per-layer call traces are left out of the SavedModel: every client (TF
    Serving, TFMA, `taxifare serve`) calls the signatures, and tracing each of the model's
    ~80 layers again took most of the export time.
    """
    signatures = build_signatures(model, tf_transform_output)
    with compat.keras_saving_without_traces():
        tf.saved_model.save(model, export_dir, signatures=signatures)


class _EpochLog(tf.keras.callbacks.Callback):
    """One log record per epoch with its metrics (what Keras' verbose=2 line printed)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = " ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()))
        _LOG.info("epoch %d: %s", epoch + 1, metrics)


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The transformed splits a model trains and is validated on, and how to read them."""

    train_files: list[str]
    eval_files: list[str]
    data_accessor: DataAccessor
    tf_transform_output: tft.TFTransformOutput


@dataclasses.dataclass(frozen=True)
class FitResult:
    """A trained model and how its training went."""

    model: tf.keras.Model
    best_eval_rmse: float
    best_epoch: int  # 1-based; a round when validating by examples
    epochs_run: int  # Keras epochs: passes, or rounds when validating by examples
    steps_per_epoch: int
    train_examples: int
    batch_size: int  # the global batch (all replicas)
    # Training examples between two validations when validating by examples (a pass over
    # the train split is longer than settings.validation_examples); None: once per pass.
    round_examples: int | None = None


def settings_from_custom_config(
    config: dict[str, Any], train_steps: int | None = None, eval_steps: int | None = None
) -> TrainingSettings:
    """The TrainingSettings a custom_config (see pipeline/dag.py) describes."""
    defaults = TrainingSettings()
    batch_size = int(config.get(BATCH_SIZE_KEY, defaults.batch_size))
    return TrainingSettings(
        batch_size=batch_size,
        eval_batch_size=int(config.get(EVAL_BATCH_SIZE_KEY, batch_size)),
        epochs=int(config.get(EPOCHS_KEY, defaults.epochs)),
        early_stopping_patience=int(config.get(PATIENCE_KEY, defaults.early_stopping_patience)),
        early_stopping_min_delta=float(
            config.get(MIN_DELTA_KEY, defaults.early_stopping_min_delta)
        ),
        train_steps=train_steps,
        eval_steps=eval_steps,
        seed=config.get(SEED_KEY),
        in_memory=bool(config.get(IN_MEMORY_KEY, defaults.in_memory)),
        in_memory_max_rows=int(config.get(IN_MEMORY_MAX_ROWS_KEY, defaults.in_memory_max_rows)),
        validation_examples=config.get(VALIDATION_EXAMPLES_KEY, defaults.validation_examples),
    )


def model_params_from_custom_config(config: dict[str, Any]) -> ModelParams:
    """The ModelParams of a custom_config's `model` entry."""
    params = dict(config.get(MODEL_PARAMS_KEY, {}))
    if "hidden_units" in params:
        params["hidden_units"] = tuple(params["hidden_units"])
    return ModelParams(**params)


def training_length(
    train_rows: int, batch_size: int, settings: TrainingSettings
) -> tuple[int, int, int | None]:
    """(epochs, steps per epoch, examples per round) of a training on `train_rows` examples.

    An epoch is one pass over the train split, unless a pass is longer than
    `settings.validation_examples`: then Keras' epoch is a round of that many examples
    (whole batches), so the eval RMSE is checked and early stopping can act within a pass,
    and the rounds are bounded to `settings.epochs` passes' worth of steps. The third value
    is None when an epoch is a pass. `settings.train_steps` caps the total either way.
    """
    steps_per_pass = max(1, train_rows // batch_size)
    steps_per_epoch, epochs, round_examples = steps_per_pass, settings.epochs, None
    every = settings.validation_examples
    if every is not None and train_rows > every:
        steps_per_epoch = max(1, math.ceil(every / batch_size))
        epochs = math.ceil(settings.epochs * steps_per_pass / steps_per_epoch)
        round_examples = steps_per_epoch * batch_size
    if settings.train_steps is not None:
        steps_per_epoch = min(steps_per_epoch, settings.train_steps)
        epochs = min(epochs, math.ceil(settings.train_steps / steps_per_epoch))
        if round_examples is not None:  # a cap below one round shortens the round
            round_examples = steps_per_epoch * batch_size
    return epochs, steps_per_epoch, round_examples


def fit_model(
    params: ModelParams,
    settings: TrainingSettings,
    data: TrainingData,
    strategy: tf.distribute.Strategy | None = None,
    callbacks: list[tf.keras.callbacks.Callback] | tuple = (),
) -> FitResult:
    """Trains a model on the train split, epoch by epoch, validating on the eval split.

    The length comes from the data: an epoch is one pass over the train split (its
    examples counted from the files), or at scale a round of `validation_examples` (see
    training_length), and training stops once the eval RMSE has not improved for
    `early_stopping_patience` epochs, keeping the best epoch's weights. The
    test split is never looked at here. The pipeline's run_fn, the tuner's trials and
    `python -m taxifare_modules.task` all train through this function.
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if settings.seed is not None:
        tf.keras.utils.set_random_seed(int(settings.seed))
    train_rows = count_examples(data.train_files)
    eval_rows = count_examples(data.eval_files)
    batch_size = min(settings.batch_size * replicas, train_rows)
    eval_batch_size = settings.eval_batch_size * replicas
    epochs, steps_per_epoch, round_examples = training_length(train_rows, batch_size, settings)

    def in_memory(rows: int) -> bool:
        return settings.in_memory and rows <= settings.in_memory_max_rows

    _LOG.info(
        "training on %d examples (%s), validating on %d (%s): up to %d %s of %d steps",
        train_rows,
        "in memory" if in_memory(train_rows) else "streamed",
        eval_rows,
        "in memory" if in_memory(eval_rows) else "streamed",
        epochs,
        "epochs" if round_examples is None else f"rounds of {round_examples:,} examples",
        steps_per_epoch,
    )
    train_ds = _input_fn(
        data.train_files,
        data.data_accessor,
        data.tf_transform_output,
        batch_size,
        settings.seed,
        in_memory(train_rows),
    )
    eval_ds = _input_fn(
        data.eval_files,
        data.data_accessor,
        data.tf_transform_output,
        eval_batch_size,
        settings.seed,
        in_memory(eval_rows),
        training=False,
    )
    with strategy.scope():
        model = build_model(params)
    stopping = tf.keras.callbacks.EarlyStopping(
        monitor="val_rmse",
        mode="min",
        patience=settings.early_stopping_patience,
        min_delta=settings.early_stopping_min_delta,
        restore_best_weights=True,
    )
    history = model.fit(
        train_ds,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=eval_ds,
        validation_steps=settings.eval_steps,
        callbacks=[stopping, _EpochLog(), *callbacks],
        # Keras prints its progress lines itself; they go through logging instead (a run's
        # console stays quiet unless --verbose; the Vertex job's log keeps them).
        verbose=0,
    )
    val_rmse = history.history["val_rmse"]
    # The epoch whose weights were kept: the last one lower than the best before it by at
    # least min_delta (not necessarily the lowest of all).
    best = stopping.best_epoch
    _LOG.info(
        "best eval RMSE %.4f after epoch %d of %d (%d steps each)",
        val_rmse[best],
        best + 1,
        len(val_rmse),
        steps_per_epoch,
    )
    return FitResult(
        model=model,
        best_eval_rmse=float(val_rmse[best]),
        best_epoch=best + 1,
        epochs_run=len(val_rmse),
        steps_per_epoch=steps_per_epoch,
        train_examples=train_rows,
        batch_size=batch_size,
        round_examples=round_examples,
    )


def write_training_record(
    result: FitResult,
    params: ModelParams,
    settings: TrainingSettings,
    model_run_dir: str,
    data_split: dict[str, Any] | None = None,
) -> None:
    """Writes <model_run_dir>/training.json: epochs run, the best epoch, examples trained.

    `validation` says what an epoch was: a pass over the train split (`epoch`), or a round
    of `round_examples` (`examples`), with the patience in examples; `data_split` is the
    split the examples came from and why (pipeline/split_sizing.py), when the pipeline gave it.
    """
    examples_per_epoch = result.steps_per_epoch * result.batch_size
    record = {
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "steps_per_epoch": result.steps_per_epoch,
        "batch_size": result.batch_size,
        "examples_trained": result.epochs_run * examples_per_epoch,
        "examples_at_best": result.best_epoch * examples_per_epoch,
        "train_examples": result.train_examples,
        "best_eval_rmse": result.best_eval_rmse,
        "validation": "epoch" if result.round_examples is None else "examples",
        "round_examples": result.round_examples,
        "patience_examples": settings.early_stopping_patience * examples_per_epoch,
        "data_split": data_split,
        "model": dataclasses.asdict(params),
        "settings": dataclasses.asdict(settings),
    }
    tf.io.gfile.makedirs(model_run_dir)
    with tf.io.gfile.GFile(os.path.join(model_run_dir, TRAINING_RECORD), "w") as fh:
        fh.write(json.dumps(record, indent=2, default=str))


def vertex_tensorboard_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """Where a Vertex training job attached to a TensorBoard streams logs from, or None.

    Vertex sets AIP_TENSORBOARD_LOG_DIR when the CustomJob names a TensorBoard; the folder is
    the same for every job of the pipeline, so each job writes under its own id.
    """
    environ = os.environ if environ is None else environ
    base = environ.get("AIP_TENSORBOARD_LOG_DIR")
    if not base:
        return None
    return os.path.join(base, environ.get("CLOUD_ML_JOB_ID") or "local")


def train_and_export(
    params: ModelParams,
    settings: TrainingSettings,
    data: TrainingData,
    model_run_dir: str,
    serving_model_dir: str,
    data_split: dict[str, Any] | None = None,
) -> FitResult:
    """Trains (see fit_model), exports with the serving signatures, records the reference.

    Shared by the pipeline's run_fn and `python -m taxifare_modules.task`: only the entry
    differs. TensorBoard logs go to <model_run_dir>/logs.
    """
    # First: MultiWorkerMirroredStrategy must exist before TensorFlow sets up its runtime.
    strategy = choose_strategy()
    _LOG.info(
        "training with %s on %d replica(s)",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    chief = _is_chief(strategy)
    _LOG.info("model hyperparameters: %s; training: %s", params, settings)

    # Only the chief writes to the run's directories; other workers write to scratch space
    # (they must still save: saving a multi-worker model is a collective operation).
    scratch = None if chief else tempfile.mkdtemp(prefix="taxifare-worker-")
    run_dir = model_run_dir if chief else scratch
    callbacks: list[tf.keras.callbacks.Callback] = [
        tf.keras.callbacks.TensorBoard(log_dir=os.path.join(run_dir, "logs"), update_freq="epoch")
    ]
    vertex_logs = vertex_tensorboard_dir() if chief else None
    if vertex_logs:
        # Vertex TensorBoard (vertex.tensorboard) streams what is written there; the run's own
        # logs above stay where the report and the summary read them.
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=vertex_logs, update_freq="epoch"))
    if on_training_cluster():
        # Restores the last backup when the job restarts, so a preempted job resumes; the
        # backup is deleted once training completes.
        callbacks.append(
            tf.keras.callbacks.BackupAndRestore(
                backup_dir=os.path.join(model_run_dir, "backup"), save_freq="epoch"
            )
        )
    result = fit_model(params, settings, data, strategy, callbacks)
    export_dir = serving_model_dir if chief else os.path.join(scratch, "model")
    export_model(result.model, data.tf_transform_output, export_dir)
    if chief:
        # What the model computes on its eval split, for the skew check of served traffic.
        written = write_reference(
            result.model,
            _eval_pass(data.eval_files, data.data_accessor, data.tf_transform_output),
            export_dir,
        )
        _LOG.info("recorded the model's distance and fare on %d eval examples", written)
        write_training_record(result, params, settings, model_run_dir, data_split)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
        _wait_for_chief_export(serving_model_dir)
    return result


# TFX's key of the Vertex AI Training job in the Trainer's custom_config. TFX hands the job's
# replicas the same custom_config, so a replica can read what its worker pool asked for.
_TRAINING_ARGS_KEY = "ai_platform_training_args"
# Set only by the rehearsal's stand-in for Vertex AI Training (pipeline/vertex/stand_ins.py),
# which runs GPU pools on this machine's CPU on purpose.
GPU_STAND_IN_ENV = "TAXIFARE_REHEARSAL_GPU_STAND_IN"


class AcceleratorMissingError(RuntimeError):
    """The training job's worker pool asked for GPUs this replica does not see."""


def requested_gpus(config: dict[str, Any], cluster_spec: str | None) -> tuple[str | None, int]:
    """(GPU type, count) this replica's Vertex worker pool asked for; (None, 0) without GPUs.

    Vertex AI Training tells each replica its pool in CLUSTER_SPEC (task type
    `workerpool<N>`); without it, the replica is the chief (pool 0).
    """
    job = config.get(_TRAINING_ARGS_KEY) or {}
    pools = job.get("job_spec", {}).get("worker_pool_specs") or []
    if not pools:
        return None, 0
    index = 0
    if cluster_spec:
        task = json.loads(cluster_spec).get("task", {}).get("type", "")
        if task.startswith("workerpool") and task[len("workerpool") :].isdigit():
            index = int(task[len("workerpool") :])
    machine = pools[min(index, len(pools) - 1)].get("machine_spec", {})
    if not machine.get("accelerator_type"):
        return None, 0
    return machine["accelerator_type"], int(machine.get("accelerator_count") or 1)


def check_requested_gpus(
    config: dict[str, Any], visible_gpus: int, cluster_spec: str | None
) -> None:
    """Raises AcceleratorMissingError when the pool asked for more GPUs than TensorFlow sees.

    Without the check a GPU job whose image has no CUDA-enabled TensorFlow (or no driver)
    trains on the CPU while the GPUs are billed.
    """
    kind, count = requested_gpus(config, cluster_spec)
    if count == 0 or visible_gpus >= count:
        return
    if os.environ.get(GPU_STAND_IN_ENV) == "1":
        _LOG.info("rehearsal: the pool's %d %s stood in by this machine's CPU", count, kind)
        return
    raise AcceleratorMissingError(
        f"the Vertex AI training job's worker pool asked for {count} x {kind} but TensorFlow"
        f" sees {visible_gpus} GPU(s): the image lacks the CUDA libraries TensorFlow loads"
        " (tensorflow[and-cuda]'s NVIDIA packages) or the VM's driver is missing; stopping"
        " instead of training on the CPU while the GPUs are billed (build the image with"
        " --build-arg LOCK=requirements-gpu.lock, or use a CPU tier: vertex.training.tier=basic)"
    )


def run_fn(fn_args: FnArgs) -> None:
    """Trains the model and exports it. Called by TFX Trainer.

    Args:
      fn_args: TFX's trainer arguments; `custom_config` holds the training settings and the
        model's hyperparameters, which the Tuner's best hyperparameters (when the pipeline
        tunes) override.

    Raises:
      AcceleratorMissingError: the Vertex worker pool asked for GPUs this replica lacks.
    """
    config = fn_args.custom_config or {}
    check_requested_gpus(
        config, len(tf.config.list_physical_devices("GPU")), os.environ.get("CLUSTER_SPEC")
    )
    params = model_params_from_custom_config(config)
    settings = settings_from_custom_config(config, fn_args.train_steps, fn_args.eval_steps)
    if fn_args.hyperparameters:
        params, settings = apply_hyperparameters(
            hyperparameter_values(fn_args.hyperparameters), params, settings
        )
        _LOG.info("using the Tuner's best hyperparameters")
    train_and_export(
        params,
        settings,
        TrainingData(
            train_files=fn_args.train_files,
            eval_files=fn_args.eval_files,
            data_accessor=fn_args.data_accessor,
            tf_transform_output=tft.TFTransformOutput(fn_args.transform_output),
        ),
        fn_args.model_run_dir,
        fn_args.serving_model_dir,
        config.get(DATA_SPLIT_KEY),
    )


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    """False only on a non-chief worker of a multi-worker cluster."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type in (None, "chief"):
        return True
    # Without a chief in the cluster, worker 0 is the chief.
    return (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def _wait_for_chief_export(serving_model_dir: str) -> None:
    """Waits until the chief's SavedModel exists: TFX fails a run_fn that leaves none."""
    deadline = time.monotonic() + _CHIEF_EXPORT_TIMEOUT_S
    marker = os.path.join(serving_model_dir, "saved_model.pb")
    while not tf.io.gfile.exists(marker):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the chief wrote no model to {serving_model_dir}")
        time.sleep(5)
