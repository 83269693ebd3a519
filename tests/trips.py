"""Turning real sample rows into what serving clients send (shared by tests).

A trip is handled in two shapes: a CSV row (strings; empty = missing) and a TFT instance
(lists; empty = missing). Missing fields are left out of a tf.Example and take the
documented sentinels in the named tensors of `serving_default`.
"""

from __future__ import annotations

import tensorflow as tf

from taxifare_modules import features as f


def csv_row_to_instance(row: dict[str, str]) -> dict[str, list]:
    """A CSV row as a TFT instance dict (model inputs and label): lists, empty when missing."""
    out: dict[str, list] = {}
    for key in f.FLOAT_FEATURE_KEYS + (f.LABEL_KEY,):
        out[key] = [float(row[key])] if row.get(key, "") else []
    for key in f.INT_FEATURE_KEYS:
        out[key] = [int(float(row[key]))] if row.get(key, "") else []
    for key in f.STRING_FEATURE_KEYS:
        out[key] = [row[key].encode()] if row.get(key, "") else []
    return out


def instance_to_example(trip: dict[str, list]) -> bytes:
    """A TFT instance as a serialized tf.Example of the model inputs; missing fields left out."""
    feature = {}
    for key in f.RAW_FEATURE_KEYS:
        values = trip.get(key)
        if not values:
            continue
        if key in f.FLOAT_FEATURE_KEYS:
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        elif key in f.INT_FEATURE_KEYS:
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def instances_to_named_tensors(trips: list[dict[str, list]]) -> dict[str, tf.Tensor]:
    """TFT instances as the named tensors of `serving_default`; missing fields get sentinels."""
    missing = {
        **{k: (f.MISSING_FLOAT, tf.float32) for k in f.FLOAT_FEATURE_KEYS},
        **{k: (f.MISSING_INT, tf.int64) for k in f.INT_FEATURE_KEYS},
        **{k: (f.MISSING_STRING.encode(), tf.string) for k in f.STRING_FEATURE_KEYS},
    }
    return {
        key: tf.constant([t[key][0] if t.get(key) else default for t in trips], dtype)
        for key, (default, dtype) in missing.items()
    }


def row_to_example(row: dict[str, str]) -> bytes:
    """A CSV row as a serialized tf.Example; empty fields are left out."""
    return instance_to_example(csv_row_to_instance(row))


def rows_to_named_tensors(rows: list[dict[str, str]]) -> dict[str, tf.Tensor]:
    """CSV rows as the named tensors of `serving_default`; empty fields get the sentinels."""
    return instances_to_named_tensors([csv_row_to_instance(r) for r in rows])
