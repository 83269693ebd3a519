"""The trainer as a stand-alone module: `python -m taxifare_modules.task --help`.

For iterating on the model outside the pipeline: runs the pipeline's own
`preprocessing_fn` with tf.Transform on Beam (in this process) over the given trip CSVs
(local or gs://), trains through the same `trainer.train_and_export` as the pipeline's
run_fn (epochs with early stopping on the eval files, best weights kept), exports the same
three signatures, writes TensorBoard logs under <output-dir>/logs, and prints one line of
JSON with the eval RMSE. Every flag has the name of the config field (`training.*`) it
stands for; the defaults are the pipeline's.

    python -m taxifare_modules.task --train-data-paths 'data/train-*.csv' \\
        --eval-data-paths data/eval.csv --output-dir build/task --coordinate-buckets 32
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterable
from typing import Any

from taxifare_modules import features as f

_LOG = logging.getLogger("taxifare_modules.task")

# Where the outputs go under --output-dir.
TRANSFORM_DIR = "transform"
TRANSFORMED_DIR = "transformed"
MODEL_DIR = "model"
LOGS_DIR = "logs"
_TRANSFORMED_PREFIX = "part"
_TRANSFORMED_SUFFIX = ".tfrecord.gz"

# The pipeline's default plausible-fare bounds (config `data.min_fare` / `data.max_fare`).
DEFAULT_MIN_FARE = 0.0
DEFAULT_MAX_FARE = 250.0


def _int_list(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None
    if not units or min(units) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return units


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line; each flag's default is the pipeline config's default."""
    from taxifare_modules.hparams import ModelParams, TrainingSettings

    model, training = ModelParams(), TrainingSettings()
    parser = argparse.ArgumentParser(
        prog="python -m taxifare_modules.task",
        description=(
            "Transform trip CSVs with the pipeline's preprocessing_fn, train the fare model"
            " and export it with its serving signatures; prints one JSON line."
        ),
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--train-data-paths",
        nargs="+",
        required=True,
        help="trip CSV files or globs to train on (local or gs://)",
    )
    data.add_argument(
        "--eval-data-paths",
        nargs="+",
        required=True,
        help="trip CSV files or globs for early stopping and the reported RMSE",
    )
    data.add_argument(
        "--output-dir",
        required=True,
        help="where the transform graph, the model (model/) and TensorBoard logs go",
    )
    data.add_argument(
        "--min-fare",
        type=float,
        default=DEFAULT_MIN_FARE,
        help="data.min_fare: trips with a fare at or below it are dropped",
    )
    data.add_argument(
        "--max-fare",
        type=float,
        default=DEFAULT_MAX_FARE,
        help="data.max_fare: trips with a fare above it are dropped",
    )
    length = parser.add_argument_group("training (training.*)")
    length.add_argument(
        "--epochs",
        type=_positive_int,
        default=training.epochs,
        help="training.epochs: at most this many passes over the train files",
    )
    length.add_argument(
        "--early-stopping-patience",
        type=_positive_int,
        default=training.early_stopping_patience,
        help="training.early_stopping_patience: epochs without a better eval RMSE before stopping",
    )
    length.add_argument(
        "--early-stopping-min-delta",
        type=_non_negative_float,
        default=training.early_stopping_min_delta,
        help="training.early_stopping_min_delta: how much lower (US dollars) an eval RMSE must"
        " be to count as better",
    )
    length.add_argument(
        "--train-steps",
        type=_positive_int,
        default=None,
        help="training.train_steps: cap on the total training steps (default: the epochs decide)",
    )
    length.add_argument(
        "--eval-steps",
        type=_positive_int,
        default=None,
        help="training.eval_steps: cap on eval batches per validation (default: all)",
    )
    length.add_argument(
        "--batch-size",
        type=_positive_int,
        default=training.batch_size,
        help="training.batch_size: examples per training step (per replica)",
    )
    length.add_argument(
        "--eval-batch-size",
        type=_positive_int,
        default=training.eval_batch_size,
        help="training.eval_batch_size: examples per eval batch (per replica)",
    )
    length.add_argument(
        "--seed",
        type=int,
        default=training.seed,
        help="training.seed: seeds initialisation and shuffling",
    )
    length.add_argument(
        "--validation-examples",
        type=_non_negative_int,
        default=training.validation_examples or 0,
        help="training.validation_examples: validate every this many training examples when a"
        " pass over the train files is longer (0: once per pass)",
    )
    length.add_argument(
        "--in-memory-max-rows",
        type=int,
        default=training.in_memory_max_rows,
        help="training.in_memory_max_rows: larger splits are streamed from files (0: always)",
    )
    net = parser.add_argument_group("model (training.model.*)")
    net.add_argument(
        "--hidden-units",
        type=_int_list,
        default=model.hidden_units,
        help="training.model.hidden_units: units per hidden layer, e.g. 64,32",
    )
    net.add_argument(
        "--embedding-dim",
        type=_positive_int,
        default=model.embedding_dim,
        help="training.model.embedding_dim: size of each categorical embedding",
    )
    net.add_argument(
        "--learning-rate",
        type=float,
        default=model.learning_rate,
        help="training.model.learning_rate: Adam's learning rate",
    )
    net.add_argument(
        "--dropout",
        type=float,
        default=model.dropout,
        help="training.model.dropout: dropout after each hidden layer (0: none)",
    )
    net.add_argument(
        "--fare-prior",
        type=float,
        default=model.fare_prior,
        help="training.model.fare_prior: the output's initial bias, about the mean fare",
    )
    net.add_argument(
        "--huber-delta",
        type=float,
        default=model.huber_delta,
        help="training.model.huber_delta: Huber loss delta in dollars (0: mean squared error)",
    )
    net.add_argument(
        "--coordinate-buckets",
        type=int,
        choices=f.COORDINATE_BUCKET_CHOICES,
        default=model.coordinate_buckets,
        help="training.model.coordinate_buckets: quantile buckets per coordinate of the grid",
    )
    net.add_argument(
        "--cross-hash-buckets",
        type=_positive_int,
        default=model.cross_hash_buckets,
        help="training.model.cross_hash_buckets: hash size of the pickup x dropoff cell cross",
    )
    return parser


