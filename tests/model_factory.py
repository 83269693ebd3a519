"""Builds a small real model for tests: a transform graph fitted with tft_beam on real trips,
a few training steps, and the SavedModel exported with the project's own signatures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

from taxifare_modules import features as f
from taxifare_modules.model import ModelParams, build_model
from taxifare_modules.monitoring_reference import write_reference
from taxifare_modules.preprocessing import preprocessing_fn
from taxifare_modules.trainer import export_model
from tests.trips import csv_row_to_instance


@dataclasses.dataclass
class SmallModel:
    """A trained and exported model with what the tests compare it against."""

    export_dir: str
    trips: list[dict[str, list]]  # TFT instance dicts (lists; empty = missing)
    losses: list[float]
    direct_predictions: np.ndarray  # the model on the transformed training rows


def raw_feature_spec() -> dict:
    """The raw spec the test transform graph is fitted with (the model's inputs + label)."""
    return {
        **{k: tf.io.VarLenFeature(tf.float32) for k in f.FLOAT_FEATURE_KEYS},
        **{k: tf.io.VarLenFeature(tf.int64) for k in f.INT_FEATURE_KEYS},
        **{k: tf.io.VarLenFeature(tf.string) for k in f.STRING_FEATURE_KEYS},
        f.LABEL_KEY: tf.io.VarLenFeature(tf.float32),
    }


def export_small_model(rows: list[dict[str, str]], workdir: Path, epochs: int = 4) -> SmallModel:
    """Fits Transform on `rows`, trains a small model and exports it under `workdir/model`.

    The direct predictions are the model applied to the rows tft_beam transformed (the
    training path), in the order of `rows`.
    """
    import json

    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam

    trips = [csv_row_to_instance(r) for r in rows]
    # An index travels with each trip so the transformed rows can be put back in order.
    indexed = [dict(t, row_index=[i]) for i, t in enumerate(trips)]
    spec = dict(raw_feature_spec(), row_index=tf.io.FixedLenFeature([], tf.int64))
    metadata = tft.DatasetMetadata.from_feature_spec(spec)

    def fn(inputs):
        outputs = preprocessing_fn({k: v for k, v in inputs.items() if k != "row_index"})
        outputs["row_index"] = inputs["row_index"]
        return outputs

    rows_file = workdir / "transformed.jsonl"
    with beam.Pipeline() as pipeline:
        with tft_beam.Context(temp_dir=str(workdir / "tmp"), force_tf_compat_v1=False):
            raw = pipeline | "Trips" >> beam.Create(
                [dict(t, row_index=t["row_index"][0]) for t in indexed]
            )
            (transformed, _), transform_fn = (raw, metadata) | tft_beam.AnalyzeAndTransformDataset(
                fn, output_record_batches=False
            )
            _ = transform_fn | tft_beam.WriteTransformFn(str(workdir / "transform"))
            # As TFX's Transform does: the raw metadata beside the transform graph (serving
            # parses requests with it). The row index is the test's, not a raw feature.
            _ = tft.DatasetMetadata.from_feature_spec(raw_feature_spec()) | "RawMetadata" >> (
                tft_beam.WriteMetadata(str(workdir / "transform" / "metadata"), pipeline)
            )
            _ = (
                transformed
                | "ToJson"
                >> beam.Map(lambda r: json.dumps({k: np.asarray(v).tolist() for k, v in r.items()}))
                | "Write" >> beam.io.WriteToText(str(rows_file), shard_name_template="")
            )
    transformed = sorted(
        (json.loads(line) for line in rows_file.read_text().splitlines()),
        key=lambda r: r["row_index"],
    )
    tf_transform_output = tft.TFTransformOutput(str(workdir / "transform"))

    keys = [k for k in transformed[0] if k not in (f.LABEL_KEY, "row_index")]
    features = {k: np.array([r[k] for r in transformed]) for k in keys}
    for key in f.INT_XF:
        features[key] = features[key].astype(np.int64)
    for key in f.DENSE_FLOAT_XF:
        features[key] = features[key].astype(np.float32)
    labels = np.array([r[f.LABEL_KEY] for r in transformed], np.float32)
    tf.keras.utils.set_random_seed(1)
    model = build_model(ModelParams(hidden_units=(16,), embedding_dim=4, learning_rate=0.01))
    history = model.fit(features, labels, batch_size=64, epochs=epochs, verbose=0)
    export_dir = str(workdir / "model")
    export_model(model, tf_transform_output, export_dir)
    # As the Trainer does: what the model computes, recorded for the skew check.
    write_reference(
        model, tf.data.Dataset.from_tensor_slices((features, labels)).batch(1024), export_dir
    )
    direct = model.predict(features, verbose=0).reshape(-1)
    return SmallModel(export_dir, trips, list(history.history["loss"]), direct)
