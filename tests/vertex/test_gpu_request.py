"""GPUs requested, GPUs used: a Trainer replica whose Vertex worker pool asks for GPUs and
sees none stops with a clear message; configs/vertex.yaml asks for one T4 in all.

This machine has no GPU, so it is the replica that sees none. Not run here: a GPU VM.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tfx.components.trainer.fn_args_utils import FnArgs

from pipeline import dag
from pipeline.config import ConfigError, load_config
from pipeline.vertex import component_config
from taxifare_modules import trainer

REPO = Path(__file__).resolve().parents[2]
VERTEX = REPO / "configs" / "vertex.yaml"


def _trainer_custom_config(overrides: list[str]) -> dict:
    """The Trainer's custom_config as the compiled Vertex pipeline hands it to run_fn."""
    cfg = load_config(VERTEX, overrides)
    pipeline = dag.create_pipeline(cfg, cfg.data.input)
    (node,) = [c for c in pipeline.components if c.id == dag.TRAINER_ID]
    return json.loads(node.exec_properties["custom_config"])


def _cluster_spec(pool: int) -> str:
    return json.dumps({"task": {"type": f"workerpool{pool}", "index": 0}})


def test_a_gpu_trainer_that_sees_no_gpu_stops_with_the_reason(monkeypatch):
    monkeypatch.delenv("CLUSTER_SPEC", raising=False)
    monkeypatch.delenv(trainer.GPU_STAND_IN_ENV, raising=False)
    config = _trainer_custom_config(["vertex.training.tier=basic-gpu"])
    # run_fn checks before it reads any data: no data is given.
    with pytest.raises(trainer.AcceleratorMissingError) as e:
        trainer.run_fn(FnArgs(custom_config=config))
    assert str(e.value).startswith(
        "the Vertex AI training job's worker pool asked for 1 x NVIDIA_TESLA_T4 but TensorFlow"
        " sees 0 GPU(s)"
    )
    assert "billed" in str(e.value)


def test_each_replica_reads_its_own_pool():
    multi = _trainer_custom_config(
        [
            "vertex.training.tier=custom",
            'vertex.training.worker_pool_specs=[{"machine_spec": {"machine_type":'
            ' "n1-standard-8", "accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 2},'
            ' "replica_count": 1}, {"machine_spec": {"machine_type": "n1-standard-8"},'
            ' "replica_count": 2}]',
        ]
    )
    assert trainer.requested_gpus(multi, _cluster_spec(0)) == ("NVIDIA_TESLA_T4", 2)
    assert trainer.requested_gpus(multi, None) == ("NVIDIA_TESLA_T4", 2)
    assert trainer.requested_gpus(multi, _cluster_spec(1)) == (None, 0)
    # A CPU worker needs none; the chief asked for two and sees one.
    trainer.check_requested_gpus(multi, 0, _cluster_spec(1))
    with pytest.raises(trainer.AcceleratorMissingError, match="asked for 2 x NVIDIA_TESLA_T4"):
        trainer.check_requested_gpus(multi, 1, _cluster_spec(0))
    trainer.check_requested_gpus(multi, 2, _cluster_spec(0))


def test_cpu_tiers_and_local_runs_are_not_checked():
    assert trainer.requested_gpus(_trainer_custom_config(["vertex.training.tier=basic"]), None) == (
        None,
        0,
    )
    local = dag.trainer_custom_config(load_config(REPO / "configs" / "local.yaml"))
    assert trainer.requested_gpus(local, None) == (None, 0)
    trainer.check_requested_gpus(local, 0, None)


def test_the_rehearsal_stand_in_says_it_stands_in(monkeypatch):
    config = _trainer_custom_config(["vertex.training.tier=basic-gpu"])
    monkeypatch.setenv(trainer.GPU_STAND_IN_ENV, "1")
    trainer.check_requested_gpus(config, 0, None)


def test_the_shipped_vertex_config_asks_for_one_gpu_in_all():
    cfg = load_config(VERTEX)
    assert cfg.tuning.enabled and cfg.tuning.parallel_trials == 4
    trainer_pools = component_config.worker_pool_specs(cfg.vertex)
    tuner_pools = component_config.tuning_job_args(cfg.vertex, cfg.tuning.parallel_trials)[
        "job_spec"
    ]["worker_pool_specs"]
    gpus = sum(
        int(p["machine_spec"].get("accelerator_count") or 0) * p["replica_count"]
        for p in trainer_pools + tuner_pools
    )
    assert gpus == 1
    assert [p["machine_spec"] for p in tuner_pools] == [{"machine_type": "n1-standard-8"}] * 2
    assert [p["replica_count"] for p in tuner_pools] == [1, 3]


def test_a_gpu_machine_cannot_be_the_cpu_tuning_machine():
    with pytest.raises(ConfigError, match="vertex.tuning_machine_type"):
        load_config(VERTEX, ["vertex.tuning_machine_type=a2-highgpu-1g"])
