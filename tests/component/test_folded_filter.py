"""The fare filter folded into the streaming ExampleGen (data.fold_fare_filter), on the real
sample: the examples FareFilter hands on, their splits and the counts are those of the
unfolded path, the too-few check still stops the run, and FareFilter reads no record."""

from __future__ import annotations

import collections
import csv
import os
import shutil
import uuid

import numpy as np
import pytest
import tensorflow as tf
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from pipeline.components import csv_example_gen, fare_filter
from pipeline.names import (
    FARE_FILTER_FOLDED_PROPERTY,
    FARE_RANGE_MAX_PROPERTY,
    FARE_RANGE_MIN_PROPERTY,
    ROWS_EXCLUDED_PROPERTY,
    ROWS_READ_PROPERTY,
    TRAIN_SPLIT,
)
from taxifare_modules import features as f
from tests.component import test_csv_example_gen as csv_example_gen_test

pytestmark = pytest.mark.timeout(900)

# The splits the streaming ExampleGen's tests configure.
SPLIT_NAMES = [name for name, _ in csv_example_gen_test.SPLITS]


def _exec_properties(input_base: str, fare_range: tuple[float, float] | None) -> dict:
    """The streaming ExampleGen's properties as its own tests set them, with the fare range."""
    properties = csv_example_gen_test._exec_properties(input_base)
    if fare_range is not None:
        properties[standard_component_specs.CUSTOM_CONFIG_KEY] = proto_utils.proto_to_json(
            csv_example_gen.custom_config(*fare_range)
        )
    return properties


def _example_gen(input_base: str, out: str, fare_range) -> standard_artifacts.Examples:
    examples = standard_artifacts.Examples()
    examples.uri = out
    context = BaseBeamExecutor.Context(beam_pipeline_args=["--direct_running_mode=in_memory"])
    csv_example_gen.Executor(context).Do(
        {},
        {standard_component_specs.EXAMPLES_KEY: [examples]},
        _exec_properties(input_base, fare_range),
    )
    return examples


def _fare_filter(examples, out: str, fare_range, **minimums) -> standard_artifacts.Examples:
    output = standard_artifacts.Examples()
    output.uri = out
    fare_filter.FareFilter.EXECUTOR_SPEC.executor_class().Do(
        {"examples": [examples]},
        {"filtered_examples": [output]},
        {"min_fare": fare_range[0], "max_fare": fare_range[1], **minimums},
    )
    return output


def _records(examples) -> dict[str, collections.Counter]:
    """Each split's serialized tf.Examples, as a multiset of bytes."""
    contents = {}
    for split in artifact_utils.decode_split_names(examples.split_names):
        files = tf.io.gfile.glob(os.path.join(examples.uri, f"Split-{split}", "*"))
        assert files, split
        records = tf.data.TFRecordDataset(files, compression_type="GZIP")
        contents[split] = collections.Counter(r.numpy() for r in records)
    return contents


def _counts(examples) -> dict[str, int]:
    names = [ROWS_READ_PROPERTY, ROWS_EXCLUDED_PROPERTY] + [
        f"{split}_{name}"
        for split in SPLIT_NAMES
        for name in (ROWS_READ_PROPERTY, ROWS_EXCLUDED_PROPERTY)
    ]
    return {name: int(examples.get_int_custom_property(name)) for name in names}


def _fare(serialized: bytes) -> float | None:
    values = tf.train.Example.FromString(serialized).features.feature[f.LABEL_KEY].float_list.value
    return float(values[0]) if values else None


def _boundary_range(sample_csv: str) -> tuple[float, float]:
    """A range whose ends are fares of the sample that a float32 holds a little above their
    decimal text (so a filter comparing the text's float64 would keep a row FareFilter
    drops), and that cuts rows at both ends."""
    with open(sample_csv, newline="") as fh:
        fares = sorted({float(r[f.LABEL_KEY]) for r in csv.DictReader(fh) if r[f.LABEL_KEY]})
    rounded_up = [v for v in fares if float(np.float32(v)) > v]
    low = next(v for v in rounded_up if v >= 4.0)
    high = next(v for v in rounded_up if v >= 20.0)
    return low, high


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, sample_csv) -> str:
    data = tmp_path_factory.mktemp("sample") / "data"
    data.mkdir()
    shutil.copy(sample_csv, data / "data.csv")
    return str(data)


@pytest.fixture(scope="module")
def unfolded_examples(tmp_path_factory, data_dir):
    """ExampleGen as without data.fold_fare_filter: every row written."""
    return _example_gen(data_dir, str(tmp_path_factory.mktemp("unfolded") / "examples"), None)


