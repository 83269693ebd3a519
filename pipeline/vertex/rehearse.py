"""`taxifare rehearse`: the compiled Vertex pipeline spec run task by task on this machine.

The spec is the one `taxifare compile` writes for submission (its checks included), with only
what this machine cannot reach replaced in it: the pipeline root becomes a `file://` URI under
the rehearsal's folder (TFX's `fileio`, TensorFlow and Beam reach it; a plain `open`/`os.path`
call on an artifact fails, as on `gs://`), the Dataflow options become the DirectRunner's, and
an input on a remote filesystem becomes a local folder: with a `{SPAN}` pattern, span folders
made from the tfx sample, one more before run 2, so the spans advance as a new month's folder
arrives between scheduled runs. Then the tasks run as Vertex runs them:

- a task runs once every task it depends on has succeeded, up to `parallel` tasks at a time
  (Vertex starts every ready task at once);
- a container task runs the spec's own command and arguments in a subprocess, given the
  `ExecutorInput` Vertex would build (input artifacts with their types, URIs and metadata;
  parameters; output URIs under the pipeline root; the executor output file), the image's
  environment and a scratch working folder; the Trainer and the Pusher run it behind
  `pipeline.vertex.stand_ins`. A `lifecycle.preCacheCheck` (ExampleGen's driver) runs first,
  and what it writes (span, version, input fingerprint, the input config with the span's
  pattern, the examples' properties) is handed on to the cache check and the executor, as
  Vertex hands it on;
- Vertex's step cache is emulated: a task whose container, component, parameters, input
  artifacts and output types equal those of an earlier successful execution (of this
  rehearsal folder) reuses that execution's outputs instead of running, and its line says
  `cached`;
- a resolver task always runs: its queries are evaluated against an ML Metadata store
  (SQLite, kept under the rehearsal folder across runs and invocations) where every task's
  output artifacts are recorded as Vertex records them (type title, name, URI, metadata).

Three runs by default: run 1 on the first span; run 2 on a new span (DriftCheck compares it
with run 1's, the Evaluator's baseline is run 1's model); run 3 on unchanged data (the data
steps are cache hits, the Evaluator compares the served model with itself, the Pusher must not
deploy it again).
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from pipeline.config import Config

# Said plainly after every rehearsal.
NOT_REHEARSED = (
    "Dataflow (Beam ran with the DirectRunner in each task's process)",
    "Cloud Storage, IAM and the service account's permissions (a file:// root stood in)",
    "the remote input's listing (local span folders made from the tfx sample stood in)",
    "quotas, machine availability and GPUs (the worker pools ran here on CPU)",
    "Vertex's own step cache: emulated here with a key in the manner of Vertex's (container,"
    " component, parameters after the driver, input artifact names, output types) over this"
    " rehearsal folder's executions only; Vertex's key is computed by the service (its exact"
    " fields are not published) and its cache spans every run of the project and region",
    "Vertex's scheduling: every ready task starts at once there, here at most --parallel",
    "the container image itself (tasks ran in this environment, not in the built image)",
    "a real endpoint: upload, deploy, traffic and request logging went to a stand-in",
)
_ARTIFACT_NAME = "projects/rehearsal/locations/local/metadataStores/default/artifacts/{}"
_OUTPUT_FILE = "executor_output.json"
# TFX's Vertex entrypoint, the command of every container task.
_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
# Files of the rehearsal folder: the spec as compiled for submission, the spec rehearsed, the
# emulated step cache, each task's latest time (for the next rehearsal's estimate).
SUBMITTED_SPEC = "pipeline.json"
REHEARSED_SPEC = "rehearsed.json"
STEP_CACHE = "step_cache.json"
TASK_TIMES = "task_times.json"
# The estimate's time of a task no earlier rehearsal in the folder has timed: a container
# task starts a Python process that imports TFX (20-40 s on a loaded two-core machine) and
# then works on 15,000 trips for about as long.
DEFAULT_TASK_SECONDS = 60.0
# A resolver is a query; a cached task with a preCacheCheck still runs that (an import of TFX).
RESOLVER_SECONDS = 1.0
DRIVER_SECONDS = 25.0
DEFAULT_PARALLEL = 2
DEFAULT_RUNS = 3


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
    status: str  # ok, cached, failed, skipped
    seconds: float
    note: str = ""
    log: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status in ("ok", "cached")


# The local stand-in for a remote input.


_DATE_SPECS = ("{YYYY}", "{MM}", "{DD}")


class LocalInput:
    """A local folder standing in for the config's remote input, made from the tfx sample.

    With `{SPAN}` in the pattern it holds span folders, each a copy of the sample laid out as
    the pattern names it (`span-{SPAN}/*.csv` -> `span-1/data.csv`); `add_span` adds the next
    one, as a new month's folder arrives on gs:// between two scheduled runs.
    """

    def __init__(self, folder: Path, pattern: str | None) -> None:
        self.folder = folder
        self.pattern = pattern
        if pattern and any(spec in pattern for spec in _DATE_SPECS):
            raise RehearsalError(
                f"data.pattern {pattern!r}: the rehearsal makes span folders for a {{SPAN}}"
                " pattern only, not for date specs; set data.input to a local folder laid out"
                " as the pattern names it (--set data.input=FOLDER)"
            )

    @property
    def has_spans(self) -> bool:
        return "{SPAN}" in (self.pattern or "")

    def path_for(self, span: int) -> Path:
        """The sample's file for `span` (0 without spans), as the pattern names it."""
        relative = (self.pattern or "data.csv").replace("{SPAN}", str(span))
        relative = relative.replace("{VERSION}", "1").replace("*", "data")
        if any(c in relative for c in "?[]{}") or relative.startswith("/") or ".." in relative:
            raise RehearsalError(
                f"data.pattern {self.pattern!r}: cannot name a local file for it; set"
                " data.input to a local folder laid out as the pattern names it"
                " (--set data.input=FOLDER)"
            )
        return self.folder / relative

    def spans(self) -> list[int]:
        """The spans present, oldest first (none before the first `add_span`)."""
        if not self.has_spans:
            return [0] if self.path_for(0).is_file() else []
        if not self.folder.is_dir():
            return []
        regex = re.escape(self.pattern or "")
        for placeholder, part in (("{SPAN}", r"(\d+)"), ("{VERSION}", r"\d+"), ("*", "[^/]*")):
            regex = regex.replace(re.escape(placeholder), part)
        found = set()
        for path in self.folder.rglob("*"):
            match = re.fullmatch(regex, path.relative_to(self.folder).as_posix())
            if match and path.is_file():
                found.add(int(match.group(1)))
        return sorted(found)

    def add_span(self) -> int:
        """Adds the next span (span 1 first; the one folder without spans); returns it."""
        from pipeline.data_source import tfx_sample_dir

        present = self.spans()
        if not self.has_spans:
            span = 0
        else:
            span = (present[-1] + 1) if present else 1
        target = self.path_for(span)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(tfx_sample_dir(), "data.csv"), target)
        return span


