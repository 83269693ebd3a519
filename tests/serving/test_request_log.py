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
    log.wait_rotated()  # rotated files are finished in the background
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


# --- Faults of the disk and the directory ----------------------------------------------------

# Run in a child process whose file size limit makes writes past it fail (EFBIG) as a full
# disk would: the write that crosses the limit is taken only in part. Records of varied sizes,
# so some that come after the first failure still fit.
_FULL_DISK_WRITER = """
import json, resource, signal, sys
from pipeline.serving.request_log import RequestLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by signal
log_dir, limit = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
log = RequestLog(log_dir)
kept, failed = [], []
for i in range(200):
    record = (b"%04d" % i) * (1 + (i * 37) % 97)
    try:
        log.write([record])
    except OSError:
        failed.append(i)
    else:
        kept.append(i)
log.close()
print(json.dumps({"kept": kept, "failed": failed, "written": log.records_written}))
"""


def test_a_full_disk_never_leaves_half_a_record_in_the_log(tmp_path):
    import json
    import subprocess
    import sys

    import tensorflow as tf

    from tests.serving.helpers import repo_root, subprocess_env

    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_WRITER, str(tmp_path), "20000"],
        cwd=repo_root(),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    kept, failed = result["kept"], result["failed"]
    assert failed and len(kept) == result["written"]
    # Records that fit were still taken after the first refusal (which left nothing behind).
    assert kept[-1] > failed[0]
    (path,) = request_log_files(str(tmp_path))
    assert path.endswith(LOG_SUFFIX)
    read = [r.numpy() for r in tf.data.TFRecordDataset(path)]  # DataLossError if torn
    assert read == [(b"%04d" % i) * (1 + (i * 37) % 97) for i in kept]


def test_failed_writes_after_a_cut_back_keep_the_file_whole(tmp_path, monkeypatch):
    """A write the OS takes in part, then refuses: the record's bytes are cut off again."""
    log = RequestLog(str(tmp_path))
    log.write(_records(2))
    real_write = os.write
    calls = []

    def partial_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:7]))  # part of the frame, as on a full disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", partial_then_full)
    with pytest.raises(OSError):
        log.write(_records(1, start=2))
    monkeypatch.setattr(os, "write", real_write)
    log.write(_records(3, start=3))
    log.close()
    assert calls[0] > 7
    assert list(read_request_log(str(tmp_path))) == _parsed(_records(2) + _records(3, start=3))


def test_a_deleted_log_directory_is_noticed_counted_and_made_again(tmp_path, caplog):
    import shutil

    log_dir = tmp_path / "log"
    log = RequestLog(str(log_dir))
    log.write(_records(4))
    shutil.rmtree(log_dir)
    with caplog.at_level(logging.WARNING, logger="pipeline.serving.request_log"):
        log.write(_records(3, start=4))
        log.write(_records(2, start=7))
    log.close()
    assert log.records_lost == 4 and log.records_written == 9
    assert list(read_request_log(str(log_dir))) == _parsed(_records(5, start=4))
    assert [p.endswith(LOG_SUFFIX) for p in request_log_files(str(log_dir))] == [True]
    deleted = [r for r in caplog.records if "records are lost" in r.getMessage()]
    assert len(deleted) == 1 and "4 records are lost" in deleted[0].getMessage()


def test_a_log_file_deleted_before_close_is_counted_and_close_does_not_raise(tmp_path, caplog):
    log = RequestLog(str(tmp_path))
    log.write(_records(3))
    (path,) = request_log_files(str(tmp_path))
    os.remove(path)
    with caplog.at_level(logging.ERROR, logger="pipeline.serving.request_log"):
        log.close()
    assert log.records_lost == 3
    assert request_log_files(str(tmp_path)) == []
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()


def test_close_that_cannot_rename_leaves_the_file_for_recovery(tmp_path, monkeypatch, caplog):
    log = RequestLog(str(tmp_path))
    log.write(_records(2))

    def refuse(src, dst):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "rename", refuse)
    with caplog.at_level(logging.ERROR, logger="pipeline.serving.request_log"):
        log.close()  # a graceful stop goes on
    monkeypatch.undo()
    assert "Read-only file system" in caplog.text
    (path,) = request_log_files(str(tmp_path))
    assert path.endswith(IN_PROGRESS_SUFFIX)
    assert recover_request_logs(str(tmp_path)) == [path[: -len(IN_PROGRESS_SUFFIX)]]
    assert list(read_request_log(str(tmp_path))) == _parsed(_records(2))
