"""A window of spans (data.train_spans): which spans each component of the DAG is given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tfx.types.channel import UnionChannel

from pipeline import dag
from pipeline.config import ConfigError, load_config
from pipeline.data_source import DataSourceError, window_spans

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PATTERN = "data.pattern=span-{SPAN}/*.csv"
SPANS = (201610, 201611, 201612)


def _spans(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        (folder / f"span-{name}").mkdir(parents=True)
        (folder / f"span-{name}" / "trips.csv").write_text("fare,company\n1.0,A\n")
    return folder


@pytest.fixture
def data(tmp_path) -> Path:
    return _spans(tmp_path / "data", tuple(str(s) for s in SPANS))


def _config(data: Path, *overrides: str):
    return load_config(
        CONFIGS / "local.yaml",
        ["root=/tmp/taxifare-unit", f"data.input={data}", PATTERN] + list(overrides),
    )


def _producers(channel) -> list[str]:
    """The ids of the components whose outputs make up a channel."""
    channels = channel.channels if isinstance(channel, UnionChannel) else [channel]
    return [c.producer_component_id for c in channels]


def _static_span(component) -> int | None:
    """The span of ExampleGen's static range (None: no range, the latest span)."""
    text = component.exec_properties.get("range_config")
    if not text:
        return None
    static = json.loads(text)["static_range"]
    assert static["start_span_number"] == static["end_span_number"]
    return int(static["start_span_number"])


def test_a_window_of_two_trains_on_the_two_latest_spans_and_tests_on_the_newest(data):
    by_id = {
        c.id: c
        for c in dag.create_pipeline(_config(data, "data.train_spans=2"), str(data)).components
    }
    earlier_gen = dag.span_node_id(dag.EXAMPLE_GEN_ID, 201611)
    earlier_filter = dag.span_node_id(dag.FARE_FILTER_ID, 201611)
    # One ExampleGen (and FareFilter) per span of the window; the oldest span is not read.
    assert {i for i in by_id if i.startswith((dag.EXAMPLE_GEN_ID, dag.FARE_FILTER_ID))} == {
        dag.EXAMPLE_GEN_ID,
        dag.FARE_FILTER_ID,
        earlier_gen,
        earlier_filter,
    }
    assert _static_span(by_id[dag.EXAMPLE_GEN_ID]) == 201612
    assert _static_span(by_id[earlier_gen]) == 201611
    assert _producers(by_id[earlier_filter].inputs["examples"]) == [earlier_gen]
    # Transform analyses and transforms both spans; the Trainer takes what Transform made.
    assert _producers(by_id[dag.TRANSFORM_ID].inputs["examples"]) == [
        earlier_filter,
        dag.FARE_FILTER_ID,
    ]
    assert _producers(by_id[dag.TRAINER_ID].inputs["examples"]) == [dag.TRANSFORM_ID]
    # Tested, validated and checked for drift on the newest span alone.
    assert _producers(by_id[dag.EVALUATOR_ID].inputs["examples"]) == [dag.FARE_FILTER_ID]
    assert json.loads(by_id[dag.EVALUATOR_ID].exec_properties["example_splits"]) == ["test"]
    assert _producers(by_id[dag.STATISTICS_GEN_ID].inputs["examples"]) == [dag.FARE_FILTER_ID]
    assert _producers(by_id[dag.DRIFT_CHECK_ID].inputs["examples"]) == [dag.EXAMPLE_GEN_ID]


def test_one_span_is_the_latest_span_as_before(data):
    cfg = _config(data)
    assert cfg.data.train_spans == 1
    by_id = {c.id: c for c in dag.create_pipeline(cfg, str(data)).components}
    assert _static_span(by_id[dag.EXAMPLE_GEN_ID]) is None  # TFX picks the latest span
    assert not [i for i in by_id if "_span" in i]
    assert _producers(by_id[dag.TRANSFORM_ID].inputs["examples"]) == [dag.FARE_FILTER_ID]


def test_a_window_wider_than_the_data_takes_every_span(data):
    cfg = _config(data, "data.train_spans=5")
    assert window_spans(cfg, str(data)) == list(SPANS)
    by_id = {c.id: c for c in dag.create_pipeline(cfg, str(data)).components}
    assert _producers(by_id[dag.TRANSFORM_ID].inputs["examples"]) == [
        dag.span_node_id(dag.FARE_FILTER_ID, 201610),
        dag.span_node_id(dag.FARE_FILTER_ID, 201611),
        dag.FARE_FILTER_ID,
    ]


def test_a_window_needs_spans_to_count(tmp_path):
    with pytest.raises(
        ConfigError, match=r"train_spans: 2 needs CSV spans, a pattern with \{SPAN\}"
    ):
        load_config(CONFIGS / "local.yaml", ["data.train_spans=2"])
    with pytest.raises(ConfigError, match="train_spans"):
        load_config(CONFIGS / "local.yaml", ["data.train_spans=0"])
    padded = _spans(tmp_path / "padded", ("07", "08"))
    with pytest.raises(DataSourceError, match=r"span '0[78]' of .* has leading zeros"):
        window_spans(_config(padded, "data.train_spans=2"), str(padded))
    # One span at a time reads padded spans as before (TFX finds the latest itself).
    assert window_spans(_config(padded), str(padded)) == [8]


def test_a_window_is_refused_on_vertex(data):
    cfg = load_config(CONFIGS / "vertex.yaml", [PATTERN, "data.train_spans=2"])
    with pytest.raises(ConfigError, match="data.train_spans: 2 is not supported on Vertex"):
        dag.create_pipeline(cfg, str(data))


def test_the_input_size_is_that_of_the_window(tmp_path):
    from pipeline.data_source import input_size_bytes

    data = _spans(tmp_path / "sized", tuple(str(s) for s in SPANS))
    for span, size in zip(SPANS, (5_000, 300, 70), strict=True):
        with open(data / f"span-{span}" / "trips.csv", "wb") as fh:
            fh.truncate(size)  # a sparse file: its size is what counts
    assert input_size_bytes(_config(data), str(data)) == 70
    assert input_size_bytes(_config(data, "data.train_spans=2"), str(data)) == 370
    assert input_size_bytes(_config(data, "data.train_spans=9"), str(data)) == 5_370