def params_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """(ModelParams, TrainingSettings) from parsed flags: the one place flags land."""
    from taxifare_modules.hparams import ModelParams, TrainingSettings

    params = ModelParams(
        hidden_units=tuple(args.hidden_units),
        embedding_dim=args.embedding_dim,
        learning_rate=args.learning_rate,
        dropout=args.dropout,
        fare_prior=args.fare_prior,
        huber_delta=args.huber_delta or None,
        coordinate_buckets=args.coordinate_buckets,
        cross_hash_buckets=args.cross_hash_buckets,
    )
    settings = TrainingSettings(
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        epochs=args.epochs,
        early_stopping_patience=args.early_stopping_patience,
        early_stopping_min_delta=args.early_stopping_min_delta,
        train_steps=args.train_steps,
        eval_steps=args.eval_steps,
        seed=args.seed,
        in_memory=args.in_memory_max_rows > 0,
        in_memory_max_rows=args.in_memory_max_rows,
        validation_examples=args.validation_examples or None,
    )
    return params, settings


def raw_feature_spec() -> dict[str, Any]:
    """The raw trip fields Transform reads (model inputs and label), all optional."""
    import tensorflow as tf

    spec: dict[str, Any] = {k: tf.io.VarLenFeature(tf.float32) for k in f.FLOAT_FEATURE_KEYS}
    spec.update({k: tf.io.VarLenFeature(tf.int64) for k in f.INT_FEATURE_KEYS})
    spec.update({k: tf.io.VarLenFeature(tf.string) for k in f.STRING_FEATURE_KEYS})
    spec[f.LABEL_KEY] = tf.io.VarLenFeature(tf.float32)
    return spec


_PARSERS = {
    **{k: float for k in f.FLOAT_FEATURE_KEYS},
    **{k: lambda v: int(float(v)) for k in f.INT_FEATURE_KEYS},
    **{k: lambda v: v.encode() for k in f.STRING_FEATURE_KEYS},
    f.LABEL_KEY: float,
}


def expand_paths(patterns: Iterable[str]) -> list[str]:
    """Files matching the patterns (local or gs://), or ValueError naming the empty one."""
    import tensorflow as tf

    files = []
    for pattern in patterns:
        matched = sorted(tf.io.gfile.glob(pattern))
        if not matched:
            raise ValueError(f"no files match {pattern!r}")
        files += matched
    return files


def read_header(path: str) -> list[str]:
    """The CSV header of a trip file; ValueError when it lacks a model input or the label."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path) as fh:
        header = next(csv.reader([fh.readline()]))
    missing = [k for k in (*f.RAW_FEATURE_KEYS, f.LABEL_KEY) if k not in header]
    if missing:
        raise ValueError(f"{path}: the CSV header lacks {missing}")
    return header


def parse_line(line: str, header: list[str]) -> dict[str, list]:
    """One CSV line to Transform's instance dict: an empty cell is a field with no values."""
    row = dict(zip(header, next(csv.reader(io.StringIO(line))), strict=False))
    return {
        key: [parse(row[key])] if row.get(key, "") != "" else [] for key, parse in _PARSERS.items()
    }


