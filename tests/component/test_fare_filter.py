"""FareFilter run by its own TFX executor on artifacts on TensorFlow's `ram://` filesystem
(a stand-in for `gs://` that plain file calls cannot reach): each input file becomes a file
of the same name holding its plausible trips in order, the counts land on the artifact, and
a corrupt input record stops the step naming the file."""

from __future__ import annotations

import gzip
import io
import uuid

import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from pipeline.components import fare_filter
from pipeline.serving.request_log import frame_record
from taxifare_modules import features as f

pytestmark = pytest.mark.timeout(600)


def _example(fare: float, hour: int) -> bytes:
    feature = {
        f.LABEL_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=[fare])),
        f.HOUR_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[hour])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write(path: str, records: list[bytes], corrupt_at: int | None = None) -> None:
    framed = [frame_record(r) for r in records]
    if corrupt_at is not None:
        framed[corrupt_at] = framed[corrupt_at][:-1] + b"\0"  # a wrong data checksum
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as out:
        out.write(b"".join(framed))
    with tf.io.gfile.GFile(path, "wb") as fh:
        fh.write(buffer.getvalue())


def _read(path: str) -> list[bytes]:
    return [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]


def _run(root: str, corrupt: bool = False):
    examples = standard_artifacts.Examples()
    examples.uri = f"{root}/examples"
    examples.split_names = '["train", "eval"]'
    examples.span = 3
    # 5,000 trips over two train files (more than one parse batch), 300 in eval; every
    # 7th fare is implausible (0 or over the maximum).
    trips = {
        "train": [_example(0.0 if i % 14 == 0 else 300.0 if i % 7 == 0 else 5.0 + i % 40, i % 24)
                  for i in range(5000)],
        "eval": [_example(300.0 if i % 7 == 0 else 9.5, i % 24) for i in range(300)],
    }  # fmt: skip
    files = {
        "train": ["data_tfrecord-00000-of-00002.gz", "data_tfrecord-00001-of-00002.gz"],
        "eval": ["data_tfrecord-00000-of-00001.gz"],
    }
    _write(f"{examples.uri}/Split-train/{files['train'][0]}", trips["train"][:4500])
    _write(f"{examples.uri}/Split-train/{files['train'][1]}", trips["train"][4500:])
    _write(
        f"{examples.uri}/Split-eval/{files['eval'][0]}",
        trips["eval"],
        corrupt_at=100 if corrupt else None,
    )
    output = standard_artifacts.Examples()
    output.uri = f"{root}/filtered"
    executor = fare_filter.FareFilter.EXECUTOR_SPEC.executor_class()
    executor.Do(
        {"examples": [examples]},
        {"filtered_examples": [output]},
        {"min_fare": 0.0, "max_fare": 250.0},
    )
    return output, trips, files


def test_each_file_keeps_its_plausible_trips_in_order_on_a_remote_filesystem():
    root = f"ram://fare-filter-{uuid.uuid4().hex[:8]}"
    output, trips, files = _run(root)
    for split in ("train", "eval"):
        names = sorted(
            p.rsplit("/", 1)[-1] for p in tf.io.gfile.glob(f"{output.uri}/Split-{split}/*")
        )
        assert names == files[split]
        kept = [r for name in names for r in _read(f"{output.uri}/Split-{split}/{name}")]
        assert kept == [r for r in trips[split] if fare_filter.is_plausible(r, 0.0, 250.0)]
    assert output.get_int_custom_property("train_rows_read") == 5000
    assert output.get_int_custom_property("train_rows_excluded") == 5000 - len(
        [r for r in trips["train"] if fare_filter.is_plausible(r, 0.0, 250.0)]
    )
    assert output.get_int_custom_property("eval_rows_excluded") == 43
    assert output.get_int_custom_property("rows_read") == 5300
    assert output.get_int_custom_property("span") == 3 or output.span == 3


def test_a_corrupt_record_stops_the_step_naming_the_file():
    root = f"ram://fare-filter-{uuid.uuid4().hex[:8]}"
    with pytest.raises(Exception, match=r"Split-eval/data_tfrecord-00000-of-00001.gz: corrupt"):
        _run(root, corrupt=True)
