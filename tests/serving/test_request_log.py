"""The request log files: TFRecord framing, rotation, sampling, truncated tails, recovery."""

from __future__ import annotations

import logging
import os

import pytest

from pipeline.serving.request_log import (
    IN_PROGRESS_SUFFIX,
    LOG_SUFFIX,
    RequestLog,
    frame_record,
    iter_records,
    log_example,
    read_request_log,
    recover_request_logs,
    request_log_files,
)
from taxifare_modules import features as f

TRIP = {
    f.PICKUP_LATITUDE_KEY: 41.88,
    f.PICKUP_LONGITUDE_KEY: -87.63,
    f.HOUR_KEY: 7,
    f.DAY_KEY: 2,
    f.MONTH_KEY: 11,
    f.TIMESTAMP_KEY: 1_380_000_000,
    f.PAYMENT_TYPE_KEY: "Cash",
}


def _parsed(records) -> list:
    """Examples compared as protos: map order in serialized bytes is not deterministic."""
    from tensorflow.core.example import example_pb2

    return [r if hasattr(r, "features") else example_pb2.Example.FromString(r) for r in records]


def _records(n: int, start: int = 0) -> list[bytes]:
    return [
        log_example(TRIP, 10.0 + i, 3, f"req-{i}", 1_700_000_000_000, 0, "serving_default")
        for i in range(start, start + n)
    ]


def test_framing_is_read_by_tf_data(tmp_path):
    import tensorflow as tf

    path = tmp_path / "a.tfrecord"
    records = _records(5)
    path.write_bytes(b"".join(frame_record(r) for r in records))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records
    assert list(iter_records(str(path))) == records


def test_log_example_has_the_training_layout_and_the_served_fields():
    from tensorflow.core.example import example_pb2

    feature = example_pb2.Example.FromString(_records(1)[0]).features.feature
    assert {k for k in feature if k in f.RAW_FEATURE_KEYS} == set(TRIP)  # missing: absent
    assert feature[f.PICKUP_LATITUDE_KEY].float_list.value[0] == pytest.approx(41.88)
    assert feature[f.HOUR_KEY].int64_list.value[0] == 7
    assert feature[f.PAYMENT_TYPE_KEY].bytes_list.value[0] == b"Cash"
    assert feature[f.PREDICTION_KEY].float_list.value[0] == 10.0
    assert feature["model_version"].int64_list.value[0] == 3
    assert feature["request_id"].bytes_list.value[0] == b"req-0"
    assert feature["request_timestamp_ms"].int64_list.value[0] == 1_700_000_000_000


def test_log_examples_encode_what_the_tf_example_proto_would():
    from pipeline.serving.request_log import log_examples
    from pipeline.serving.versions import trip_to_example

    full = dict(
        TRIP,
        **{
            f.DROPOFF_LATITUDE_KEY: -0.0,
            f.DROPOFF_LONGITUDE_KEY: 0.0,
            f.PICKUP_AREA_KEY: 0,
            f.DROPOFF_AREA_KEY: 2**63 - 1,
            f.COMPANY_KEY: "Zürich Taxi ✓",
        },
    )
    trips = [TRIP, full, dict(TRIP, **{f.TIMESTAMP_KEY: 0, f.PICKUP_LATITUDE_KEY: 1e-30})]
    fares = [12.5, 3.4e38, 0.1]
    records = log_examples(trips, fares, 7, "req-x" * 30, 1_700_000_000_123, "serving_tf_example")
    for index, (trip, fare, record) in enumerate(zip(trips, fares, records, strict=True)):
        extra = {
            f.PREDICTION_KEY: fare,
            "model_version": 7,
            "request_id": "req-x" * 30,
            "request_timestamp_ms": 1_700_000_000_123,
            "instance_index": index,
            "signature_name": "serving_tf_example",
        }
        assert _parsed([record]) == [trip_to_example(trip, extra)]
    # -0.0 keeps its sign (it is not confused with 0.0 by any caching).
    feature = _parsed(records[1:2])[0].features.feature
    assert str(feature[f.DROPOFF_LATITUDE_KEY].float_list.value[0]) == "-0.0"


