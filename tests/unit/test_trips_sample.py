"""The run's trips.json sample: a seeded random sample of a split, not its first rows."""

from __future__ import annotations

import tensorflow as tf

from pipeline.report.reads import sample_examples

ROWS = 1_000


def _split(root, files: int = 3) -> str:
    """A split of ROWS examples numbered by `i`, over several gzip TFRecord files."""
    folder = root / "examples" / "Split-test"
    folder.mkdir(parents=True)
    per_file = -(-ROWS // files)
    for n in range(files):
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        with tf.io.TFRecordWriter(str(folder / f"data-{n}.gz"), options) as writer:
            for i in range(n * per_file, min(ROWS, (n + 1) * per_file)):
                feature = {"i": tf.train.Feature(int64_list=tf.train.Int64List(value=[i]))}
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
    return str(root / "examples")


def test_a_seeded_sample_from_the_whole_split_in_its_order(tmp_path):
    uri = _split(tmp_path)
    picked = [row["i"] for row in sample_examples(uri, "test", 300, seed=0)]
    assert len(picked) == len(set(picked)) == 300
    assert picked == sorted(picked)
    # From every file of the split, not its first rows.
    assert min(picked) < ROWS // 10 and max(picked) > ROWS - ROWS // 10
    assert sum(i >= 2 * ROWS // 3 for i in picked) > 50
    # The same seed gives the same sample; another seed another one.
    assert [r["i"] for r in sample_examples(uri, "test", 300, seed=0)] == picked
    assert [r["i"] for r in sample_examples(uri, "test", 300, seed=1)] != picked


def test_a_split_smaller_than_the_sample_is_taken_whole(tmp_path):
    uri = _split(tmp_path, files=1)
    rows = sample_examples(uri, "test", 5_000, seed=0)
    assert [row["i"] for row in rows] == list(range(ROWS))
    assert tf.train.Example.FromString(rows[0]["_raw"]).features.feature["i"].int64_list.value == [
        0
    ]
