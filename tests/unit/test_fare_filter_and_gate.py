"""The label filter's rule and the gate's reading of ExampleValidator's anomalies."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2

from pipeline.anomalies import ANOMALIES_FILE, format_anomalies, read_anomalies
from pipeline.components.fare_filter import is_plausible, plausible_mask
from taxifare_modules import features as f


def _example(**fields) -> bytes:
    feature = {}
    for key, value in fields.items():
        if isinstance(value, float):
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        elif isinstance(value, int):
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        elif isinstance(value, bytes):
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        else:  # present with no value: an empty CSV cell
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.mark.parametrize(
    "fare, expected",
    [
        (7.25, True),
        (250.0, True),
        (0.0, False),
        (-3.0, False),
        (250.01, False),
        (700.07, False),
        (12, True),
        (0, False),
    ],
)
def test_plausible_fares(fare, expected):
    assert is_plausible(_example(**{f.LABEL_KEY: fare}), 0.0, 250.0) is expected


def test_unreadable_or_missing_fares_are_kept_for_the_gate():
    assert is_plausible(_example(**{f.LABEL_KEY: b"free"}), 0.0, 250.0)
    assert is_plausible(_example(**{f.LABEL_KEY: None}), 0.0, 250.0)
    assert is_plausible(_example(**{f.HOUR_KEY: 3}), 0.0, 250.0)


def _two_fares(first: float, second: float) -> bytes:
    feature = tf.train.Feature(float_list=tf.train.FloatList(value=[first, second]))
    example = tf.train.Example(features=tf.train.Features(feature={f.LABEL_KEY: feature}))
    return example.SerializeToString()


def test_the_batched_check_agrees_with_the_record_by_record_rule():
    floats = [
        _example(**{f.LABEL_KEY: fare}) for fare in (7.25, 250.0, 0.0, -3.0, 250.01, 700.07)
    ] + [
        _example(**{f.LABEL_KEY: None}),  # present, empty: kept
        _example(**{f.HOUR_KEY: 3}),  # no fare: kept
        _two_fares(300.0, 5.0),  # the first value decides
        _two_fares(5.0, 300.0),
    ]
    # A batch with an int64 or a string fare cannot be parsed as floats: checked one by one.
    mixed = floats + [_example(**{f.LABEL_KEY: 12}), _example(**{f.LABEL_KEY: b"free"})]
    for records in (floats, mixed):
        expected = [is_plausible(r, 0.0, 250.0) for r in records]
        assert plausible_mask(records, 0.0, 250.0).tolist() == expected
    assert expected == [True, True, False, False, False, False, True, True, False, True, True, True]


def _write_anomalies(root, split: str, proto: anomalies_pb2.Anomalies) -> None:
    folder = os.path.join(root, f"Split-{split}")
    os.makedirs(folder)
    with open(os.path.join(folder, ANOMALIES_FILE), "wb") as fh:
        fh.write(proto.SerializeToString())


def test_anomalies_are_read_per_split_feature_and_reason(tmp_path):
    proto = anomalies_pb2.Anomalies()
    info = proto.anomaly_info[f.PAYMENT_TYPE_KEY]
    info.severity = anomalies_pb2.AnomalyInfo.ERROR
    reason = info.reason.add()
    reason.type = anomalies_pb2.AnomalyInfo.ENUM_TYPE_UNEXPECTED_STRING_VALUES
    reason.description = "Examples contain values missing from the schema: Bitcoin (~5%)."
    _write_anomalies(tmp_path, "eval", proto)
    _write_anomalies(tmp_path, "train", anomalies_pb2.Anomalies())

    found = read_anomalies(str(tmp_path), ["train", "eval"])
    assert len(found) == 1
    (a,) = found
    assert (a.split, a.feature, a.kind) == (
        "eval",
        f.PAYMENT_TYPE_KEY,
        "ENUM_TYPE_UNEXPECTED_STRING_VALUES",
    )
    assert "Bitcoin" in a.description
    table = format_anomalies(found)
    assert f.PAYMENT_TYPE_KEY in table and "Bitcoin" in table and "eval" in table


def test_no_anomalies_reads_as_empty(tmp_path):
    _write_anomalies(tmp_path, "train", anomalies_pb2.Anomalies())
    assert read_anomalies(str(tmp_path), ["train", "eval"]) == []
    assert format_anomalies([]) == "no anomalies"
