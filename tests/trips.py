"""Turning real sample rows into what serving clients send (shared by tests)."""

from __future__ import annotations

import tensorflow as tf

from taxifare_modules import features as f


def row_to_example(row: dict[str, str]) -> bytes:
    """A CSV row (strings) as a serialized tf.Example; empty fields are left out."""
    feature = {}
    for key in f.RAW_FEATURE_KEYS:
        text = row.get(key, "")
        if text == "":
            continue
        if key in f.FLOAT_FEATURE_KEYS:
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(text)]))
        elif key in f.INT_FEATURE_KEYS:
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(float(text))]))
        else:
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def rows_to_named_tensors(rows: list[dict[str, str]]) -> dict[str, tf.Tensor]:
    """CSV rows as the named tensors of `serving_default`; empty fields get the sentinels."""
    columns: dict[str, tf.Tensor] = {}
    for key in f.FLOAT_FEATURE_KEYS:
        columns[key] = tf.constant(
            [float(r[key]) if r[key] else f.MISSING_FLOAT for r in rows], tf.float32
        )
    for key in f.INT_FEATURE_KEYS:
        columns[key] = tf.constant(
            [int(float(r[key])) if r[key] else f.MISSING_INT for r in rows], tf.int64
        )
    for key in f.STRING_FEATURE_KEYS:
        columns[key] = tf.constant([r[key] or f.MISSING_STRING for r in rows], tf.string)
    return columns