# The submitted spec, localized.


def _replace_sublist(items: list[str], old: list[str], new: list[str]) -> list[str] | None:
    """`items` with the contiguous `old` replaced by `new`; None when `old` is not in it."""
    for i in range(len(items) - len(old) + 1):
        if items[i : i + len(old)] == old:
            return items[:i] + new + items[i + len(old) :]
    return None


def _replace_strings(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replace_strings(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _replace_strings(v, old, new) for k, v in value.items()}
    return value


def localize(
    job: dict[str, Any], cfg: Config, root: Path, input_base: str | None
) -> tuple[dict[str, Any], list[str]]:
    """The submitted `job` with only what this machine cannot reach replaced.

    Args:
      job: the spec as `taxifare compile` writes it for `cfg`.
      cfg: its config.
      root: the rehearsal folder (the pipeline root goes under it).
      input_base: the local folder that replaces a remote `data.input`; None keeps it.

    Returns:
      (the spec to rehearse, one line per kind of change).

    Raises:
      RehearsalError: the spec does not hold what `cfg` compiles to (the Beam options, the
        input), so the replacement would leave part of it unreachable.
    """
    from pipeline.data_source import with_input_beam_args
    from pipeline.vertex.component_config import beam_pipeline_args

    vertex = cfg.vertex
    changes = []
    job = json.loads(json.dumps(job))
    remote = with_input_beam_args(cfg, beam_pipeline_args(vertex, cfg.beam))
    direct = vertex.model_copy(
        update={"dataflow": vertex.dataflow.model_copy(update={"runner": "DirectRunner"})}
    )
    local = with_input_beam_args(cfg, beam_pipeline_args(direct, cfg.beam))
    if remote != local:
        for label, executor in job["pipelineSpec"]["deploymentSpec"]["executors"].items():
            container = executor.get("container")
            if not container:
                continue
            steps = [container, *container.get("lifecycle", {}).values()]
            for step in steps:
                args = _replace_sublist(list(step.get("args", [])), remote, local)
                if args is None:
                    raise RehearsalError(
                        f"{label}: the compiled arguments do not hold the config's Beam options"
                        f" ({' '.join(remote[:2])} ...): cannot replace Dataflow here"
                    )
                step["args"] = args
        changes.append(f"Beam {remote[0]} -> {' '.join(local)} ({len(remote)} Dataflow options)")
    if input_base is not None:
        replaced = 0
        for task in job["pipelineSpec"]["root"]["dag"]["tasks"].values():
            parameter = task.get("inputs", {}).get("parameters", {}).get("input_base")
            constant = (parameter or {}).get("runtimeValue", {}).get("constantValue", {})
            if constant.get("stringValue") == cfg.data.input:
                constant["stringValue"] = input_base
                replaced += 1
        if not replaced:
            raise RehearsalError(
                f"no task of the compiled spec reads data.input ({cfg.data.input}) as its"
                " input_base: cannot replace the input here"
            )
        changes.append(f"input {cfg.data.input} -> {input_base}")
    pipeline_root = (root / "pipeline").resolve().as_uri()
    job = _replace_strings(job, vertex.pipeline_root.rstrip("/"), pipeline_root)
    changes.insert(0, f"pipeline root {vertex.pipeline_root} -> {pipeline_root}")
    return job, changes


def rehearsal_job(cfg: Config, root: Path) -> tuple[dict[str, Any], list[str], LocalInput | None]:
    """Compiles `cfg` as `taxifare compile` does and localizes the spec (see `localize`).

    Returns:
      (the spec to rehearse, the changes, the local input when a remote one was replaced).
    """
    from pipeline.vertex.compiler import compile_pipeline

    root.mkdir(parents=True, exist_ok=True)
    submitted = compile_pipeline(cfg, root / SUBMITTED_SPEC)
    local_input = None
    input_base = None
    if "://" in cfg.data.input:
        local_input = LocalInput(root / "data", cfg.data.pattern)
        input_base = str(local_input.folder.resolve())
    job, changes = localize(submitted, cfg, root, input_base)
    if local_input is not None:
        first = local_input.path_for(1 if local_input.has_spans else 0)
        changes[-1] += f" (the tfx sample as {first.relative_to(local_input.folder)}" + (
            ", a span more before run 2)" if local_input.has_spans else ")"
        )
    (root / REHEARSED_SPEC).write_text(json.dumps(job, indent=2, sort_keys=True))
    return job, changes, local_input


def rehearsal_tasks(job: dict[str, Any]) -> dict[str, Any]:
    """The root DAG's tasks of a compiled job."""
    return job["pipelineSpec"]["root"]["dag"]["tasks"]


def task_needs(job: dict[str, Any]) -> dict[str, set[str]]:
    """Each root DAG task's dependencies: its dependentTasks and its inputs' producers."""
    needs = {}
    for name, task in rehearsal_tasks(job).items():
        deps = set(task.get("dependentTasks", []))
        for value in task.get("inputs", {}).get("artifacts", {}).values():
            producer = value.get("taskOutputArtifact", {}).get("producerTask")
            if producer:
                deps.add(producer)
        needs[name] = deps
    return needs


def task_order(job: dict[str, Any]) -> list[str]:
    """The root DAG's tasks in an order Vertex could run them (dependencies first)."""
    needs = task_needs(job)
    order: list[str] = []
    while len(order) < len(needs):
        ready = sorted(n for n in needs if n not in order and needs[n] <= set(order))
        if not ready:
            raise RehearsalError(
                f"the spec's tasks have a cycle among {sorted(set(needs) - set(order))}"
            )
        order.append(ready[0])
    return order


# Scheduling and the estimate.


def critical_path(needs: dict[str, set[str]], seconds: dict[str, float]) -> dict[str, float]:
    """Each task's time plus the longest chain of tasks that wait for it (its priority)."""
    children: dict[str, set[str]] = {t: set() for t in needs}
    for task, deps in needs.items():
        for dep in deps:
            children.setdefault(dep, set()).add(task)
    found: dict[str, float] = {}

    def length(task: str) -> float:
        if task not in found:
            found[task] = seconds.get(task, 0.0) + max(
                (length(c) for c in children[task]), default=0.0
            )
        return found[task]

    for task in needs:
        length(task)
    return found


def run_scheduled(
    needs: dict[str, set[str]],
    work: Callable[[str], TaskResult],
    parallel: int,
    *,
    skipped: Callable[[str], TaskResult],
    priority: dict[str, float] | None = None,
    on_done: Callable[[TaskResult], None] | None = None,
) -> dict[str, TaskResult]:
    """Runs every task once its dependencies succeeded, at most `parallel` at a time.

    A task whose dependency failed (or was skipped) is not run: `skipped(task)` stands for
    it. Tasks that do not depend on the failure still run to their end. Among ready tasks,
    the highest `priority` (the longest chain behind it) starts first.

    Returns:
      Every task's result (`on_done` is called with each as it ends, in the caller's thread).
    """
    if parallel < 1:
        raise ValueError(f"parallel must be at least 1, not {parallel}")
    unknown = {d for deps in needs.values() for d in deps} - set(needs)
    if unknown:
        raise RehearsalError(f"tasks depend on tasks the spec does not have: {sorted(unknown)}")
    priority = priority or {}
    results: dict[str, TaskResult] = {}
    pending = set(needs)
    running: dict[Future, str] = {}

    def finish(result: TaskResult) -> None:
        results[result.task] = result
        if on_done is not None:
            on_done(result)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        while pending or running:
            blocked = True
            while blocked:
                blocked = False
                for task in sorted(pending):
                    if any(d in results and not results[d].succeeded for d in needs[task]):
                        pending.discard(task)
                        finish(skipped(task))
                        blocked = True
            done = {t for t, r in results.items() if r.succeeded}
            ready = sorted(
                (t for t in pending if needs[t] <= done), key=lambda t: (-priority.get(t, 0), t)
            )
            for task in ready[: parallel - len(running)]:
                pending.discard(task)
                running[pool.submit(work, task)] = task
            if not running:
                if pending:
                    raise RehearsalError(f"the spec's tasks have a cycle among {sorted(pending)}")
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                running.pop(future)
                finish(future.result())
    return results


def estimate_seconds(needs: dict[str, set[str]], seconds: dict[str, float], parallel: int) -> float:
    """The time `run_scheduled` takes when each task takes `seconds[task]`."""
    priority = critical_path(needs, seconds)
    clock = 0.0
    done: set[str] = set()
    pending = set(needs)
    running: list[tuple[float, str]] = []
    while pending or running:
        ready = sorted(
            (t for t in pending if needs[t] <= done), key=lambda t: (-priority.get(t, 0), t)
        )
        for task in ready[: parallel - len(running)]:
            pending.discard(task)
            heapq.heappush(running, (clock + seconds.get(task, 0.0), task))
        if not running:
            raise RehearsalError(f"the spec's tasks have a cycle among {sorted(pending)}")
        clock, task = heapq.heappop(running)
        done.add(task)
    return clock


def descendants(needs: dict[str, set[str]], roots: set[str]) -> set[str]:
    """`roots` and every task that depends on one of them, directly or not."""
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for task, deps in needs.items():
            if task not in found and deps & found:
                found.add(task)
                grew = True
    return found


# The emulated step cache.


def cache_key(
    pipeline: str,
    component: dict[str, Any],
    container: dict[str, Any],
    parameters: dict[str, Any],
    inputs: dict[str, list[dict[str, Any]]],
) -> str:
    """The step cache's key of a container task, in the manner of Vertex's.

    What Vertex keys on: the component (its inputs, outputs and their types), the container
    (image, command, arguments), the parameters as the task gets them (after a
    preCacheCheck), and the names of the input artifacts (an artifact a cache hit reused keeps
    its name, so hits cascade), within one pipeline name.
    """
    material = {
        "pipeline": pipeline,
        "component": component,
        "container": {k: container.get(k) for k in ("image", "command", "args")},
        "parameters": parameters,
        "inputArtifactNames": {k: [a["name"] for a in v] for k, v in sorted(inputs.items())},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class StepCache:
    """Successful executions' outputs by cache key (a JSON file in the rehearsal folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, Any] = {}
        if path.is_file():
            try:
                self._entries = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise RehearsalError(
                    f"{path}: not a step cache ({e}); delete it to start the cache afresh"
                ) from e

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, task: str, job_id: str, outputs: dict[str, Any]) -> None:
        with self._lock:
            self._entries[key] = {"task": task, "job": job_id, "outputs": outputs}
            partial = self.path.with_name(self.path.name + ".partial")
            partial.write_text(json.dumps(self._entries, indent=1, sort_keys=True))
            partial.replace(self.path)


def read_task_times(root: Path) -> dict[str, float]:
    """The latest time of each task in earlier rehearsals in `root` (empty when none)."""
    path = root / TASK_TIMES
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def write_task_times(root: Path, results: list[TaskResult]) -> None:
    """Records the time of each task that ran (not cached, not failed) for the estimate."""
    times = read_task_times(root)
    times.update({r.task: round(r.seconds, 1) for r in results if r.status == "ok"})
    (root / TASK_TIMES).write_text(json.dumps(times, indent=1, sort_keys=True))


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

    def __init__(
        self,
        job: dict[str, Any],
        root: Path,
        image_schema: tuple[str, str],
        cache: bool = True,
    ) -> None:
        self.job = job
        self.spec = job["pipelineSpec"]
        self.root = root.resolve()
        self.pipeline_root = job["runtimeConfig"]["gcsOutputDirectory"]
        self.pipeline_name = self.spec.get("pipelineInfo", {}).get("name", "")
        self.store = MetadataStore(self.root / "metadata.sqlite")
        self.image_schema = image_schema
        self.order = task_order(job)
        self.needs = task_needs(job)
        self.cache_enabled = cache
        self.cache = StepCache(self.root / STEP_CACHE)
        # ML Metadata's client is not shared between threads without it.
        self._store_lock = threading.Lock()

    def _component(self, task: str) -> dict[str, Any]:
        return self.spec["components"][
            self.spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
        ]

    def _executor(self, task: str) -> dict[str, Any]:
        label = self._component(task)["executorLabel"]
        return self.spec["deploymentSpec"]["executors"][label]

    def is_resolver(self, task: str) -> bool:
        return "resolver" in self._executor(task)

    def has_driver(self, task: str) -> bool:
        return "preCacheCheck" in self._executor(task).get("container", {}).get("lifecycle", {})

    def caches(self, task: str) -> bool:
        """Whether Vertex would look the task up in its step cache."""
        options = self.spec["root"]["dag"]["tasks"][task].get("cachingOptions", {})
        return (
            self.cache_enabled
            and not self.is_resolver(task)
            and bool(options.get("enableCache", False))
        )

    def run(
        self, run: int, printer: Any = _print, parallel: int = DEFAULT_PARALLEL
    ) -> list[TaskResult]:
        """One run of the pipeline; prints one line per task as it ends."""
        job_id = f"rehearsal-{run}-{uuid.uuid4().hex[:8]}"
        outputs: dict[str, dict[str, list[dict[str, Any]]]] = {}

        def work(task: str) -> TaskResult:
            start = time.monotonic()
            try:
                status, note, log = self._run_task(task, job_id, outputs)
                return TaskResult(run, task, status, time.monotonic() - start, note, log)
            except _TaskFailedError as e:
                return TaskResult(run, task, "failed", time.monotonic() - start, str(e), e.log)

        def skipped(task: str) -> TaskResult:
            return TaskResult(run, task, "skipped", 0.0, "an upstream task failed")

        def done(result: TaskResult) -> None:
            printer(
                f"  run {run}  {result.task:<48} {result.status:<7} {result.seconds:6.0f}s"
                f"  {result.note}"
            )

        times = read_task_times(self.root)
        seconds = {t: times.get(t, DEFAULT_TASK_SECONDS) for t in self.needs}
        results = run_scheduled(
            self.needs,
            work,
            parallel,
            skipped=skipped,
            priority=critical_path(self.needs, seconds),
            on_done=done,
        )
        ordered = [results[t] for t in self.order]
        write_task_times(self.root, ordered)
        return ordered

    def estimate(self, runs: list[bool], parallel: int) -> tuple[list[float], str]:
        """Seconds per run (`runs[i]`: run i+1 meets unchanged data), and where times came from.

        A run on unchanged data re-runs the resolvers and the tasks that read them (the
        Evaluator, the Pusher); the others are cache hits (their preCacheCheck still runs).
        """
        times = read_task_times(self.root)
        seconds = {t: times.get(t, DEFAULT_TASK_SECONDS) for t in self.needs}
        for task in self.needs:
            if self.is_resolver(task):
                seconds[task] = RESOLVER_SECONDS
        rerun = descendants(self.needs, {t for t in self.needs if self.is_resolver(t)})
        cached = {
            t: seconds[t]
            if t in rerun or not self.caches(t)
            else (DRIVER_SECONDS if self.has_driver(t) else 0.0)
            for t in self.needs
        }
        estimates = [
            estimate_seconds(self.needs, cached if unchanged else seconds, parallel)
            for unchanged in runs
        ]
        known = len(set(times) & set(self.needs))
        if known == len(self.needs):
            source = "each task's time in the previous rehearsal in this folder"
        elif known:
            source = (
                f"{known} task times of the previous rehearsal in this folder,"
                f" {DEFAULT_TASK_SECONDS:.0f} s for the others"
            )
        else:
            source = f"{DEFAULT_TASK_SECONDS:.0f} s per task (no earlier rehearsal here)"
        return estimates, source

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

    def _run_task(self, task: str, job_id: str, outputs: dict) -> tuple[str, str, str]:
        executor = self._executor(task)
        inputs = self._inputs(task, outputs)
        if "resolver" in executor:
            note = self._resolve(task, executor["resolver"], inputs, outputs)
            return "ok", note, ""
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
        parameters = self._parameters(task)
        executor_input = {
            "inputs": {
                "artifacts": {k: {"artifacts": v} for k, v in inputs.items() if v},
                "parameters": parameters,
            },
            "outputs": {
                "artifacts": {k: {"artifacts": v} for k, v in planned.items()},
                "outputFile": f"{task_dir}/{_OUTPUT_FILE}",
            },
        }
        container = executor["container"]
        log = self.root / "logs" / job_id / f"{task}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.root / "scratch" / job_id / task
        scratch.mkdir(parents=True, exist_ok=True)
        driver = container.get("lifecycle", {}).get("preCacheCheck")
        if driver:
            # Vertex runs it before the cache lookup and hands what it writes on to both.
            self._run_container(driver, executor_input, log, scratch)
            self._apply_driver_output(task_dir, parameters, planned)
        key = None
        if self.caches(task):
            key = cache_key(
                self.pipeline_name, self._component(task), container, parameters, inputs
            )
            hit = self.cache.get(key)
            if hit is not None:
                outputs[task] = hit["outputs"]
                note = self._note(task, hit["outputs"])
                return "cached", f"outputs of {hit['job']}" + (f"; {note}" if note else ""), ""
        self._run_container(container, executor_input, log, scratch)
        produced = self._read_output(task_dir, planned)
        outputs[task] = produced
        with self._store_lock:
            for name, artifacts in produced.items():
                for artifact in artifacts:
                    self.store.record(_title(definitions[name]["artifactType"]), artifact)
        if key is not None:
            self.cache.put(key, task, job_id, produced)
        return "ok", self._note(task, produced), str(log)

    def _apply_driver_output(self, task_dir: str, parameters: dict, planned: dict) -> None:
        """Hands a preCacheCheck's ExecutorOutput on, as Vertex updates the task with it.

        ExampleGen's driver writes the span, version and input fingerprint it resolved and the
        input config with the span's pattern (parameters), and the examples artifact with
        those as properties.
        """
        from tfx.dsl.io import fileio

        path = f"{task_dir}/{_OUTPUT_FILE}"
        if not fileio.exists(path):
            raise _TaskFailedError(f"the preCacheCheck wrote no {_OUTPUT_FILE}", "")
        with fileio.open(path, "r") as fh:
            written = json.loads(fh.read())
        fileio.remove(path)  # the executor writes its own
        for name, value in written.get("parameterValues", {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                parameters[name] = {"stringValue": json.dumps(value)}
            elif isinstance(value, str):
                parameters[name] = {"stringValue": value}
            elif float(value).is_integer():
                parameters[name] = {"intValue": int(value)}
            else:
                parameters[name] = {"doubleValue": value}
        for name, artifacts in written.get("artifacts", {}).items():
            given = (artifacts.get("artifacts") or [{}])[0]
            if name in planned and given.get("metadata"):
                planned[name][0]["metadata"] = dict(given["metadata"])

    def _run_container(self, step: dict, executor_input: dict, log: Path, scratch: Path) -> None:
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

    def _resolve(self, task: str, resolver: dict, inputs: dict, outputs: dict) -> str:
        definitions = self._component(task).get("outputDefinitions", {}).get("artifacts", {})
        produced = {}
        notes = []
        for key, query in resolver.get("outputArtifactQueries", {}).items():
            text = _substitute(query["filter"], inputs)
            with self._store_lock:
                found = None if text is None else self.store.query(text)
            if found is None:
                produced[key] = []
                notes.append(f"{key}: none yet")
            else:
                found.pop("_type", None)
                produced[key] = [{**found, "type": definitions[key]["artifactType"]}]
                notes.append(f"{key}: {found['uri']}")
        outputs[task] = produced
        return "; ".join(notes)

    @staticmethod
    def _note(task: str, produced: dict) -> str:
        def meta(key: str) -> dict[str, Any]:
            artifacts = produced.get(key) or [{}]
            return artifacts[0].get("metadata") or {}

        def number(m: dict[str, Any], key: str) -> int | None:
            # TFX writes a custom property that shadows a declared one as "custom:<key>".
            value = m.get(key, m.get(f"custom:{key}"))
            return None if value is None else int(float(value))

        if "examples" in produced and number(meta("examples"), "span") is not None:
            return f"span {number(meta('examples'), 'span')}"
        if "verdict" in produced:
            m = meta("verdict")
            note = f"{m.get('check', '')} verdict: {m.get('verdict', '?')} ({m.get('note', '')})"
            if number(m, "span") is not None:
                note += f"; span {number(m, 'span')}" + (
                    f" compared with span {number(m, 'baseline_span')}"
                    if number(m, "baseline_span") is not None
                    else " not compared"
                )
            if m.get("previous_verdict"):
                note += f"; previous verdict {m['previous_verdict']}"
            return note
        if "blessing" in produced:
            return "blessed" if meta("blessing").get("blessed") == 1 else "not blessed"
        if "pushed_model" in produced:
            m = meta("pushed_model")
            if m.get("pushed") == 1:
                return f"pushed to {m.get('pushed_destination')}"
            serving = m.get("already_serving", m.get("custom:already_serving"))
            return f"not pushed: already serving {serving}" if serving else "not pushed"
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


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def rehearse(
    cfg: Config,
    root: Path,
    runs: int = DEFAULT_RUNS,
    printer: Any = _print,
    parallel: int = DEFAULT_PARALLEL,
) -> bool:
    """Compiles and rehearses the Vertex pipeline `runs` times; True when every task ran.

    With a remote input and a `{SPAN}` pattern, run 1 reads the first span (made when the
    folder has none), a new span arrives before run 2, and later runs meet unchanged data.
    """
    from pipeline.vertex.stand_ins import StandInVertex

    if parallel < 1:
        raise ValueError(f"parallel must be at least 1, not {parallel}")
    root.mkdir(parents=True, exist_ok=True)
    job, changes, local_input = rehearsal_job(cfg, root)
    cache = bool(cfg.orchestrator.enable_cache)
    rehearsal = Rehearsal(job, root, image_schema_paths(), cache=cache)
    printer(
        f"taxifare: rehearsing '{cfg.name}' ({len(rehearsal_tasks(job))} tasks,"
        f" {runs} runs, {parallel} at a time) in {root}"
    )
    for change in changes:
        printer(f"  for this machine: {change}")
    # Which runs meet new data: the first span when there is none, a new one before run 2.
    new_span = [False] * (runs + 1)
    if local_input is not None:
        new_span[1] = not local_input.spans()
        if local_input.has_spans and runs >= 2:
            new_span[2] = True
    # A run on unchanged data after an earlier one is mostly cache hits.
    earlier = (root / STEP_CACHE).is_file()
    unchanged = [cache and not new_span[r] and (r > 1 or earlier) for r in range(1, runs + 1)]
    estimates, source = rehearsal.estimate(unchanged, parallel)
    printer(
        f"  estimate: about {_minutes(sum(estimates))} ("
        + ", ".join(f"run {i + 1} {_minutes(s)}" for i, s in enumerate(estimates))
        + f"; from {source})"
    )
    ok = True
    started = time.monotonic()
    for run in range(1, runs + 1):
        if new_span[run]:
            span = local_input.add_span()
            printer(f"  run {run}: new input {local_input.path_for(span)}")
        run_start = time.monotonic()
        results = rehearsal.run(run, printer, parallel)
        cached = sum(r.status == "cached" for r in results)
        printer(
            f"  run {run}: {time.monotonic() - run_start:.0f} s, {cached} of {len(results)}"
            " tasks cached"
        )
        ok = ok and all(r.succeeded for r in results)
        if not ok:
            break
    vertex = StandInVertex(str(root / "endpoint.json"))
    endpoint = vertex.load()
    if endpoint is not None:
        printer(
            f"  stand-in endpoint {endpoint.display_name}: deployed models"
            f" {sorted(m.id for m in endpoint.deployed_models)},"
            f" traffic {dict(endpoint.traffic_split)}; in all"
            f" {len(vertex.calls('UploadModel'))} uploads,"
            f" {len(vertex.calls('DeployModel'))} deploys"
        )
    printer("  not rehearsed: " + "; ".join(NOT_REHEARSED))
    printer(
        f"taxifare: rehearsal passed in {_minutes(time.monotonic() - started)}: every task ran"
        if ok
        else "taxifare: rehearsal FAILED: see the failed task's line and log above"
    )
    return ok
