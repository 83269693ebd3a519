"""The training data of a served model, found through its lineage in ML Metadata.

A request log records the model version that answered each request. The Pusher records the
version it wrote on its PushedModel artifact (`pushed_version`). From there MLMD's events lead
back: Pusher <- Model <- Trainer <- Transform <- Examples, and forward from those Examples to
the StatisticsGen statistics of exactly the data that model learned from, and to the schema
the Trainer used.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any

from pipeline.monitoring.stats import InputError, join, stats_file_in

_METADATA_FILE = "metadata.sqlite"
_PUSHED_MODEL_TYPE = "PushedModel"
_MODEL_TYPE = "Model"
_EXAMPLES_TYPE = "Examples"
_STATS_TYPE = "ExampleStatistics"
_SCHEMA_TYPE = "Schema"
_SCHEMA_FILE = "schema.pbtxt"
_PUSHED_VERSION = "pushed_version"
_PUSHED = "pushed"
# The Pusher's input that is the model it pushed (its other input, the blessing, leads to
# the Evaluator and from there to the *baseline* model: not this model's lineage).
_PUSHER_MODEL_KEY = "model"


@dataclasses.dataclass(frozen=True)
class TrainingInputs:
    """What one pushed model version was trained on.

    Attributes:
      version: the pushed version (the serving directory's folder name).
      statistics_file: the train split's `FeatureStats.pb` of its training data.
      schema_file: the schema its Trainer used.
      model_uri: the Trainer's model artifact.
      pushed_uri: where the Pusher wrote it.
    """

    version: int
    statistics_file: str
    schema_file: str
    model_uri: str
    pushed_uri: str


def open_pipeline_store(root: str) -> Any:
    """The MLMD store of a pipeline root (`<root>/metadata.sqlite`).

    Raises:
      InputError: there is no store there.
    """
    from pipeline.mlmd_run import open_store

    sqlite = os.path.join(root, _METADATA_FILE)
    if not os.path.isfile(sqlite):
        raise InputError(f"no pipeline metadata at {sqlite} (is --pipeline-root a run's root?)")
    return open_store(sqlite)


def pushed_versions(store: Any) -> dict[int, Any]:
    """Every version the pipeline pushed, with its PushedModel artifact."""
    result = {}
    for artifact in store.get_artifacts_by_type(_PUSHED_MODEL_TYPE):
        props = artifact.custom_properties
        if _PUSHED_VERSION not in props or not props[_PUSHED].int_value:
            continue
        version = props[_PUSHED_VERSION].string_value
        if version.isdigit():
            result[int(version)] = artifact
    return result


class _Graph:
    """MLMD events, read on demand: who produced and who consumed each artifact."""

    def __init__(self, store: Any) -> None:
        from ml_metadata.proto import metadata_store_pb2

        self._store = store
        self._input = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
        self._output = (
            metadata_store_pb2.Event.OUTPUT,
            metadata_store_pb2.Event.DECLARED_OUTPUT,
        )
        self._complete = (
            metadata_store_pb2.Execution.COMPLETE,
            metadata_store_pb2.Execution.CACHED,
        )
        self._type_names = {t.id: t.name for t in store.get_artifact_types()}

    def type_name(self, artifact: Any) -> str:
        return self._type_names.get(artifact.type_id, "")

    def producer(self, artifact: Any) -> int | None:
        """The execution that produced `artifact` (a successful one; the first if cached)."""
        events = self._store.get_events_by_artifact_ids([artifact.id])
        ids = sorted({e.execution_id for e in events if e.type in self._output})
        executions = self._store.get_executions_by_id(ids) if ids else []
        done = [e.id for e in executions if e.last_known_state in self._complete]
        return min(done) if done else None

    def consumers(self, artifact: Any) -> list[int]:
        events = self._store.get_events_by_artifact_ids([artifact.id])
        return sorted({e.execution_id for e in events if e.type in self._input})

    def artifacts(self, execution_id: int, inputs: bool) -> list[tuple[str, Any]]:
        """(event key, artifact) of an execution's inputs or outputs."""
        kinds = self._input if inputs else self._output
        events = [
            e for e in self._store.get_events_by_execution_ids([execution_id]) if e.type in kinds
        ]
        by_id = {a.id: a for a in self._store.get_artifacts_by_id([e.artifact_id for e in events])}
        return [
            (e.path.steps[0].key if e.path.steps else "", by_id[e.artifact_id])
            for e in events
            if e.artifact_id in by_id
        ]


def training_inputs(store: Any, version: int, where: str) -> TrainingInputs:
    """The statistics and schema of the data model `version` was trained on.

    Args:
      store: the pipeline's MLMD store.
      version: a version as the request log records it (the Pusher's folder name).
      where: the store's location, for messages.

    Raises:
      InputError: the version was never pushed by this pipeline, or its lineage is incomplete.
    """
    pushed = pushed_versions(store)
    if version not in pushed:
        known = ", ".join(str(v) for v in sorted(pushed)) or "none"
        raise InputError(
            f"model version {version} (from the request log) was not pushed by the pipeline"
            f" whose metadata is {where} (versions it pushed: {known})"
        )
    graph = _Graph(store)
    pusher = graph.producer(pushed[version])
    if pusher is None:
        raise InputError(f"{where}: no Pusher execution recorded for version {version}")
    models = [
        a
        for key, a in graph.artifacts(pusher, inputs=True)
        if key == _PUSHER_MODEL_KEY and graph.type_name(a) == _MODEL_TYPE
    ]
    if not models:
        raise InputError(f"{where}: the Pusher of version {version} records no model input")
    model = models[0]
    # Breadth first up from the model: the nearest schema, and the Examples in the order
    # they are met (the transformed ones first, then the ones Transform read).
    schema = None
    examples: list[Any] = []
    seen: set[int] = {model.id}
    queue = collections.deque([model])
    while queue:
        artifact = queue.popleft()
        execution = graph.producer(artifact)
        if execution is None:
            continue
        for _, parent in graph.artifacts(execution, inputs=True):
            if parent.id in seen:
                continue
            seen.add(parent.id)
            kind = graph.type_name(parent)
            if kind == _SCHEMA_TYPE and schema is None:
                schema = parent
            if kind == _EXAMPLES_TYPE:
                examples.append(parent)
            queue.append(parent)
    statistics_file = None
    for example in examples:
        for consumer in graph.consumers(example):
            for _, output in graph.artifacts(consumer, inputs=False):
                if graph.type_name(output) == _STATS_TYPE:
                    statistics_file = statistics_file or stats_file_in(output.uri)
        if statistics_file:
            break
    if statistics_file is None:
        raise InputError(
            f"{where}: no train-split statistics found in the lineage of version {version}"
            f" (model {model.uri})"
        )
    import tensorflow as tf

    if schema is None or not tf.io.gfile.exists(join(schema.uri, _SCHEMA_FILE)):
        raise InputError(f"{where}: no schema found in the lineage of version {version}")
    return TrainingInputs(
        version=version,
        statistics_file=statistics_file,
        schema_file=join(schema.uri, _SCHEMA_FILE),
        model_uri=model.uri,
        pushed_uri=str(pushed[version].custom_properties["pushed_destination"].string_value),
    )
