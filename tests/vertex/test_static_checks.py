"""The compile step's own checks: GPUs a machine type has, importable artifact types, and
resolver queries that can find what their producers record."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.vertex import scale_tiers, spec_checks
from pipeline.vertex.compiler import compile_pipeline

REPO = Path(__file__).resolve().parents[2]
VERTEX = REPO / "configs" / "vertex.yaml"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # The tier's default of 4 GPUs cannot be asked of a machine that has 2.
        (
            [
                "vertex.training.tier=multi-gpu",
                "vertex.training.machine_type=g2-standard-24",
                "vertex.training.accelerator_count=4",
            ],
            "g2-standard-24 comes with exactly 2 NVIDIA_L4",
        ),
        (
            [
                "vertex.training.tier=multi-gpu",
                "vertex.training.machine_type=a2-highgpu-8g",
                "vertex.training.accelerator_count=2",
            ],
            "a2-highgpu-8g comes with exactly 8 NVIDIA_TESLA_A100",
        ),
        (
            [
                "vertex.training.tier=multi-gpu",
                "vertex.training.machine_type=a3-highgpu-8g",
                "vertex.training.accelerator_type=NVIDIA_H100_80GB",
                "vertex.training.accelerator_count=4",
            ],
            "machine types with 4: a3-highgpu-4g",
        ),
        (
            ["vertex.training.machine_type=g2-standard-24"],
            "tier basic-gpu has one GPU; use multi-gpu",
        ),
        (
            ["vertex.training.tier=multi-gpu", "vertex.training.machine_type=a3-highgpu-1g"],
            "tier multi-gpu has several GPUs",
        ),
        (
            ["vertex.training.tier=multi-gpu", "vertex.training.accelerator_count=3"],
            "an N1 machine takes 1, 2, 4 NVIDIA_TESLA_T4",
        ),
        (
            [
                "vertex.training.machine_type=n1-standard-16",
                "vertex.training.accelerator_type=NVIDIA_TESLA_V100",
            ],
            "has 16 vCPUs: 1 NVIDIA_TESLA_V100 attach to an N1 machine of at most 12 vCPUs",
        ),
        (
            [
                "vertex.training.tier=multi-gpu",
                "vertex.training.machine_type=a2-highgpu-3g",
            ],
            "not a GPU machine type Vertex AI Training offers",
        ),
        (
            [
                "vertex.training.tier=custom",
                "vertex.training.worker_pool_specs=[{machine_spec: {machine_type: a2-highgpu-2g,"
                " accelerator_type: NVIDIA_TESLA_A100, accelerator_count: 4}}]",
            ],
            "worker_pool_specs[0].machine_spec: machine_type a2-highgpu-2g comes with exactly 2",
        ),
    ],
)
def test_impossible_gpu_counts_are_rejected_when_the_config_loads(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(VERTEX, overrides)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("tier", "machine", "expected"),
    [
        ("multi-gpu", "g2-standard-24", ("NVIDIA_L4", 2)),
        ("multi-gpu", "a2-highgpu-8g", ("NVIDIA_TESLA_A100", 8)),
        ("multi-gpu", "a3-highgpu-8g", ("NVIDIA_H100_80GB", 8)),
        ("basic-gpu", "g2-standard-8", ("NVIDIA_L4", 1)),
        ("multi-worker", "a2-ultragpu-1g", ("NVIDIA_A100_80GB", 1)),
    ],
)
def test_a_machine_with_its_own_gpus_gets_their_type_and_count(tier, machine, expected):
    cfg = load_config(
        VERTEX, [f"vertex.training.tier={tier}", f"vertex.training.machine_type={machine}"]
    )
    shape = cfg.vertex.training.shape()
    assert (shape.accelerator_type, shape.accelerator_count) == expected


def test_every_default_tier_asks_what_its_machines_have():
    for tier, shape in scale_tiers.DEFAULT_SHAPES.items():
        scale_tiers.check_machine(
            shape.machine_type, shape.accelerator_type, f"{tier}: ", shape.accelerator_count
        )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("spec") / "spec.json"
    return compile_pipeline(load_config(VERTEX), out)


def test_the_compiled_spec_passes_its_checks(compiled):
    spec_checks.check_spec(compiled)
    titles = {t for _, t in spec_checks._all_artifact_types(compiled["pipelineSpec"])}
    assert {"pipeline.DriftVerdict", "tfx.Model"} <= titles


def test_a_custom_type_that_does_not_import_is_rejected(compiled):
    job = copy.deepcopy(compiled)
    outputs = job["pipelineSpec"]["components"]["DriftCheck"]["outputDefinitions"]
    outputs["artifacts"]["verdict"]["artifactType"]["instanceSchema"] = (
        "title: taxifare.DriftVerdict\ntype: object\n"
    )
    problems = spec_checks.check_artifact_types(job)
    assert len(problems) == 1
    assert "DriftCheck: artifact type 'taxifare.DriftVerdict' does not import" in problems[0]
    with pytest.raises(spec_checks.SpecCheckError, match="taxifare.DriftVerdict"):
        spec_checks.check_spec(job)


def test_a_resolver_over_a_custom_type_is_rejected(tmp_path):
    """The wiring that found no drift baseline on Vertex, compiled by TFX itself."""
    from tfx.dsl.components.common.resolver import Resolver
    from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import (
        LatestArtifactStrategy,
    )
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner
    from tfx.orchestration.pipeline import Pipeline
    from tfx.types import Channel

    from pipeline.components.monitoring import DriftVerdict, MonitoringGate

    resolver = Resolver(
        strategy_class=LatestArtifactStrategy, previous=Channel(type=DriftVerdict)
    ).with_id("LatestDriftVerdictResolver")
    gate = MonitoringGate(
        drift=resolver.outputs["previous"], stop_on_drift=1, stop_on_skew=0
    ).with_id("MonitoringGate")
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image="img:1"),
        output_dir=str(tmp_path),
        output_filename="spec.json",
    )
    runner.run(
        Pipeline(pipeline_name="p", pipeline_root="gs://b/p", components=[resolver, gate]),
        write_out=True,
    )
    job = json.loads((tmp_path / "spec.json").read_text())
    problems = spec_checks.check_resolver_queries(job)
    assert problems == [
        "LatestDriftVerdictResolver: the query for 'previous' asks for"
        " schema_title='tfx.Artifact', but artifacts of its type are recorded as"
        " 'pipeline.DriftVerdict': it would never find one (a Resolver over a custom type"
        " cannot work on Vertex)"
    ]


def test_compile_fails_on_impossible_pools_and_writes_nothing(tmp_path):
    cfg = load_config(VERTEX, ["vertex.training.tier=multi-gpu"])
    # A shape the config's own check would refuse, built past it: the spec check still does.
    training = cfg.vertex.training.model_copy(
        update={"machine_type": "g2-standard-24", "accelerator_type": "NVIDIA_L4"}
    )
    bad = cfg.model_copy(update={"vertex": cfg.vertex.model_copy(update={"training": training})})
    bad_shape = scale_tiers.TierShape("g2-standard-24", "NVIDIA_L4", 4, 0)
    original = scale_tiers.resolve_shape
    try:
        scale_tiers.resolve_shape = lambda *a, **k: bad_shape
        out = tmp_path / "spec.json"
        with pytest.raises(spec_checks.SpecCheckError) as e:
            compile_pipeline(bad, out)
    finally:
        scale_tiers.resolve_shape = original
    assert "Trainer worker_pool_specs[0]: machine_type g2-standard-24 comes with exactly 2" in str(
        e.value
    )
    assert list(tmp_path.iterdir()) == []
