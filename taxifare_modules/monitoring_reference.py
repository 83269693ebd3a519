"""What the model computes on its eval split, recorded with the model for the skew check.

The Trainer writes, next to the exported SavedModel (under `assets.extra/`, which TF
Serving and Vertex AI carry along and ignore), one tf.Example per eval example with the
features of `features.DERIVED_FEATURE_INPUTS`: the trip distance the Transform graph derives
and the fare the model predicts. The skew check compares the same two features of served
traffic (the distance from the served model's own Transform graph, the fare from the
request log) with this reference. This module owns the file's name and record format.
"""

from __future__ import annotations

from typing import Any

from taxifare_modules import features as f

REFERENCE_DIR = "assets.extra"
REFERENCE_FILE = "monitoring_reference.tfrecord"
# Enough for the comparison's quantiles; a larger eval split is sampled by its first rows.
MAX_REFERENCE_EXAMPLES = 50_000


def reference_file(model_dir: str) -> str:
    """The reference file of a SavedModel folder (local or any TensorFlow filesystem)."""
    return "/".join([model_dir.rstrip("/"), REFERENCE_DIR, REFERENCE_FILE])


def derived_example(distance: float, predicted_fare: float) -> bytes:
    """One record: a serialized tf.Example with the derived distance and the prediction."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature[f.DISTANCE_XF].float_list.value.append(distance)
    example.features.feature[f.PREDICTION_KEY].float_list.value.append(predicted_fare)
    return example.SerializeToString()


def write_reference(model: Any, eval_dataset: Any, export_dir: str) -> int:
    """Writes the reference of `model` beside its export; returns the examples written.

    Args:
      model: the trained Keras model (transformed features in, fare out).
      eval_dataset: one pass over the eval split: batches of (transformed features, label).
      export_dir: the SavedModel folder the model was exported to.
    """
    import tensorflow as tf

    path = reference_file(export_dir)
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    written = 0
    with tf.io.TFRecordWriter(path) as out:
        for features, _ in eval_dataset:
            fares = tf.reshape(model(features, training=False), [-1]).numpy()
            distances = tf.reshape(features[f.DISTANCE_XF], [-1]).numpy()
            for distance, fare in zip(distances, fares, strict=True):
                out.write(derived_example(float(distance), float(fare)))
                written += 1
            if written >= MAX_REFERENCE_EXAMPLES:
                break
    return written
