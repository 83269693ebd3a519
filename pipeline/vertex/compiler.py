"""Compiles the taxifare pipeline into a Vertex AI Pipelines job spec (KFP IR JSON)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline import dag
from pipeline.config import BIGQUERY, Config, VertexConfig
from pipeline.data_source import resolve_input
from pipeline.vertex.spec_checks import check_spec


class VertexConfigMissingError(ValueError):
    """The config has no `vertex` section, so there is nothing to compile or submit."""


def require_vertex(cfg: Config, source: str = "the config") -> VertexConfig:
    """The `vertex` section; VertexConfigMissingError naming `source` when there is none."""
    if cfg.vertex is None:
        raise VertexConfigMissingError(
            f"{source} has no `vertex` section (project, region, pipeline_root, image);"
            " see configs/vertex.yaml"
        )
    return cfg.vertex


def resolver_scope(pipeline_root: str) -> str:
    """The clause that keeps a resolver query to the artifacts under `pipeline_root`.

    Vertex AI Pipelines writes every artifact of a run under
    <pipeline_root>/<project number>/<job id>/, and its metadata filters take a trailing `*`
    on a string field: with a pipeline root of its own per pipeline (each shipped config has
    one), this is the pipeline's own lineage.
    """
    return f'uri="{pipeline_root.rstrip("/")}/*"'


def scope_resolver_queries(job: dict[str, Any], pipeline_root: str) -> None:
    """Adds resolver_scope to every resolver query of the compiled `job`, in place.

    TFX compiles the latest-blessed-model Resolver into queries over the whole regional
    metadata store (`schema_title="tfx.ModelBlessing" AND state=LIVE AND ...`): any other
    pipeline's blessed model in the project would become this one's Evaluator baseline and
    the model SkewCheck treats as served.
    """
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    for executor in executors.values():
        for query in executor.get("resolver", {}).get("outputArtifactQueries", {}).values():
            query["filter"] = f"{query['filter']} AND {resolver_scope(pipeline_root)}"


def uncache_relative_month(job: dict[str, Any], cfg: Config) -> None:
    """Turns Vertex's step cache off for ExampleGen when data.bigquery.month is `previous`.

    Its query and parameters are the same on every run (the month is resolved when it
    runs), so Vertex would serve every later run the first month's examples from its cache.
    Each run's new examples then make every later step's inputs new too.
    """
    from pipeline import bigquery

    if cfg.data.input != BIGQUERY or not bigquery.is_relative_month(cfg.data.bigquery):
        return
    task = job["pipelineSpec"]["root"]["dag"]["tasks"][dag.EXAMPLE_GEN_ID]
    task["cachingOptions"] = {"enableCache": False}


def compile_pipeline(cfg: Config, output: str | os.PathLike[str]) -> dict[str, Any]:
    """Writes the pipeline job spec of `create_pipeline(cfg)` for Vertex AI Pipelines.

    Every component runs in `vertex.image`; TFX's KubeflowV2DagRunner turns the same DAG the
    local runs use into the PipelineJob JSON that `aiplatform.PipelineJob` submits. The spec
    is checked (spec_checks.check_spec) before it replaces `output`.

    Args:
      cfg: a config with a `vertex` section.
      output: the JSON file to write (its folder is created).

    Returns:
      The compiled PipelineJob as a dict (what the file holds).

    Raises:
      SpecCheckError: the spec would fail on Vertex (nothing is written).
    """
    vertex = require_vertex(cfg)
    from tfx import v1 as tfx

    pipeline = dag.create_pipeline(cfg, resolve_input(cfg))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target first: a spec that fails its checks replaces nothing.
    partial = output.with_name(output.name + ".partial")
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            display_name=cfg.name, default_image=vertex.image
        ),
        output_dir=str(partial.parent),
        output_filename=partial.name,
    )
    try:
        runner.run(pipeline, write_out=True)
        # The file, not the runner's return value, is what gets submitted: read it back.
        job = json.loads(partial.read_text())
        scope_resolver_queries(job, vertex.pipeline_root)
        uncache_relative_month(job, cfg)
        partial.write_text(json.dumps(job, indent=2, sort_keys=True))
        check_spec(job)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    return job