@pytest.fixture(scope="module", params=["tfx_range", "boundary_range"])
def both_paths(request, tmp_path_factory, data_dir, unfolded_examples, sample_csv):
    fare_range = (0.0, 250.0) if request.param == "tfx_range" else _boundary_range(sample_csv)
    work = tmp_path_factory.mktemp("paths")
    unfolded = _fare_filter(unfolded_examples, str(work / "filtered"), fare_range)
    folded_examples = _example_gen(data_dir, str(work / "folded_examples"), fare_range)
    # FareFilter's output on a filesystem plain file calls cannot reach (as gs://).
    folded = _fare_filter(folded_examples, f"ram://{uuid.uuid4().hex}/filtered", fare_range)
    return fare_range, unfolded, folded_examples, folded


def test_the_folded_path_hands_on_the_same_examples_in_the_same_splits(both_paths):
    fare_range, unfolded, _, folded = both_paths
    assert folded.split_names == unfolded.split_names
    theirs, ours = _records(unfolded), _records(folded)
    assert list(ours) == SPLIT_NAMES
    for split in SPLIT_NAMES:
        assert ours[split] == theirs[split], split
    # The range excluded rows, and none of them is handed on.
    assert unfolded.get_int_custom_property(ROWS_EXCLUDED_PROPERTY) > 0
    for records in ours.values():
        fares = [_fare(r) for r in records]
        assert all(v is None or fare_range[0] < v <= fare_range[1] for v in fares)


def test_the_counts_are_fare_filter_s(both_paths, sample_rows):
    fare_range, unfolded, folded_examples, folded = both_paths
    counts = _counts(unfolded)
    assert counts[ROWS_READ_PROPERTY] == len(sample_rows)
    assert _counts(folded) == counts
    assert _counts(folded_examples) == counts
    assert folded_examples.get_float_custom_property(FARE_RANGE_MIN_PROPERTY) == fare_range[0]
    assert folded_examples.get_float_custom_property(FARE_RANGE_MAX_PROPERTY) == fare_range[1]
    assert folded.get_int_custom_property(FARE_FILTER_FOLDED_PROPERTY) == 1
    assert unfolded.get_int_custom_property(FARE_FILTER_FOLDED_PROPERTY) == 0
    assert folded.span == unfolded.span


def test_example_gen_itself_left_the_excluded_rows_out(both_paths, unfolded_examples):
    _, unfolded, folded_examples, _ = both_paths
    written = {split: sum(c.values()) for split, c in _records(folded_examples).items()}
    everything = {split: sum(c.values()) for split, c in _records(unfolded_examples).items()}
    for split in SPLIT_NAMES:
        excluded = unfolded.get_int_custom_property(f"{split}_{ROWS_EXCLUDED_PROPERTY}")
        assert written[split] == everything[split] - excluded
    assert sum(written.values()) < sum(everything.values())


def test_the_folded_fare_filter_reads_no_record(both_paths, tmp_path, monkeypatch):
    fare_range, unfolded, folded_examples, _ = both_paths

    def no_parse(*args, **kwargs):
        raise AssertionError("FareFilter parsed records of examples ExampleGen had filtered")

    monkeypatch.setattr(fare_filter, "plausible_mask", no_parse)
    monkeypatch.setattr(fare_filter, "is_plausible", no_parse)
    again = _fare_filter(folded_examples, str(tmp_path / "again"), fare_range)
    assert _records(again) == _records(unfolded)
    # Unfolded examples do need the parse: the stand-in is the one FareFilter calls.
    with pytest.raises(AssertionError, match="FareFilter parsed"):
        _fare_filter(folded_examples, str(tmp_path / "other"), (fare_range[0], fare_range[1] - 1))


def test_another_range_than_example_gen_s_is_filtered_by_fare_filter(
    both_paths, unfolded_examples, tmp_path
):
    fare_range, _, folded_examples, _ = both_paths
    narrower = (fare_range[0], fare_range[1] / 2)
    theirs = _fare_filter(unfolded_examples, str(tmp_path / "theirs"), narrower)
    ours = _fare_filter(folded_examples, str(tmp_path / "ours"), narrower)
    assert _records(ours) == _records(theirs)
    assert ours.get_int_custom_property(FARE_FILTER_FOLDED_PROPERTY) == 0
    # FareFilter read what ExampleGen kept.
    generated = _counts(folded_examples)
    kept = generated[ROWS_READ_PROPERTY] - generated[ROWS_EXCLUDED_PROPERTY]
    assert ours.get_int_custom_property(ROWS_READ_PROPERTY) == kept


