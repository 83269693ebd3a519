"""Checks of a compiled Vertex pipeline spec that Vertex itself would only fail at run time.

`taxifare compile` runs them on the spec it wrote and fails, naming each problem, before
anything is submitted (and paid for):

- every artifact type the spec names that is not one of TFX's or Vertex's own must import in
  the image's package by that name (TFX's Vertex entrypoint imports it to run a step);
- every resolver query must ask for the type its producers record (for a custom type the
  compiler writes `schema_title="tfx.Artifact"`, which never matches, so the resolver finds
  nothing on every run), and be scoped to the pipeline root (compiler.resolver_scope);
- the Trainer's worker pools must ask for GPUs their machine types have.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from pipeline.vertex import scale_tiers

# KFP's own types (never imported by TFX's entrypoint).
_KFP_PREFIXES = ("system.", "google.")
_TITLE_PATTERN = re.compile(r"^title:\s*(\S+)\s*$", re.M)
_QUERY_TITLE_PATTERN = re.compile(r'schema_title="([^"]+)"')
# The Trainer's custom_config key of its Vertex training job (TFX's TRAINING_ARGS_KEY).
_TRAINING_ARGS_KEY = "ai_platform_training_args"


class SpecCheckError(ValueError):
    """The compiled spec would fail on Vertex; the message lists every problem found."""


def artifact_title(artifact_type: dict[str, Any]) -> str:
    """The type title Vertex records an artifact of this `artifactType` under."""
    if "schemaTitle" in artifact_type:
        return artifact_type["schemaTitle"]
    match = _TITLE_PATTERN.search(artifact_type.get("instanceSchema", ""))
    return match.group(1) if match else ""


def _pipeline_spec(job: dict[str, Any]) -> dict[str, Any]:
    return job.get("pipelineSpec", job)


def _output_types(component: dict[str, Any]) -> dict[str, str]:
    artifacts = component.get("outputDefinitions", {}).get("artifacts", {})
    return {key: artifact_title(value["artifactType"]) for key, value in artifacts.items()}


def _all_artifact_types(spec: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(component name, title) of every input and output artifact type in the spec."""
    for name, component in spec.get("components", {}).items():
        for side in ("inputDefinitions", "outputDefinitions"):
            for value in component.get(side, {}).get("artifacts", {}).values():
                yield name, artifact_title(value["artifactType"])


def check_artifact_types(job: dict[str, Any]) -> list[str]:
    """Problems with the custom artifact types: each must import by its title."""
    from tfx.orchestration.kubeflow.v2 import compiler_utils
    from tfx.types.artifact import Artifact
    from tfx.utils import import_utils

    problems = []
    seen: set[str] = set()
    for component, title in _all_artifact_types(_pipeline_spec(job)):
        if title in seen or title.startswith(_KFP_PREFIXES):
            continue
        seen.add(title)
        # As the entrypoint finds the class: TFX's own titles by its table, others by name.
        path = compiler_utils.TITLE_TO_CLASS_PATH.get(title, title)
        try:
            cls = import_utils.import_class_by_path(path)
        except (ImportError, AttributeError, ValueError) as e:
            problems.append(
                f"{component}: artifact type {title!r} does not import in this package ({e});"
                " TFX's Vertex entrypoint imports a custom type by that name"
            )
            continue
        if not (isinstance(cls, type) and issubclass(cls, Artifact)):
            problems.append(f"{component}: artifact type {title!r} is not a TFX Artifact class")
        elif path == title and cls.TYPE_NAME != title:
            problems.append(
                f"{component}: artifact type {title!r} imports a class whose TYPE_NAME is"
                f" {cls.TYPE_NAME!r}"
            )
    return problems


def check_resolver_queries(job: dict[str, Any]) -> list[str]:
    """Problems with the resolver queries: each must ask for the type producers record."""
    spec = _pipeline_spec(job)
    components = spec.get("components", {})
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    produced: dict[str, list[str]] = {}
    resolvers: dict[str, dict[str, Any]] = {}
    for name, component in components.items():
        executor = executors.get(component.get("executorLabel", ""), {})
        if "resolver" in executor:
            resolvers[name] = executor["resolver"]
            continue
        for title in _output_types(component).values():
            produced.setdefault(title, []).append(name)
    problems = []
    for name, resolver in sorted(resolvers.items()):
        declared = _output_types(components[name])
        for key, query in sorted(resolver.get("outputArtifactQueries", {}).items()):
            match = _QUERY_TITLE_PATTERN.search(query.get("filter", ""))
            asked = match.group(1) if match else None
            wanted = declared.get(key, "")
            if asked != wanted:
                problems.append(
                    f"{name}: the query for {key!r} asks for schema_title={asked!r}, but"
                    f" artifacts of its type are recorded as {wanted!r}: it would never find"
                    " one (a Resolver over a custom type cannot work on Vertex)"
                )
            elif "uri=" not in query.get("filter", ""):
                problems.append(
                    f"{name}: the query for {key!r} is not scoped to the pipeline root: it"
                    " would take another pipeline's artifacts in the project (see"
                    " compiler.scope_resolver_queries)"
                )
            elif wanted not in produced:
                problems.append(
                    f"{name}: the query for {key!r} asks for {wanted!r}, which no step of"
                    " this pipeline produces"
                )
    return problems


def _trainer_pools(job: dict[str, Any]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(task name, worker pools) of every task whose custom_config has a training job."""
    tasks = _pipeline_spec(job).get("root", {}).get("dag", {}).get("tasks", {})
    for name, task in tasks.items():
        parameters = task.get("inputs", {}).get("parameters", {})
        value = parameters.get("custom_config", {}).get("runtimeValue", {}).get("constantValue")
        if not value:
            continue
        text = value.get("stringValue") if isinstance(value, dict) else value
        try:
            custom_config = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            continue
        if not isinstance(custom_config, dict) or _TRAINING_ARGS_KEY not in custom_config:
            continue
        job_spec = custom_config[_TRAINING_ARGS_KEY].get("job_spec", {})
        yield name, list(job_spec.get("worker_pool_specs", []))


def check_worker_pools(job: dict[str, Any]) -> list[str]:
    """Problems with the Trainer's machines: GPU type and count valid for the machine type."""
    problems = []
    for task, pools in _trainer_pools(job):
        for i, pool in enumerate(pools):
            machine = pool.get("machine_spec", {})
            try:
                scale_tiers.check_machine(
                    machine.get("machine_type", ""),
                    machine.get("accelerator_type"),
                    f"{task} worker_pool_specs[{i}]: ",
                    int(machine.get("accelerator_count") or 0),
                )
            except ValueError as e:
                problems.append(str(e))
    return problems


def check_spec(job: dict[str, Any]) -> None:
    """Raises SpecCheckError listing every problem of a compiled PipelineJob (or its spec)."""
    problems = check_artifact_types(job) + check_resolver_queries(job) + check_worker_pools(job)
    if problems:
        raise SpecCheckError(
            "the compiled pipeline would fail on Vertex:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
