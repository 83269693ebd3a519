"""The fare model: wide (linear over ids and crosses) plus deep (embeddings and dense inputs)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from taxifare_modules import features as f
from taxifare_modules.compat import skip_autograph_of_libraries
from taxifare_modules.hparams import ModelParams

# Before anything is traced: Keras and TFT internals run unconverted (see compat.py).
skip_autograph_of_libraries()


class CoordinateGrid(tf.keras.layers.Layer):
    """Pickup cell, dropoff cell and their hashed cross, from fine coordinate buckets.

    Transform cuts each coordinate into COORDINATE_QUANTILES quantile buckets; this layer
    merges each run of COORDINATE_QUANTILES / buckets neighbouring ones into one coarse
    bucket (equal-frequency again, since the fine ones are), keeps "missing" as its own
    last bucket, and numbers the cells of the pickup and dropoff grids. Doing it in the
    model makes the grid's resolution an ordinary model hyperparameter: a tuning trial
    with another bucket count trains on that bucketization of the same Transform output,
    and the exported model carries its own grid, so serving needs nothing else.
    """

    def __init__(self, buckets: int, cross_buckets: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.buckets = buckets
        self.cross_buckets = cross_buckets
        self.cell_count = (buckets + 1) ** 2

    def call(self, fine: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        coarse = []
        for ids in fine:
            ids = tf.cast(ids, tf.int64)
            merged = ids * self.buckets // f.COORDINATE_QUANTILES
            # The fine "missing" id (COORDINATE_QUANTILES) maps to `buckets`, the last one.
            coarse.append(tf.clip_by_value(merged, 0, self.buckets))
        width = self.buckets + 1
        pickup = coarse[0] * width + coarse[1]
        dropoff = coarse[2] * width + coarse[3]
        cross = tf.strings.to_hash_bucket_fast(
            tf.strings.join([tf.strings.as_string(pickup), tf.strings.as_string(dropoff)], "x"),
            self.cross_buckets,
        )
        return pickup, dropoff, cross

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "buckets": self.buckets,
            "cross_buckets": self.cross_buckets,
        }


def build_model(params: ModelParams) -> tf.keras.Model:
    """Builds and compiles the wide-and-deep regression model on transformed features.

    Args:
      params: the model's hyperparameters.

    Returns:
      A compiled Keras model taking the transformed features (each of shape [batch]) and
      returning the predicted fare, shape [batch, 1].
    """
    inputs: dict[str, tf.keras.Input] = {}
    dense_parts = []
    for key in f.DENSE_FLOAT_XF:
        inputs[key] = tf.keras.Input(shape=(), name=key, dtype=tf.float32)
        dense_parts.append(tf.keras.layers.Reshape((1,), name=f"{key}_col")(inputs[key]))

    ids: dict[str, tf.Tensor] = {}
    sizes = dict(f.CATEGORICAL_XF_SIZES)
    for key in f.INT_XF:
        inputs[key] = tf.keras.Input(shape=(), name=key, dtype=tf.int64)
    for key in f.CATEGORICAL_XF_SIZES:
        ids[key] = inputs[key]
    grid = CoordinateGrid(params.coordinate_buckets, params.cross_hash_buckets, name="grid")
    cells = grid([inputs[key] for key in f.COORDINATE_BUCKET_XF])
    for key, cell in zip(
        (f.PICKUP_CELL_XF, f.DROPOFF_CELL_XF, f.CELL_CROSS_XF), cells, strict=True
    ):
        ids[key] = cell
    sizes[f.PICKUP_CELL_XF] = sizes[f.DROPOFF_CELL_XF] = grid.cell_count
    sizes[f.CELL_CROSS_XF] = params.cross_hash_buckets

    wide_parts = []
    deep_parts = list(dense_parts)
    for key, size in sizes.items():
        column = tf.keras.layers.Reshape((1,), name=f"{key}_col")(ids[key])
        # Wide: one weight per id (a linear model over one-hot ids).
        wide = tf.keras.layers.Embedding(size, 1, name=f"{key}_wide")(column)
        wide_parts.append(tf.keras.layers.Flatten(name=f"{key}_wide_flat")(wide))
        # Deep: a learned embedding per id.
        dim = min(params.embedding_dim, size)
        deep = tf.keras.layers.Embedding(size, dim, name=f"{key}_embedding")(column)
        deep_parts.append(tf.keras.layers.Flatten(name=f"{key}_embedding_flat")(deep))

    x = tf.keras.layers.Concatenate(name="deep_inputs")(deep_parts)
    for i, units in enumerate(params.hidden_units):
        x = tf.keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
        if params.dropout > 0:
            x = tf.keras.layers.Dropout(params.dropout, name=f"dropout_{i}")(x)
    deep_out = tf.keras.layers.Dense(1, name="deep_out")(x)
    wide_out = tf.keras.layers.Add(name="wide_out")(wide_parts)
    fare = tf.keras.layers.Add(name="fare_raw")([deep_out, wide_out])
    fare = tf.keras.layers.Dense(
        1,
        name="fare",
        kernel_initializer="ones",
        bias_initializer=tf.keras.initializers.Constant(params.fare_prior),
    )(fare)

    model = tf.keras.Model(inputs=inputs, outputs=fare, name="taxifare")
    model.compile(
        optimizer=tf.keras.optimizers.Adam(params.learning_rate),
        loss=(
            tf.keras.losses.Huber(delta=params.huber_delta)
            if params.huber_delta
            else tf.keras.losses.MeanSquaredError()
        ),
        metrics=[
            tf.keras.metrics.RootMeanSquaredError(name="rmse"),
            tf.keras.metrics.MeanAbsoluteError(name="mae"),
        ],
    )
    return model