def test_too_few_trips_still_stop_the_run_with_the_same_message(
    both_paths, unfolded_examples, tmp_path
):
    fare_range, unfolded, folded_examples, _ = both_paths
    kept_train = unfolded.get_int_custom_property(
        f"{TRAIN_SPLIT}_{ROWS_READ_PROPERTY}"
    ) - unfolded.get_int_custom_property(f"{TRAIN_SPLIT}_{ROWS_EXCLUDED_PROPERTY}")
    minimums = {"min_train_trips": kept_train + 1, "min_test_trips": 0}
    messages = []
    for examples, name in ((unfolded_examples, "unfolded"), (folded_examples, "folded")):
        with pytest.raises(fare_filter.TooFewTripsError) as raised:
            _fare_filter(examples, str(tmp_path / name), fare_range, **minimums)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]
    assert f"train has {kept_train:,} (data.min_train_trips: {kept_train + 1:,})" in messages[1]


@pytest.mark.parametrize(
    ("overrides", "folded"),
    [
        (["data.example_gen=streaming"], True),
        (["data.example_gen=streaming", "data.fold_fare_filter=false"], False),
        # TFX's CsvExampleGen cannot apply the range: FareFilter does.
        (["data.example_gen=tfx"], False),
    ],
)
def test_the_dag_folds_the_filter_as_configured(overrides, folded, tmp_path):
    from pipeline import dag
    from pipeline.config import load_config
    from pipeline.data_source import tfx_sample_dir
    from pipeline.names import EXAMPLE_GEN_ID

    cfg = load_config("configs/local.yaml", [f"root={tmp_path}", "data.max_fare=120", *overrides])
    by_id = {c.id: c for c in dag.create_pipeline(cfg, tfx_sample_dir()).components}
    text = by_id[EXAMPLE_GEN_ID].exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    properties = {standard_component_specs.CUSTOM_CONFIG_KEY: text} if text else {}
    expected = (cfg.data.min_fare, cfg.data.max_fare) if folded else None
    assert csv_example_gen.read_fare_range(properties) == expected


def test_the_summary_and_runs_say_where_the_filter_ran():
    from pipeline import runs
    from pipeline.config import load_config
    from pipeline.summary import RunSummary, render

    cfg = load_config("configs/smoke.yaml")
    for folded, where in ((True, "in ExampleGen (folded"), (False, "in FareFilter")):
        summary = RunSummary(
            components={}, durations={}, rows_read=1000, rows_excluded=7, fare_filter_folded=folded
        )
        assert f"fare filter: {where}" in render(summary, cfg)
        record = runs.RunRecord(
            "r", 0.0, runs.COMPLETED, None, {}, {}, rows_read=1000, fare_filter_folded=folded
        )
        assert ("1,000 folded" in runs.format_table([record])) is folded
    # A run recorded before the option existed says nothing of it.
    summary.fare_filter_folded = None
    assert "fare filter" not in render(summary, cfg)


@pytest.mark.parametrize(
    ("kind", "fares", "fare_range", "kept_count"),
    [
        # 12.05 is a little above 12.05 as a float32: FareFilter drops it at max_fare 12.05.
        ("float", ["0", "12.05", "12.04", "", "300", "7"], (0.0, 12.05), 3),
        ("int", ["0", "12", "13", "", "300", "-4"], (0.0, 12.0), 2),
    ],
)
def test_example_gen_keeps_exactly_the_rows_fare_filter_keeps(
    kind, fares, fare_range, kept_count, sample_rows, tmp_path
):
    types = csv_example_gen.curated_column_types()
    if kind == "int":  # a fare column typed INT: FareFilter reads the int64 value
        types[f.LABEL_KEY] = csv_example_gen._INT
    path = tmp_path / "trips.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(sample_rows[0]))
        writer.writeheader()
        for row, fare in zip(sample_rows, fares, strict=False):
            writer.writerow({**row, f.LABEL_KEY: fare})
    split_of = csv_example_gen._SplitOf(_exec_properties(str(tmp_path), fare_range), "*")
    every = list(csv_example_gen._CsvFileToExamples(types).process(str(path)))
    folded = csv_example_gen._CsvFileToExamples(types, fare_range, split_of)
    kept = list(folded.process(str(path)))
    assert kept == [r for r in every if fare_filter.is_plausible(r, *fare_range)]
    assert len(every) == len(fares) and len(kept) == kept_count