def test_rotation_by_size_keeps_every_record_and_close_completes_the_file(tmp_path):
    log = RequestLog(str(tmp_path), rotate_bytes=1_000)
    for i in range(40):
        log.write(_records(1, start=i))
    in_progress = request_log_files(str(tmp_path))
    assert sum(p.endswith(IN_PROGRESS_SUFFIX) for p in in_progress) == 1
    log.close()
    files = request_log_files(str(tmp_path))
    assert len(files) > 3 and all(p.endswith(LOG_SUFFIX) for p in files)
    assert all(os.path.getsize(p) <= 1_000 for p in files)
    assert list(read_request_log(str(tmp_path))) == _parsed(_records(40))


def test_rotation_by_age(tmp_path):
    log = RequestLog(str(tmp_path), rotate_seconds=0.05)
    log.write(_records(1))
    import time

    time.sleep(0.1)
    log.rotate_if_due()
    assert [p.endswith(LOG_SUFFIX) for p in request_log_files(str(tmp_path))] == [True]
    log.write(_records(1, start=1))
    log.close()
    assert len(request_log_files(str(tmp_path))) == 2


def test_sampling_rate(tmp_path):
    half = RequestLog(str(tmp_path), sample_rate=0.5)
    kept = sum(half.sample() for _ in range(4_000))
    assert 1_700 < kept < 2_300
    assert not any(RequestLog(str(tmp_path), sample_rate=0.0).sample() for _ in range(100))
    assert all(RequestLog(str(tmp_path), sample_rate=1.0).sample() for _ in range(100))


def test_truncated_last_record_is_skipped_with_a_warning_then_recovered(tmp_path, caplog):
    import tensorflow as tf

    # What a hard kill mid-write leaves: an unlocked in-progress file, its last record cut.
    framed = b"".join(frame_record(r) for r in _records(3))
    cut = frame_record(_records(1, start=3)[0])[:-7]
    path = tmp_path / f"requests-x-1-00001{LOG_SUFFIX}{IN_PROGRESS_SUFFIX}"
    path.write_bytes(framed + cut)

    with caplog.at_level(logging.WARNING, logger="pipeline.serving.request_log"):
        read = list(read_request_log(str(tmp_path)))
    assert read == _parsed(_records(3))
    assert any("truncated" in r.getMessage() for r in caplog.records)
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))

    # A live writer's file is left alone; the dead one is cut back and completed.
    live = RequestLog(str(tmp_path))
    live.write(_records(2, start=10))
    recovered = recover_request_logs(str(tmp_path))
    assert recovered == [str(path)[: -len(IN_PROGRESS_SUFFIX)]]
    assert sum(1 for _ in tf.data.TFRecordDataset(recovered[0])) == 3
    assert sum(p.endswith(IN_PROGRESS_SUFFIX) for p in request_log_files(str(tmp_path))) == 1
    live.close()
    assert len(list(read_request_log(str(tmp_path)))) == 5


def test_corrupt_record_stops_the_file_with_a_warning(tmp_path, caplog):
    data = bytearray(b"".join(frame_record(r) for r in _records(3)))
    data[-10] ^= 0xFF  # inside the last record's data
    path = tmp_path / f"bad{LOG_SUFFIX}"
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="pipeline.serving.request_log"):
        assert len(list(iter_records(str(path)))) == 2
    assert any("corrupt" in r.getMessage() for r in caplog.records)


def test_whole_records_length_stops_before_a_truncated_tail(tmp_path):
    from pipeline.serving.request_log import whole_records_length

    records = [frame_record(r) for r in _records(3)]
    whole = b"".join(records)
    path = tmp_path / "cut.tfrecord"
    path.write_bytes(whole + records[0][:-5])  # the writer died mid-record
    assert whole_records_length(str(path)) == len(whole)
    path.write_bytes(whole)
    assert whole_records_length(str(path)) == len(whole)
    path.write_bytes(b"")
    assert whole_records_length(str(path)) == 0
    path.write_bytes(records[0][:6])  # not even a whole header
    assert whole_records_length(str(path)) == 0
