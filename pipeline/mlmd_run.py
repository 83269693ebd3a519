"""Reads one pipeline run back from MLMD: its executions per node and their artifacts."""

from __future__ import annotations

import dataclasses

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

_RUN_CONTEXT_TYPE = "pipeline_run"
_NODE_CONTEXT_TYPE = "node"
_EXECUTION = metadata_store_pb2.Execution
_STATES = _EXECUTION.State
# Set on an execution a later run found left RUNNING by a run that was killed.
ABANDONED_PROPERTY = "abandoned"


@dataclasses.dataclass
class NodeExecution:
    """What one node did in a run."""

    node_id: str
    state: str  # COMPLETE, CACHED, FAILED, RUNNING, ...
    seconds: float
    outputs: dict[str, list[metadata_store_pb2.Artifact]]
    execution: metadata_store_pb2.Execution
    inputs: dict[str, list[metadata_store_pb2.Artifact]] = dataclasses.field(default_factory=dict)


def open_store(sqlite_path: str) -> metadata_store.MetadataStore:
    """Opens the MLMD SQLite store read-write (MLMD has no read-only SQLite mode)."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = sqlite_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    return metadata_store.MetadataStore(config)


def run_context(
    store: metadata_store.MetadataStore, run_id: str
) -> metadata_store_pb2.Context | None:
    """The pipeline_run context of the run with id `run_id`, or None if it recorded nothing."""
    return store.get_context_by_type_and_name(_RUN_CONTEXT_TYPE, run_id)


def _node_id(store: metadata_store.MetadataStore, execution_id: int) -> str | None:
    for ctx in store.get_contexts_by_execution(execution_id):
        ctx_type = store.get_context_types_by_id([ctx.type_id])[0].name
        if ctx_type == _NODE_CONTEXT_TYPE:
            return ctx.name.split(".", 1)[-1]
    return None


def abandon_unfinished(store: metadata_store.MetadataStore, by_run: str) -> list[str]:
    """Marks the executions a killed run left NEW or RUNNING as CANCELED ("abandoned").

    Only call it while holding the root's run lock: then no execution of this store can
    still be running, and one left RUNNING belongs to a run that died.

    Args:
      store: the root's MLMD store.
      by_run: the id of the run doing it (recorded on each execution).

    Returns:
      "<node> (run <run id>)" for each execution marked.
    """
    unfinished = [
        e
        for e in store.get_executions()
        if e.last_known_state in (_EXECUTION.NEW, _EXECUTION.RUNNING)
    ]
    marked = []
    for execution in unfinished:
        runs = [
            c.name
            for c in store.get_contexts_by_execution(execution.id)
            if store.get_context_types_by_id([c.type_id])[0].name == _RUN_CONTEXT_TYPE
        ]
        execution.last_known_state = _EXECUTION.CANCELED
        execution.custom_properties[
            ABANDONED_PROPERTY
        ].string_value = f"its run stopped before it finished; marked by run {by_run}"
        marked.append(f"{_node_id(store, execution.id) or execution.id} (run {', '.join(runs)})")
    if unfinished:
        store.put_executions(unfinished)
    return marked


_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)


def _artifacts_by_key(
    store: metadata_store.MetadataStore, events, types
) -> dict[str, list[metadata_store_pb2.Artifact]]:
    chosen = [e for e in events if e.type in types]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in chosen])}
    found: dict[str, list[metadata_store_pb2.Artifact]] = {}
    for event in chosen:
        # One artifact given to two inputs (a model that is its own baseline) is one event
        # whose path names both keys.
        keys = [step.key for step in event.path.steps if step.HasField("key")] or [""]
        for key in keys:
            found.setdefault(key, []).append(artifacts[event.artifact_id])
    return found


def read_run(
    store: metadata_store.MetadataStore, run: metadata_store_pb2.Context
) -> dict[str, NodeExecution]:
    """The executions of one run keyed by node id, with their input and output artifacts."""
    executions = store.get_executions_by_context(run.id)
    result: dict[str, NodeExecution] = {}
    for execution in executions:
        node_id = _node_id(store, execution.id)
        if node_id is None:
            continue
        events = store.get_events_by_execution_ids([execution.id])
        outputs = _artifacts_by_key(store, events, _OUTPUT_EVENTS)
        inputs = _artifacts_by_key(store, events, _INPUT_EVENTS)
        seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1e3
        result[node_id] = NodeExecution(
            node_id=node_id,
            state=_STATES.Name(execution.last_known_state),
            seconds=seconds,
            outputs=outputs,
            execution=execution,
            inputs=inputs,
        )
    return result


def custom_value(artifact: metadata_store_pb2.Artifact, name: str) -> int | float | str | None:
    """A custom property of an artifact as a Python value, or None."""
    if name not in artifact.custom_properties:
        return None
    value = artifact.custom_properties[name]
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
