"""Runs the pipeline on this machine with TFX's Beam or local orchestrator."""

from __future__ import annotations

import dataclasses
import logging
import os
import time

from pipeline import dag
from pipeline.config import Config
from pipeline.data_source import resolve_input
from pipeline.mlmd_run import NodeExecution, latest_run_context, open_store, read_run
from pipeline.progress import attach_progress, detach_progress

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class RunOutcome:
    """What a local run produced: its executions by node, the error if it failed, its time."""

    nodes: dict[str, NodeExecution]
    error: BaseException | None
    seconds: float


def _make_runner(cfg: Config):
    if cfg.orchestrator.runner == "local":
        from tfx.orchestration.local.local_dag_runner import LocalDagRunner

        return LocalDagRunner()
    from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

    return BeamDagRunner()


def run_local(cfg: Config, until: str | None = None) -> RunOutcome:
    """Runs the pipeline (or its head up to node `until`) and reads the run back from MLMD.

    A failing component does not raise here: the outcome carries the error and the
    executions MLMD recorded, so the caller can say what stopped the run.
    """
    data_root = resolve_input(cfg)
    os.makedirs(cfg.root, exist_ok=True)
    pipeline = dag.create_pipeline(cfg, data_root, until=until)
    runner = _make_runner(cfg)
    started_ms = int(time.time() * 1000)
    start = time.monotonic()
    progress = attach_progress()
    error: BaseException | None = None
    try:
        runner.run(pipeline)
    except Exception as e:  # a component failed; MLMD says which, the caller reports it
        error = e
    finally:
        detach_progress(progress)
    seconds = time.monotonic() - start
    nodes: dict[str, NodeExecution] = {}
    if os.path.exists(cfg.metadata_path):
        store = open_store(cfg.metadata_path)
        run = latest_run_context(store, cfg.name, since_ms=started_ms - 1000)
        if run is not None:
            nodes = read_run(store, run)
    return RunOutcome(nodes=nodes, error=error, seconds=seconds)
