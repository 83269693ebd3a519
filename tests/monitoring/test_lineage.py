"""Lineage: from a pushed model version to the statistics and schema it was trained on.

The store is a real MLMD SQLite store with the artifacts, executions and events recorded in
the shape TFX records them (the e2e test checks the same lookup on two real pipeline runs).
"""

from __future__ import annotations

import os
import shutil

import pytest

from pipeline.monitoring.lineage import open_pipeline_store, pushed_versions, training_inputs
from pipeline.monitoring.stats import InputError


class _Recorder:
    """Records executions with their input and output artifacts, as TFX's launcher does."""

    def __init__(self, root: str) -> None:
        from ml_metadata import metadata_store
        from ml_metadata.proto import metadata_store_pb2 as pb

        self.pb = pb
        config = pb.ConnectionConfig()
        config.sqlite.filename_uri = os.path.join(root, "metadata.sqlite")
        config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.store = metadata_store.MetadataStore(config)
        self.root = root
        self._types: dict[str, int] = {}

    def _type(self, name: str, execution: bool = False) -> int:
        if name not in self._types:
            if execution:
                put = self.store.put_execution_type(self.pb.ExecutionType(name=name))
            else:
                put = self.store.put_artifact_type(self.pb.ArtifactType(name=name))
            self._types[name] = put
        return self._types[name]

    def artifact(self, type_name: str, name: str, **custom: object):
        uri = os.path.join(self.root, name)
        os.makedirs(uri, exist_ok=True)
        artifact = self.pb.Artifact(type_id=self._type(type_name), uri=uri)
        for key, value in custom.items():
            if isinstance(value, int):
                artifact.custom_properties[key].int_value = value
            else:
                artifact.custom_properties[key].string_value = str(value)
        [artifact.id] = self.store.put_artifacts([artifact])
        return artifact

    def execution(self, type_name: str, inputs: dict, outputs: dict) -> None:
        execution = self.pb.Execution(
            type_id=self._type(type_name, execution=True),
            last_known_state=self.pb.Execution.COMPLETE,
        )
        pairs = []
        for kind, artifacts in ((self.pb.Event.INPUT, inputs), (self.pb.Event.OUTPUT, outputs)):
            for key, artifact in artifacts.items():
                event = self.pb.Event(type=kind)
                event.path.steps.add().key = key
                event.path.steps.add().index = 0
                pairs.append((artifact, event))
        self.store.put_execution(execution, pairs, [])


def _record_run(rec: _Recorder, run: int, version: int, stats_file: str, baseline=None):
    """One pipeline run, ExampleGen to Pusher; returns its model artifact."""
    raw = rec.artifact("Examples", f"CsvExampleGen/examples/{run}")
    rec.execution("CsvExampleGen", {}, {"examples": raw})
    filtered = rec.artifact("Examples", f"FareFilter/filtered_examples/{run}")
    rec.execution("FareFilter", {"examples": raw}, {"filtered_examples": filtered})
    stats = rec.artifact("ExampleStatistics", f"StatisticsGen/statistics/{run}")
    shutil.copytree(os.path.dirname(stats_file), os.path.join(stats.uri, "Split-train"))
    rec.execution("StatisticsGen", {"examples": filtered}, {"statistics": stats})
    schema = rec.artifact("Schema", f"SchemaGen/schema/{run}")
    with open(os.path.join(schema.uri, "schema.pbtxt"), "w") as fh:
        fh.write(f"# run {run}\n")
    rec.execution("ImportSchemaGen", {}, {"schema": schema})
    transformed = rec.artifact("Examples", f"Transform/transformed_examples/{run}")
    graph = rec.artifact("TransformGraph", f"Transform/transform_graph/{run}")
    rec.execution(
        "Transform",
        {"examples": filtered, "schema": schema},
        {"transformed_examples": transformed, "transform_graph": graph},
    )
    model = rec.artifact("Model", f"Trainer/model/{run}")
    rec.execution(
        "Trainer",
        {"examples": transformed, "transform_graph": graph, "schema": schema},
        {"model": model},
    )
    blessing = rec.artifact("ModelBlessing", f"Evaluator/blessing/{run}", blessed=1)
    inputs = {"examples": filtered, "model": model}
    if baseline is not None:
        inputs["baseline_model"] = baseline  # leads to the *previous* run's lineage
    rec.execution("Evaluator", inputs, {"blessing": blessing})
    pushed = rec.artifact(
        "PushedModel",
        f"Pusher/pushed_model/{run}",
        pushed=1,
        pushed_version=str(version),
        pushed_destination=f"/serving/taxifare/{version}",
    )
    rec.execution("Pusher", {"model": model, "model_blessing": blessing}, {"pushed_model": pushed})
    return model


@pytest.fixture()
def two_runs(training_stats_file, tmp_path):
    rec = _Recorder(str(tmp_path))
    first = _record_run(rec, 1, 1_700_000_001, training_stats_file)
    second = _record_run(rec, 2, 1_700_000_002, training_stats_file, baseline=first)
    # A run whose model was not blessed pushes nothing (pushed=0, no version folder).
    rec.artifact("PushedModel", "Pusher/pushed_model/3", pushed=0)
    return str(tmp_path), first, second


def test_each_version_leads_to_its_own_run(two_runs):
    root, first, second = two_runs
    store = open_pipeline_store(root)
    assert sorted(pushed_versions(store)) == [1_700_000_001, 1_700_000_002]
    for version, model, run in ((1_700_000_001, first, 1), (1_700_000_002, second, 2)):
        found = training_inputs(store, version, root)
        assert found.model_uri == model.uri
        assert found.statistics_file == os.path.join(
            root, f"StatisticsGen/statistics/{run}", "Split-train", "FeatureStats.pb"
        )
        assert found.schema_file == os.path.join(root, f"SchemaGen/schema/{run}", "schema.pbtxt")
        assert found.pushed_uri == f"/serving/taxifare/{version}"


def test_unknown_version_names_the_pushed_ones(two_runs):
    root, _, _ = two_runs
    with pytest.raises(InputError) as e:
        training_inputs(open_pipeline_store(root), 42, root)
    message = str(e.value)
    assert "model version 42" in message and "1700000001, 1700000002" in message


def test_root_without_metadata_is_a_usage_error(tmp_path):
    with pytest.raises(InputError, match="no pipeline metadata"):
        open_pipeline_store(str(tmp_path))


def test_versions_are_counted_in_the_statistics_pass(served_rows, tmp_path):
    from pipeline.monitoring import stats
    from pipeline.serving.client import csv_row_to_instance
    from pipeline.serving.request_log import RequestLog, log_example

    log = RequestLog(str(tmp_path / "log"))
    versions = [7, 9, 9]
    log.write(
        log_example(csv_row_to_instance(r), 10.0, versions[i % 3], "r", 0, i, "t")
        for i, r in enumerate(served_rows[:300])
    )
    log.close()
    work = tmp_path / "work"
    work.mkdir()
    counted = stats.serving_statistics(str(tmp_path / "log"), str(work), with_versions=True)
    assert stats.model_versions(counted) == {7: 100, 9: 200}
    only_9 = stats.version_statistics(str(tmp_path / "log"), str(work), 9)
    assert only_9.datasets[0].num_examples == 200
    # Without the option the log's bookkeeping stays out of the statistics.
    plain = stats.serving_statistics(str(tmp_path / "log"), str(work))
    assert stats.model_versions(plain) == {}
