"""Reads one pipeline run back from MLMD: its executions per node and their artifacts."""

from __future__ import annotations

import dataclasses

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

_RUN_CONTEXT_TYPE = "pipeline_run"
_NODE_CONTEXT_TYPE = "node"
_STATES = metadata_store_pb2.Execution.State


@dataclasses.dataclass
class NodeExecution:
    """What one node did in a run."""

    node_id: str
    state: str  # COMPLETE, CACHED, FAILED, RUNNING, ...
    seconds: float
    outputs: dict[str, list[metadata_store_pb2.Artifact]]
    execution: metadata_store_pb2.Execution


def open_store(sqlite_path: str) -> metadata_store.MetadataStore:
    """Opens the MLMD SQLite store read-write (MLMD has no read-only SQLite mode)."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = sqlite_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    return metadata_store.MetadataStore(config)


def latest_run_context(
    store: metadata_store.MetadataStore, pipeline_name: str, since_ms: int = 0
) -> metadata_store_pb2.Context | None:
    """The newest pipeline_run context of `pipeline_name` created at or after `since_ms`."""
    runs = [
        c
        for c in store.get_contexts_by_type(_RUN_CONTEXT_TYPE)
        if c.create_time_since_epoch >= since_ms
    ]
    pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline_ctx is not None:
        ids = {e.id for e in store.get_executions_by_context(pipeline_ctx.id)}
        runs = [c for c in runs if {e.id for e in store.get_executions_by_context(c.id)} & ids]
    return max(runs, key=lambda c: (c.create_time_since_epoch, c.id), default=None)


def read_run(
    store: metadata_store.MetadataStore, run: metadata_store_pb2.Context
) -> dict[str, NodeExecution]:
    """The executions of one run keyed by node id, with their output artifacts by key."""
    executions = store.get_executions_by_context(run.id)
    result: dict[str, NodeExecution] = {}
    for execution in executions:
        node_id = None
        for ctx in store.get_contexts_by_execution(execution.id):
            ctx_type = store.get_context_types_by_id([ctx.type_id])[0].name
            if ctx_type == _NODE_CONTEXT_TYPE:
                node_id = ctx.name.split(".", 1)[-1]
        if node_id is None:
            continue
        events = store.get_events_by_execution_ids([execution.id])
        outputs: dict[str, list[metadata_store_pb2.Artifact]] = {}
        output_events = [
            e
            for e in events
            if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
        ]
        artifacts = {
            a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in output_events])
        }
        for event in output_events:
            key = event.path.steps[0].key if event.path.steps else ""
            outputs.setdefault(key, []).append(artifacts[event.artifact_id])
        seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1e3
        result[node_id] = NodeExecution(
            node_id=node_id,
            state=_STATES.Name(execution.last_known_state),
            seconds=seconds,
            outputs=outputs,
            execution=execution,
        )
    return result


def custom_value(artifact: metadata_store_pb2.Artifact, name: str) -> int | float | str | None:
    """A custom property of an artifact as a Python value, or None."""
    if name not in artifact.custom_properties:
        return None
    value = artifact.custom_properties[name]
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
