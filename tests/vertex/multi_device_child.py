"""The multi-device training run of test_multi_device, in a process of its own.

Logical devices must be configured before TensorFlow initialises its devices, so this runs
in a fresh interpreter: it splits the CPU into two logical devices, fits a Transform graph on
real trips with tft_beam, writes the transformed examples as TFX's Transform does, and calls
the project's `run_fn` with TFX's FnArgs. The results go to a JSON file the test reads.

Usage: python -m tests.vertex.multi_device_child <workdir> <trips.csv> <rows>
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

BATCH_SIZE = 16
TRAIN_STEPS = 20


def _fit_transform(rows: list[dict[str, str]], workdir: Path) -> tuple[str, str]:
    """Fits the project's preprocessing_fn and writes transformed tf.Examples (gzip)."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam

    from taxifare_modules.preprocessing import preprocessing_fn
    from tests.model_factory import raw_feature_spec
    from tests.trips import csv_row_to_instance

    trips = [csv_row_to_instance(r) for r in rows]
    metadata = tft.DatasetMetadata.from_feature_spec(raw_feature_spec())
    transform_dir = workdir / "transform"
    examples_prefix = workdir / "transformed" / "part"
    with beam.Pipeline() as pipeline:
        with tft_beam.Context(temp_dir=str(workdir / "tmp"), force_tf_compat_v1=False):
            raw = pipeline | "Trips" >> beam.Create(trips)
            (transformed, transformed_metadata), transform_fn = (
                raw,
                metadata,
            ) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn, output_record_batches=False)
            _ = transform_fn | tft_beam.WriteTransformFn(str(transform_dir))
            # As TFX's Transform does: the raw metadata beside the graph (serving parses with it).
            _ = metadata | "RawMetadata" >> tft_beam.WriteMetadata(
                str(transform_dir / "metadata"), pipeline
            )
            coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema)
            _ = (
                transformed
                | "Encode" >> beam.Map(coder.encode)
                | "Write" >> beam.io.WriteToTFRecord(str(examples_prefix), file_name_suffix=".gz")
            )
    return str(transform_dir), f"{examples_prefix}*.gz"


def _serving_inputs(trips: list[dict[str, list]]) -> tuple[list[bytes], dict[str, Any]]:
    """The same trips as serialized tf.Examples and as named tensors (missing = sentinel)."""
    from tests.trips import instance_to_example, instances_to_named_tensors

    return [instance_to_example(t) for t in trips], instances_to_named_tensors(trips)


def main(workdir: Path, csv_path: str, n_rows: int) -> dict[str, Any]:
    """Trains with run_fn on two logical CPUs and returns what the test checks."""
    from pipeline.env import configure_environment

    configure_environment()
    import tensorflow as tf

    # Before anything initialises the devices: one physical CPU seen as two devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import numpy as np
    from tfx import v1 as tfx
    from tfx.components.trainer.fn_args_utils import DataAccessor
    from tfx_bsl.public import tfxio

    from taxifare_modules import features as f
    from taxifare_modules import trainer
    from tests.trips import csv_row_to_instance

    strategy = trainer.choose_strategy()
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))[:n_rows]
    transform_dir, examples = _fit_transform(rows, workdir)

    batch_sizes: list[int] = []  # of the batches each dataset the model gets yields
    factory_batch_sizes: list[int] = []  # what the TFXIO factory was asked for

    input_fn = trainer._input_fn

    def recording_input_fn(*args, **kwargs):
        dataset = input_fn(*args, **kwargs)
        _, labels = next(iter(dataset))
        batch_sizes.append(int(labels.shape[0]))
        return dataset

    trainer._input_fn = recording_input_fn

    def tf_dataset_factory(file_pattern, options, schema):
        # TFX's own factory reads the Examples artifact the same way (tfxio over TFRecords).
        factory_batch_sizes.append(options.batch_size)
        return tfxio.TFExampleRecord(file_pattern=file_pattern, schema=schema).TensorFlowDataset(
            options
        )

    serving_dir = workdir / "serving_model"
    run_dir = workdir / "model_run"
    fn_args = tfx.components.FnArgs(
        train_files=[examples],
        eval_files=[examples],
        train_steps=TRAIN_STEPS,
        eval_steps=2,
        transform_output=transform_dir,
        transform_graph_path=transform_dir,
        serving_model_dir=str(serving_dir),
        model_run_dir=str(run_dir),
        data_accessor=DataAccessor(
            tf_dataset_factory=tf_dataset_factory,
            record_batch_factory=None,
            data_view_decode_fn=None,
        ),
        custom_config={
            trainer.BATCH_SIZE_KEY: BATCH_SIZE,
            trainer.EVAL_BATCH_SIZE_KEY: BATCH_SIZE,
            trainer.SEED_KEY: 7,
            # Streamed from the files, as a split too large for memory would be.
            trainer.IN_MEMORY_KEY: False,
            trainer.MODEL_PARAMS_KEY: {"hidden_units": [16], "embedding_dim": 4},
        },
    )
    trainer.run_fn(fn_args)

    loaded = tf.saved_model.load(str(serving_dir))
    trips = [csv_row_to_instance(r) for r in rows[:64]]
    serialized, named = _serving_inputs(trips)
    by_example = loaded.signatures[f.SERVING_TF_EXAMPLE_SIGNATURE](
        examples=tf.constant(serialized)
    )[f.PREDICTION_KEY].numpy()
    by_name = loaded.signatures[f.SERVING_DEFAULT_SIGNATURE](**named)[f.PREDICTION_KEY].numpy()
    inputs = loaded.signatures[f.SERVING_DEFAULT_SIGNATURE].structured_input_signature[1]
    return {
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "devices": list(strategy.extended.worker_devices),
        "batch_sizes": batch_sizes,
        "factory_batch_sizes": factory_batch_sizes,
        "signatures": sorted(loaded.signatures),
        "serving_default_inputs": sorted(inputs),
        "by_example": np.asarray(by_example, float).tolist(),
        "by_name": np.asarray(by_name, float).tolist(),
        "fares": [t[f.LABEL_KEY][0] if t[f.LABEL_KEY] else None for t in trips],
        "tensorboard_files": sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.v2")),
    }


if __name__ == "__main__":
    out_dir = Path(sys.argv[1])
    results = main(out_dir, sys.argv[2], int(sys.argv[3]))
    (out_dir / "results.json").write_text(json.dumps(results))
    sys.stdout.flush()
    sys.stderr.flush()
    # TensorFlow and Beam threads can crash the interpreter's shutdown after the work is
    # done and written; the exit status must say how the run went, not how teardown did.
    os._exit(0)
