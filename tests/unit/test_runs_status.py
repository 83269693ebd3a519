"""What `taxifare runs` says of runs that did not end as a normal run does."""

from __future__ import annotations

from ml_metadata.proto import metadata_store_pb2

from pipeline import names
from pipeline.mlmd_run import ABANDONED_PROPERTY, NodeExecution
from pipeline.runs import (
    ABANDONED,
    COMPLETED,
    RUNNING,
    SCHEMA_INFERRED,
    build_record,
    format_table,
)


def _node(node_id: str, state: str, outputs=None, abandoned: bool = False) -> NodeExecution:
    execution = metadata_store_pb2.Execution()
    execution.last_known_state = metadata_store_pb2.Execution.State.Value(state)
    if abandoned:
        execution.custom_properties[ABANDONED_PROPERTY].string_value = "marked by run x"
    return NodeExecution(node_id, state, 1.0, outputs or {}, execution)


def _nodes(*nodes: NodeExecution) -> dict[str, NodeExecution]:
    return {n.node_id: n for n in nodes}


def test_a_run_killed_in_the_trainer_is_abandoned_there_and_shows_no_steps():
    record = build_record(
        "r",
        0.0,
        _nodes(
            _node(names.EXAMPLE_GEN_ID, "COMPLETE"),
            _node(names.TRANSFORM_ID, "COMPLETE"),
            _node(names.TRAINER_ID, "CANCELED", abandoned=True),
        ),
        with_metrics=False,
    )
    assert record.status == f"{ABANDONED} (killed in {names.TRAINER_ID})"
    record.hyperparameters = {"train_steps": 300}
    line = format_table([record]).splitlines()[1]
    assert "300" not in line


def test_a_run_still_marked_running_says_it_may_have_been_killed():
    record = build_record(
        "r", 0.0, _nodes(_node(names.TRAINER_ID, "RUNNING")), with_metrics=False
    )
    assert record.status == RUNNING


def test_infer_schema_is_not_listed_as_a_completed_pipeline_run():
    record = build_record(
        "r",
        0.0,
        _nodes(
            _node(names.EXAMPLE_GEN_ID, "COMPLETE"),
            _node(names.STATISTICS_GEN_ID, "COMPLETE"),
            _node(names.SCHEMA_GEN_ID, "COMPLETE"),
        ),
        with_metrics=False,
    )
    assert record.status == SCHEMA_INFERRED != COMPLETED


def test_a_pushed_version_deleted_by_hand_is_marked_missing(tmp_path):
    pushed = metadata_store_pb2.Artifact()
    version = tmp_path / "serving" / "taxifare" / "1796209720"
    version.mkdir(parents=True)
    pushed.custom_properties[names.PUSHED_PROPERTY].int_value = 1
    pushed.custom_properties[names.PUSHED_DESTINATION_PROPERTY].string_value = str(version)
    pushed.custom_properties[names.PUSHED_VERSION_PROPERTY].string_value = "1796209720"
    nodes = _nodes(_node(names.PUSHER_ID, "COMPLETE", {"pushed_model": [pushed]}))
    assert "(missing)" not in format_table([build_record("r", 0.0, nodes, with_metrics=False)])
    version.rmdir()
    record = build_record("r", 0.0, nodes, with_metrics=False)
    assert record.pushed_missing
    assert "1796209720 (missing)" in format_table([record])


def test_a_run_fare_filter_stopped_is_not_a_failure_of_the_pipeline():
    from pipeline.runs import STOPPED_BY_DATA

    record = build_record(
        "r",
        0.0,
        _nodes(_node(names.EXAMPLE_GEN_ID, "COMPLETE"), _node(names.FARE_FILTER_ID, "FAILED")),
        with_metrics=False,
    )
    assert record.status == STOPPED_BY_DATA
