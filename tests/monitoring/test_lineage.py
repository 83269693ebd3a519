"""`--pipeline-root`: the newest train-split statistics and schema recorded in MLMD."""

from __future__ import annotations

import os
import shutil

import pytest

from pipeline.monitoring.stats import InputError, from_pipeline_root


def _record(root: str, artifacts: list[tuple[str, str]]) -> None:
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    # Created here as a pipeline run would (the reader opens an existing store only).
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = os.path.join(root, "metadata.sqlite")
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    )
    store = metadata_store.MetadataStore(config)
    type_ids = {}
    for type_name, uri in artifacts:
        if type_name not in type_ids:
            type_ids[type_name] = store.put_artifact_type(
                metadata_store_pb2.ArtifactType(name=type_name)
            )
        artifact = metadata_store_pb2.Artifact(type_id=type_ids[type_name], uri=uri)
        store.put_artifacts([artifact])


def test_newest_statistics_and_schema_are_found(training_stats_file, tmp_path):
    old = tmp_path / "StatisticsGen" / "statistics" / "1"
    new = tmp_path / "StatisticsGen" / "statistics" / "2"
    for folder in (old, new):
        shutil.copytree(os.path.dirname(training_stats_file), folder / "Split-train")
    schema_dir = tmp_path / "SchemaGen" / "schema" / "3"
    schema_dir.mkdir(parents=True)
    (schema_dir / "schema.pbtxt").write_text("")
    _record(
        str(tmp_path),
        [
            ("ExampleStatistics", str(old)),
            ("ExampleStatistics", str(new)),
            ("Schema", str(schema_dir)),
        ],
    )
    stats_file, schema_file = from_pipeline_root(str(tmp_path))
    assert stats_file == str(new / "Split-train" / "FeatureStats.pb")
    assert schema_file == str(schema_dir / "schema.pbtxt")


def test_root_without_metadata_is_a_usage_error(tmp_path):
    with pytest.raises(InputError, match="no pipeline metadata"):
        from_pipeline_root(str(tmp_path))
