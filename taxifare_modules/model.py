"""The fare model: wide (linear over ids and crosses) plus deep (embeddings and dense inputs)."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from taxifare_modules import features as f
from taxifare_modules.tracing import skip_autograph_of_libraries

# Before anything is traced: Keras and TFT internals run unconverted (see tracing.py).
skip_autograph_of_libraries()


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

    wide_parts = []
    deep_parts = list(dense_parts)
    for key, size in f.CATEGORICAL_XF_SIZES.items():
        inputs[key] = tf.keras.Input(shape=(), name=key, dtype=tf.int64)
        ids = tf.keras.layers.Reshape((1,), name=f"{key}_col")(inputs[key])
        # Wide: one weight per id (a linear model over one-hot ids).
        wide = tf.keras.layers.Embedding(size, 1, name=f"{key}_wide")(ids)
        wide_parts.append(tf.keras.layers.Flatten(name=f"{key}_wide_flat")(wide))
        # Deep: a learned embedding per id.
        dim = min(params.embedding_dim, size)
        deep = tf.keras.layers.Embedding(size, dim, name=f"{key}_embedding")(ids)
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
