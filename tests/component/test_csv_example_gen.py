"""Our CsvExampleGen executor against TFX's own, on the real sample: the same examples."""

from __future__ import annotations

import collections
import os
import shutil

import pytest
import tensorflow as tf
from tfx.components.example_gen.csv_example_gen import executor as tfx_csv_executor
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from pipeline.components import csv_example_gen
from pipeline.dag import EVAL_SPLIT, TEST_SPLIT, TRAIN_SPLIT

SPLITS = ((TRAIN_SPLIT, 6), (EVAL_SPLIT, 2), (TEST_SPLIT, 2))


def _exec_properties(input_base: str) -> dict:
    output_config = example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[
                example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=buckets)
                for name, buckets in SPLITS
            ]
        )
    )
    input_config = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name="single_split", pattern="*")]
    )
    return {
        standard_component_specs.INPUT_BASE_KEY: input_base,
        standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(input_config),
        standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(output_config),
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
        standard_component_specs.OUTPUT_FILE_FORMAT_KEY: example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    }


def _run(executor_class, input_base: str, out: str) -> standard_artifacts.Examples:
    examples = standard_artifacts.Examples()
    examples.uri = out
    context = BaseBeamExecutor.Context(beam_pipeline_args=["--direct_running_mode=in_memory"])
    executor_class(context).Do(
        {}, {standard_component_specs.EXAMPLES_KEY: [examples]}, _exec_properties(input_base)
    )
    return examples


def _feature_dict(serialized: bytes) -> tuple:
    """A tf.Example as a hashable value: (name, kind, values) per feature, sorted."""
    example = tf.train.Example.FromString(serialized)
    items = []
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = tuple(getattr(feature, kind).value) if kind else ()
        items.append((name, kind, values))
    return tuple(sorted(items))


def _split_contents(examples: standard_artifacts.Examples) -> dict[str, collections.Counter]:
    contents = {}
    for split in artifact_utils.decode_split_names(examples.split_names):
        files = tf.io.gfile.glob(os.path.join(examples.uri, f"Split-{split}", "*"))
        assert files and all(os.path.basename(p).startswith("data_tfrecord-") for p in files)
        assert all(p.endswith(".gz") for p in files)
        records = tf.data.TFRecordDataset(files, compression_type="GZIP")
        contents[split] = collections.Counter(_feature_dict(r.numpy()) for r in records)
    return contents


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory, sample_csv):
    work = tmp_path_factory.mktemp("example_gen")
    data = work / "data"
    data.mkdir()
    shutil.copy(sample_csv, data / "data.csv")
    theirs = _run(tfx_csv_executor.Executor, str(data), str(work / "tfx"))
    ours = _run(csv_example_gen.Executor, str(data), str(work / "ours"))
    return theirs, ours


def test_the_same_examples_in_the_same_splits_as_tfx_csv_example_gen(both_runs, sample_rows):
    theirs, ours = both_runs
    assert theirs.split_names == ours.split_names
    assert artifact_utils.decode_split_names(ours.split_names) == [s for s, _ in SPLITS]
    their_splits, our_splits = _split_contents(theirs), _split_contents(ours)
    counts = {split: sum(c.values()) for split, c in our_splits.items()}
    assert counts == {split: sum(c.values()) for split, c in their_splits.items()}
    assert sum(counts.values()) == len(sample_rows)
    for split in their_splits:
        assert our_splits[split] == their_splits[split], split
    # Empty cells are features of the column's type with no value (TFX's own handling).
    some_example = next(iter(our_splits[TRAIN_SPLIT]))
    kinds = {name: kind for name, kind, _ in some_example}
    assert kinds["fare"] == "float_list" and kinds["trip_start_hour"] == "int64_list"
    assert any(
        ("company", "bytes_list", ()) in example
        for split in our_splits.values()
        for example in split
    )


def test_the_artifact_properties_the_pipeline_reads_are_tfx_s(both_runs):
    theirs, ours = both_runs
    assert ours.mlmd_artifact.properties == theirs.mlmd_artifact.properties
    assert ours.mlmd_artifact.custom_properties == theirs.mlmd_artifact.custom_properties
    assert ours.get_string_custom_property("payload_format") == "FORMAT_TF_EXAMPLE"
    assert ours.get_string_custom_property("file_format") == "tfrecords_gzip"


def test_a_large_split_is_written_in_several_files(tmp_path, sample_csv, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sample_csv, data / "data.csv")
    monkeypatch.setattr(csv_example_gen, "SHARD_RECORDS", 1000)
    ours = _run(csv_example_gen.Executor, str(data), str(tmp_path / "out"))
    train = tf.io.gfile.glob(os.path.join(ours.uri, f"Split-{TRAIN_SPLIT}", "*"))
    assert len(train) >= 9  # 60% of 15,002 rows, 1,000 a file
    assert (
        sorted(os.path.basename(p) for p in train)[0]
        == f"data_tfrecord-00000-of-{len(train):05d}.gz"
    )


def test_a_header_that_does_not_match_the_schema_names_the_file_and_column(tmp_path, sample_csv):
    data = tmp_path / "data"
    data.mkdir()
    with open(sample_csv, encoding="utf-8") as fh:
        header, rest = fh.readline(), fh.read()
    bad = data / "trips.csv"
    bad.write_text(header.replace("trip_start_hour", "start_hour") + rest, encoding="utf-8")
    with pytest.raises(csv_example_gen.CsvHeaderError, match=r"trips\.csv: column 'start_hour'"):
        _run(csv_example_gen.Executor, str(data), str(tmp_path / "out"))
    bad.write_text(header.replace(",tips", "").replace("tips,", "") + rest, encoding="utf-8")
    with pytest.raises(
        csv_example_gen.CsvHeaderError, match=r"trips\.csv: the header has no column 'tips'"
    ):
        _run(csv_example_gen.Executor, str(data), str(tmp_path / "out2"))
