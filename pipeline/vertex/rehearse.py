"""`taxifare rehearse`: the compiled Vertex pipeline spec run task by task on this machine.

The spec is compiled as `taxifare compile` compiles it (its checks included), with what this
machine cannot reach replaced: the pipeline root is a `file://` URI under the rehearsal's
folder (TFX's `fileio`, TensorFlow and Beam reach it; a plain `open`/`os.path` call on an
artifact fails, as on `gs://`), Beam runs with the DirectRunner instead of Dataflow, and input
on a remote filesystem is replaced by the tfx sample. Then every task runs in dependency
order as Vertex runs it:

- a container task runs the spec's own command and arguments (its `lifecycle.preCacheCheck`
  first, as for ExampleGen's driver) in a subprocess, given the `ExecutorInput` Vertex would
  build (input artifacts with their types, URIs and metadata; parameters; output URIs under
  the pipeline root; the executor output file), the image's environment and a scratch
  working folder; the Trainer and the Pusher run it behind `pipeline.vertex.stand_ins`;
- a resolver task's queries are evaluated against an ML Metadata store (SQLite, kept under
  the rehearsal folder across runs and invocations) where every task's output artifacts are
  recorded as Vertex records them (type title, name, URI, metadata).

Two runs by default, so the resolvers and the drift check meet a previous run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.config import TFX_SAMPLE, Config

# Said plainly after every rehearsal.
NOT_REHEARSED = (
    "Dataflow (Beam ran with the DirectRunner in each task's process)",
    "Cloud Storage, IAM and the service account's permissions (a file:// root stood in)",
    "quotas, machine availability and GPUs (the worker pools ran here on CPU)",
    "Vertex's step cache (every step ran in every run)",
    "the container image itself (tasks ran in this environment, not in the built image)",
    "a real endpoint: upload, deploy, traffic and request logging went to a stand-in",
)
_ARTIFACT_NAME = "projects/rehearsal/locations/local/metadataStores/default/artifacts/{}"
_OUTPUT_FILE = "executor_output.json"
# TFX's Vertex entrypoint, the command of every container task.
_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"


def _print(line: str) -> None:
    # Progress: stderr (stdout carries only a command's requested output).
    print(line, file=sys.stderr, flush=True)


class RehearsalError(RuntimeError):
    """The rehearsal itself cannot go on (not a task's failure)."""


@dataclasses.dataclass
class TaskResult:
    """One task of one run."""

    run: int
    task: str
    status: str  # ok, failed, skipped
    seconds: float
    note: str = ""
    log: str = ""


def rehearsal_config(cfg: Config, root: Path) -> tuple[Config, list[str]]:
    """The config compiled for the rehearsal, and what was changed to run it here."""
    changes = []
    vertex = cfg.vertex
    pipeline_root = (root / "pipeline").resolve().as_uri()
    dataflow = vertex.dataflow.model_copy(update={"runner": "DirectRunner"})
    updates: dict[str, Any] = {
        "vertex": vertex.model_copy(update={"pipeline_root": pipeline_root, "dataflow": dataflow})
    }
    changes.append(f"pipeline root {vertex.pipeline_root} -> {pipeline_root}")
    if vertex.dataflow.runner != "DirectRunner":
        changes.append("Beam runner DataflowRunner -> DirectRunner")
    if "://" in cfg.data.input:
        updates["data"] = cfg.data.model_copy(update={"input": TFX_SAMPLE, "pattern": None})
        changes.append(f"input {cfg.data.input} -> the tfx sample (set data.input to a folder)")
    return cfg.model_copy(update=updates), changes


def rehearsal_tasks(job: dict[str, Any]) -> dict[str, Any]:
    """The root DAG's tasks of a compiled job."""
    return job["pipelineSpec"]["root"]["dag"]["tasks"]


def task_order(job: dict[str, Any]) -> list[str]:
    """The root DAG's tasks in an order Vertex could run them (dependencies first)."""
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    needs = {}
    for name, task in tasks.items():
        deps = set(task.get("dependentTasks", []))
        for value in task.get("inputs", {}).get("artifacts", {}).values():
            producer = value.get("taskOutputArtifact", {}).get("producerTask")
            if producer:
                deps.add(producer)
        needs[name] = deps
    order: list[str] = []
    while len(order) < len(tasks):
        ready = sorted(n for n in tasks if n not in order and needs[n] <= set(order))
        if not ready:
            raise RehearsalError(
                f"the spec's tasks have a cycle among {sorted(set(tasks) - set(order))}"
            )
        order.append(ready[0])
    return order


class MetadataStore:
    """ML Metadata (SQLite) holding artifacts as Vertex records them, queried as Vertex does."""

    def __init__(self, path: Path) -> None:
        from ml_metadata.metadata_store import metadata_store
        from ml_metadata.proto import metadata_store_pb2

        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = str(path)
        config.sqlite.connection_mode = (
            metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        )
        self.store = metadata_store.MetadataStore(config)

    def record(self, title: str, artifact: dict[str, Any]) -> None:
        """Records a runtime artifact (JSON form: name, uri, metadata) under type `title`."""
        from ml_metadata.proto import metadata_store_pb2

        type_id = self.store.put_artifact_type(metadata_store_pb2.ArtifactType(name=title))
        record = metadata_store_pb2.Artifact(
            type_id=type_id,
            uri=artifact.get("uri", ""),
            name=artifact["name"],
            state=metadata_store_pb2.Artifact.LIVE,
        )
        for key, value in (artifact.get("metadata") or {}).items():
            prop = record.custom_properties[key]
            if isinstance(value, bool):
                prop.bool_value = value
            elif isinstance(value, (int, float)):
                prop.double_value = float(value)
            elif isinstance(value, str):
                prop.string_value = value
            else:
                prop.string_value = json.dumps(value)
        self.store.put_artifacts([record])

    def query(self, vertex_filter: str) -> dict[str, Any] | None:
        """The latest LIVE artifact a Vertex resolver filter selects, in runtime JSON form."""
        from ml_metadata.metadata_store import metadata_store

        clauses = []
        for clause in vertex_filter.split(" AND "):
            key, _, value = clause.strip().partition("=")
            if key == "schema_title":
                clauses.append(f"type = '{json.loads(value)}'")
            elif key == "state":
                clauses.append(f"state = {value}")
            elif key == "name":
                clauses.append(f"name = '{json.loads(value)}'")
            elif key == "uri" and json.loads(value).endswith("*"):
                # Vertex's trailing wildcard (the pipeline root's scope) as MLMD's LIKE.
                clauses.append(f"uri LIKE '{json.loads(value)[:-1]}%'")
            elif key.startswith("metadata.") and key.endswith(".number_value"):
                prop = key[len("metadata.") : -len(".number_value")]
                clauses.append(f"custom_properties.{prop}.double_value = {float(value)}")
            else:
                raise RehearsalError(f"cannot evaluate the resolver clause {clause!r}")
        options = metadata_store.ListOptions(
            limit=1,
            order_by=metadata_store.OrderByField.CREATE_TIME,
            is_asc=False,
            filter_query=" AND ".join(clauses),
        )
        found = self.store.get_artifacts(list_options=options)
        if not found:
            return None
        types = {t.id: t.name for t in self.store.get_artifact_types()}
        artifact = found[0]
        metadata: dict[str, Any] = {}
        for key, value in artifact.custom_properties.items():
            kind = value.WhichOneof("value")
            metadata[key] = getattr(value, kind) if kind else None
        return {
            "name": artifact.name,
            "uri": artifact.uri,
            "metadata": metadata,
            "_type": types.get(artifact.type_id),
        }


def _artifact_type(definition: dict[str, Any]) -> dict[str, Any]:
    return definition["artifactType"]


def _title(artifact_type: dict[str, Any]) -> str:
    from pipeline.vertex.spec_checks import artifact_title

    return artifact_title(artifact_type)


def _substitute(text: str, inputs: dict[str, list[dict[str, Any]]]) -> str | None:
    """Fills `{{$.inputs.artifacts['k'].metadata['m']}}`; None when the input is empty."""
    import re

    def value(match: re.Match) -> str:
        artifacts = inputs.get(match.group(1)) or []
        if not artifacts:
            raise LookupError(match.group(1))
        return str((artifacts[0].get("metadata") or {}).get(match.group(2), ""))

    try:
        return re.sub(
            r"\{\{\$\.inputs\.artifacts\['([^']+)'\]\.metadata\['([^']+)'\]\}\}", value, text
        )
    except LookupError:
        return None


class Rehearsal:
    """Runs a compiled job spec's tasks here; see the module doc."""

    def __init__(self, job: dict[str, Any], root: Path, image_schema: tuple[str, str]) -> None:
        self.job = job
        self.spec = job["pipelineSpec"]
        self.root = root.resolve()
        self.pipeline_root = job["runtimeConfig"]["gcsOutputDirectory"]
        self.store = MetadataStore(self.root / "metadata.sqlite")
        self.image_schema = image_schema
        self.order = task_order(job)

    def _component(self, task: str) -> dict[str, Any]:
        return self.spec["components"][
            self.spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
        ]

    def _executor(self, task: str) -> dict[str, Any]:
        label = self._component(task)["executorLabel"]
        return self.spec["deploymentSpec"]["executors"][label]

    def run(self, run: int, printer: Any = _print) -> list[TaskResult]:
        """One run of the pipeline; prints one line per task."""
        job_id = f"rehearsal-{run}-{uuid.uuid4().hex[:8]}"
        outputs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        results = []
        failed: set[str] = set()
        for task in self.order:
            spec = self.spec["root"]["dag"]["tasks"][task]
            deps = set(spec.get("dependentTasks", [])) | {
                v["taskOutputArtifact"]["producerTask"]
                for v in spec.get("inputs", {}).get("artifacts", {}).values()
                if "taskOutputArtifact" in v
            }
            if deps & failed:
                failed.add(task)
                result = TaskResult(run, task, "skipped", 0.0, "an upstream task failed")
            else:
                start = time.monotonic()
                try:
                    note, log = self._run_task(task, job_id, outputs)
                    result = TaskResult(run, task, "ok", time.monotonic() - start, note, log)
                except _TaskFailedError as e:
                    failed.add(task)
                    result = TaskResult(
                        run, task, "failed", time.monotonic() - start, str(e), e.log
                    )
            results.append(result)
            printer(
                f"  run {run}  {task:<48} {result.status:<7} {result.seconds:6.0f}s  {result.note}"
            )
        return results

    def _inputs(self, task: str, outputs: dict) -> dict[str, list[dict[str, Any]]]:
        spec = self.spec["root"]["dag"]["tasks"][task]
        definitions = self._component(task).get("inputDefinitions", {}).get("artifacts", {})
        inputs = {}
        for key, value in spec.get("inputs", {}).get("artifacts", {}).items():
            source = value["taskOutputArtifact"]
            found = outputs.get(source["producerTask"], {}).get(source["outputArtifactKey"], [])
            inputs[key] = [{**a, "type": _artifact_type(definitions[key])} for a in found]
        return inputs

    def _parameters(self, task: str) -> dict[str, Any]:
        params = {}
        for key, value in (
            self.spec["root"]["dag"]["tasks"][task].get("inputs", {}).get("parameters", {}).items()
        ):
            constant = dict(value["runtimeValue"]["constantValue"])
            if constant.get("stringValue") == self.image_schema[0]:
                # The image links its schema there (see the Dockerfile): this machine's copy.
                constant["stringValue"] = self.image_schema[1]
            params[key] = constant
        return params

    def _run_task(self, task: str, job_id: str, outputs: dict) -> tuple[str, str]:
        executor = self._executor(task)
        inputs = self._inputs(task, outputs)
        if "resolver" in executor:
            return self._resolve(task, executor["resolver"], inputs, outputs)
        if "container" not in executor:
            raise _TaskFailedError(f"an executor the rehearsal cannot run: {sorted(executor)}", "")
        task_dir = f"{self.pipeline_root}/{job_id}/{task}_{uuid.uuid4().hex[:8]}"
        definitions = self._component(task).get("outputDefinitions", {}).get("artifacts", {})
        planned = {
            key: [
                {
                    "name": _ARTIFACT_NAME.format(uuid.uuid4().hex),
                    "type": _artifact_type(definition),
                    "uri": f"{task_dir}/{key}",
                    "metadata": {},
                }
            ]
            for key, definition in definitions.items()
        }
        executor_input = {
            "inputs": {
                "artifacts": {k: {"artifacts": v} for k, v in inputs.items() if v},
                "parameters": self._parameters(task),
            },
            "outputs": {
                "artifacts": {k: {"artifacts": v} for k, v in planned.items()},
                "outputFile": f"{task_dir}/{_OUTPUT_FILE}",
            },
        }
        container = executor["container"]
        log = self.root / "logs" / job_id / f"{task}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        steps = []
        if "lifecycle" in container and "preCacheCheck" in container["lifecycle"]:
            steps.append(container["lifecycle"]["preCacheCheck"])
        steps.append(container)
        for step in steps:
            self._run_container(task, step, executor_input, log)
        produced = self._read_output(task_dir, planned)
        outputs[task] = produced
        for key, artifacts in produced.items():
            for artifact in artifacts:
                self.store.record(_title(definitions[key]["artifactType"]), artifact)
        return self._note(task, produced), str(log)

    def _run_container(self, task: str, step: dict, executor_input: dict, log: Path) -> None:
        from pipeline.vertex.stand_ins import ENDPOINT_FILE_ENV

        payload = json.dumps(executor_input)
        args = [payload if a == "{{$}}" else a for a in step.get("args", [])]
        command = list(step["command"])
        if command[:3] == ["python", "-m", _ENTRYPOINT]:
            # The same entrypoint, behind the stand-ins (pipeline.vertex.stand_ins).
            command = ["python", "-m", "pipeline.vertex.stand_ins"]
        command = [sys.executable if command[0] == "python" else command[0], *command[1:]]
        env = {
            **os.environ,
            "TF_USE_LEGACY_KERAS": "1",  # as the image sets it
            ENDPOINT_FILE_ENV: str(self.root / "endpoint.json"),
        }
        scratch = self.root / "scratch"
        scratch.mkdir(exist_ok=True)
        with open(log, "a") as fh:
            fh.write(f"$ {' '.join(command)} <args>\n")
            fh.flush()
            code = subprocess.call(
                command + args, cwd=scratch, env=env, stdout=fh, stderr=subprocess.STDOUT
            )
        if code:
            raise _TaskFailedError(f"exit {code}: {_last_error(log)} (log: {log})", str(log))

    def _read_output(self, task_dir: str, planned: dict) -> dict[str, list[dict[str, Any]]]:
        from tfx.dsl.io import fileio

        path = f"{task_dir}/{_OUTPUT_FILE}"
        written: dict[str, Any] = {}
        if fileio.exists(path):
            with fileio.open(path, "r") as fh:
                written = json.loads(fh.read()).get("artifacts", {})
        produced = {}
        for key, artifacts in planned.items():
            out = written.get(key, {}).get("artifacts")
            if out:
                produced[key] = [
                    {
                        **a,
                        "type": artifacts[0]["type"],
                        "name": a.get("name") or artifacts[0]["name"],
                    }
                    for a in out
                ]
            else:
                produced[key] = artifacts
        return produced

    def _resolve(self, task: str, resolver: dict, inputs: dict, outputs: dict) -> tuple[str, str]:
        definitions = self._component(task).get("outputDefinitions", {}).get("artifacts", {})
        produced = {}
        notes = []
        for key, query in resolver.get("outputArtifactQueries", {}).items():
            text = _substitute(query["filter"], inputs)
            found = None if text is None else self.store.query(text)
            if found is None:
                produced[key] = []
                notes.append(f"{key}: none yet")
            else:
                found.pop("_type", None)
                produced[key] = [{**found, "type": definitions[key]["artifactType"]}]
                notes.append(f"{key}: {found['uri']}")
        outputs[task] = produced
        return "; ".join(notes), ""

    @staticmethod
    def _note(task: str, produced: dict) -> str:
        def meta(key: str) -> dict[str, Any]:
            artifacts = produced.get(key) or [{}]
            return artifacts[0].get("metadata") or {}

        if "verdict" in produced:
            m = meta("verdict")
            note = f"{m.get('check', '')} verdict: {m.get('verdict', '?')} ({m.get('note', '')})"
            if m.get("previous_verdict"):
                note += f"; previous verdict {m['previous_verdict']}"
            return note
        if "blessing" in produced:
            return "blessed" if meta("blessing").get("blessed") == 1 else "not blessed"
        if "pushed_model" in produced:
            m = meta("pushed_model")
            return (
                f"pushed to {m.get('pushed_destination')}" if m.get("pushed") == 1 else "not pushed"
            )
        return ""


class _TaskFailedError(RuntimeError):
    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


def _last_error(log: Path) -> str:
    """The last line of a failed task's log that names an error."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line or "Exception" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def image_schema_paths() -> tuple[str, str]:
    """(the schema path the spec names inside the image, this machine's copy of it)."""
    from pipeline.curated_schema import shipped_schema_file
    from pipeline.vertex.component_config import IMAGE_SCHEMA_FILE

    return IMAGE_SCHEMA_FILE, shipped_schema_file()


def rehearse(cfg: Config, root: Path, runs: int = 2, printer: Any = _print) -> bool:
    """Compiles and rehearses the Vertex pipeline `runs` times; True when every task ran."""
    from pipeline.vertex.compiler import compile_pipeline
    from pipeline.vertex.stand_ins import StandInEndpointClient

    root.mkdir(parents=True, exist_ok=True)
    rehearsed, changes = rehearsal_config(cfg, root)
    job = compile_pipeline(rehearsed, root / "pipeline.json")
    printer(
        f"taxifare: rehearsing '{cfg.name}' ({len(rehearsal_tasks(job))} tasks,"
        f" {runs} runs) in {root}"
    )
    for change in changes:
        printer(f"  for this machine: {change}")
    rehearsal = Rehearsal(job, root, image_schema_paths())
    ok = True
    for run in range(1, runs + 1):
        results = rehearsal.run(run, printer)
        ok = ok and all(r.status == "ok" for r in results)
        if not ok:
            break
    endpoint = StandInEndpointClient(str(root / "endpoint.json")).load()
    if endpoint is not None:
        printer(
            f"  stand-in endpoint {endpoint.display_name}: deployed models"
            f" {sorted(m.id for m in endpoint.deployed_models)},"
            f" traffic {dict(endpoint.traffic_split)}"
        )
    printer("  not rehearsed: " + "; ".join(NOT_REHEARSED))
    printer(
        "taxifare: rehearsal passed: every task ran"
        if ok
        else "taxifare: rehearsal FAILED: see the failed task's line and log above"
    )
    return ok
