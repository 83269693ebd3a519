"""Compiles the taxifare pipeline into a Vertex AI Pipelines job spec (KFP IR JSON)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline import dag
from pipeline.config import Config, VertexConfig
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
        check_spec(job)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    return job