def transform_csvs(
    train_files: list[str],
    eval_files: list[str],
    output_dir: str,
    min_fare: float,
    max_fare: float,
) -> tuple[str, str, str]:
    """Fits preprocessing_fn on the train files and applies it to both, with Beam here.

    Returns:
      (transform output dir, train example pattern, eval example pattern).
    """
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata

    from taxifare_modules.preprocessing import preprocessing_fn

    header = read_header(train_files[0])
    for path in train_files[1:] + eval_files:
        if read_header(path) != header:
            raise ValueError(f"{path}: its CSV header differs from {train_files[0]}'s")
    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(raw_feature_spec())
    transform_dir = os.path.join(output_dir, TRANSFORM_DIR)
    patterns = {}

    def plausible(row: dict[str, list]) -> bool:
        fare = row[f.LABEL_KEY]
        return bool(fare) and min_fare < fare[0] <= max_fare

    with tempfile.TemporaryDirectory(prefix="taxifare-tft-") as temp_dir:
        options = beam.options.pipeline_options.PipelineOptions(
            ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
        )
        with beam.Pipeline(options=options) as pipeline, tft_beam.Context(temp_dir=temp_dir):
            rows = {}
            for split, files in (("train", train_files), ("eval", eval_files)):
                rows[split] = (
                    pipeline
                    | f"Files[{split}]" >> beam.Create(files)
                    | f"Read[{split}]" >> beam.io.ReadAllFromText(skip_header_lines=1)
                    | f"Parse[{split}]" >> beam.Map(parse_line, header)
                    | f"Fares[{split}]" >> beam.Filter(plausible)
                )
            (train, transformed_metadata), transform_fn = (
                rows["train"],
                metadata,
            ) | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
            evaluation, _ = (
                (rows["eval"], metadata),
                transform_fn,
            ) | "TransformEval" >> tft_beam.TransformDataset()
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(transform_dir)
            # The raw schema too: the serving signatures parse requests with it.
            _ = metadata | "WriteRawMetadata" >> tft_beam.WriteMetadata(
                os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR), pipeline
            )
            for split, data in (("train", train), ("eval", evaluation)):
                # The layout of a TFX Examples artifact, so TFX's components can read it too.
                prefix = os.path.join(
                    output_dir, TRANSFORMED_DIR, f"Split-{split}", _TRANSFORMED_PREFIX
                )
                patterns[split] = f"{prefix}*{_TRANSFORMED_SUFFIX}"
                _ = (
                    data
                    | f"Encode[{split}]"
                    >> beam.Map(tft.coders.ExampleProtoCoder(transformed_metadata.schema).encode)
                    | f"Write[{split}]"
                    >> beam.io.WriteToTFRecord(prefix, file_name_suffix=_TRANSFORMED_SUFFIX)
                )
    return transform_dir, patterns["train"], patterns["eval"]


def tf_dataset_factory(file_pattern: Any, options: Any, schema: Any) -> Any:
    """Reads transformed tf.Examples as TFX's DataAccessor does (TFXIO over TFRecords)."""
    from tfx_bsl.public import tfxio

    record = tfxio.TFExampleRecord(
        file_pattern=file_pattern, schema=schema, telemetry_descriptors=["taxifare", "task"]
    )
    return record.TensorFlowDataset(options)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Transforms, trains and exports; returns the result line's fields."""
    import tensorflow_transform as tft
    from tfx.components.trainer.fn_args_utils import DataAccessor

    from taxifare_modules import trainer

    params, settings = params_from_args(args)
    train_files = expand_paths(args.train_data_paths)
    eval_files = expand_paths(args.eval_data_paths)
    _LOG.info("transforming %d train and %d eval file(s)", len(train_files), len(eval_files))
    transform_dir, train_pattern, eval_pattern = transform_csvs(
        train_files, eval_files, args.output_dir, args.min_fare, args.max_fare
    )
    model_dir = os.path.join(args.output_dir, MODEL_DIR)
    result = trainer.train_and_export(
        params,
        settings,
        trainer.TrainingData(
            train_files=[train_pattern],
            eval_files=[eval_pattern],
            data_accessor=DataAccessor(
                tf_dataset_factory=tf_dataset_factory,
                record_batch_factory=None,
                data_view_decode_fn=None,
            ),
            tf_transform_output=tft.TFTransformOutput(transform_dir),
        ),
        args.output_dir,
        model_dir,
    )
    return {
        "eval_rmse": round(result.best_eval_rmse, 4),
        "best_epoch": result.best_epoch,
        "epochs": result.epochs_run,
        "steps_per_epoch": result.steps_per_epoch,
        "train_examples": result.train_examples,
        "model_dir": model_dir,
        "logs": os.path.join(args.output_dir, LOGS_DIR),
        "params": dataclasses.asdict(params),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; the result line goes to stdout, everything else to stderr."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    try:
        # Keras prints its progress to stdout: the result line is to be the only thing there.
        with contextlib.redirect_stdout(sys.stderr):
            result = run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"taxifare_modules.task: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
