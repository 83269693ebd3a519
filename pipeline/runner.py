"""Runs the pipeline on this machine with TFX's Beam or local orchestrator.

The caller holds the root's run lock (pipeline.root_lock) around `run_local`: with it, an
execution MLMD still shows RUNNING belongs to a run that died, and a push record left beside
the serving directory belongs to a push that did not finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator

from tfx.dsl.compiler import constants as compiler_constants
from tfx.dsl.compiler.compiler import Compiler
from tfx.orchestration.portable.runtime_parameter_utils import substitute_runtime_parameter

from pipeline import dag
from pipeline.anomalies import DataFaultError
from pipeline.components.atomic_pusher import reconcile_pushes
from pipeline.config import Config
from pipeline.data_source import describe_direct_mode
from pipeline.mlmd_run import (
    NodeExecution,
    abandon_unfinished,
    open_store,
    read_run,
    run_context,
)
from pipeline.mlmd_store import backup_store, check_store
from pipeline.progress import attach_progress, detach_progress
from pipeline.run_plan import RunPlan

_LOG = logging.getLogger(__name__)
# The loggers whose warnings a person sees during a quiet run; all others go to the log file.
_OWN_LOGGERS = ("pipeline", "taxifare_modules")
# Beam appends where a DoFn failed to the message of the error it re-raises.
_BEAM_SUFFIX = re.compile(r"\s*\[while running '[^']*'\]\s*$")
_BEAM_NODE = re.compile(r"\[while running 'Run\[([^\]]+)\]'\]")


@dataclasses.dataclass
class RunOutcome:
    """What a local run produced: its executions by node, the error if it failed, its time."""

    run_id: str
    nodes: dict[str, NodeExecution]
    error: BaseException | None
    seconds: float
    log_path: str | None = None


def new_run_id() -> str:
    """A pipeline run id: UTC start time, pid and a random tag (unique across processes)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def log_path_of(cfg: Config, run_id: str) -> str:
    """The full log of a run: every library's records and the traceback of a failure."""
    return os.path.join(cfg.root, "runs", run_id, "run.log")


def error_cause(error: BaseException) -> str:
    """The cause of a failed run in one line (Beam's wrapping and the traceback left out)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    cause = _BEAM_SUFFIX.sub("", lines[-1]) if lines else ""
    return cause or type(error).__name__


def _fault_classes(base: type) -> set[str]:
    names = set()
    for sub in base.__subclasses__():
        names |= {sub.__name__} | _fault_classes(sub)
    return names


def data_fault_of(error: BaseException | None) -> str | None:
    """The message of the bad-data stop (a DataFaultError) behind a failed run, if it is one.

    In process, Beam re-raises a component's error as its own type; from a worker process
    (Beam's multi_processing mode) only the text of its traceback comes back, which names
    the error's class.
    """
    text = str(error) if error is not None else ""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DataFaultError):
            return error_cause(error)
        error = error.__cause__ or error.__context__
    names = "|".join(sorted(_fault_classes(DataFaultError)))
    found = re.findall(rf"\b(?:{names}): (.+)", text) if names else []
    return _BEAM_SUFFIX.sub("", found[-1]).strip() if found else None


def failed_node_of(error: BaseException) -> str | None:
    """The node Beam names in a failed run's error, if it names one."""
    match = _BEAM_NODE.search(str(error))
    return match.group(1) if match else None


def _make_runner(cfg: Config):
    if cfg.orchestrator.runner == "local":
        from tfx.orchestration.local.local_dag_runner import LocalDagRunner

        return LocalDagRunner()
    from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

    return BeamDagRunner()


class _OnlyOwnRecords(logging.Filter):
    """Lets through only this project's records (the console of a quiet run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] in _OWN_LOGGERS


class RunLogHandler(logging.FileHandler):
    """The run's log file; a write that fails (a full disk) is remembered, never printed.

    logging's default prints a traceback to stderr for every record it cannot write: on a
    full disk, hundreds of them around the one line that says what failed.
    """

    failure: BaseException | None = None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's API)
        if self.failure is None:
            self.failure = sys.exc_info()[1]


@contextlib.contextmanager
def _run_log(log_path: str, verbose: bool) -> Iterator[RunLogHandler]:
    """Sends every record of the run to `log_path`; a quiet console keeps only our own."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    handler = RunLogHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    console = [h for h in root.handlers if h is not handler]
    quiet = _OnlyOwnRecords()
    root.addHandler(handler)
    if not verbose:
        for h in console:
            h.addFilter(quiet)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()
        for h in console:
            h.removeFilter(quiet)


def compile_with_run_id(cfg: Config, run_id: str, data_root: str, until: str | None = None):
    """The pipeline IR with `run_id` as its pipeline run id (TFX's runners keep it);
    `data_root`: the input as the run's plan resolved it."""
    pipeline = dag.create_pipeline(cfg, data_root, until=until)
    ir = Compiler().compile(pipeline)
    substitute_runtime_parameter(ir, {compiler_constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    return ir


def recover_root(cfg: Config, run_id: str) -> list[str]:
    """Cleans up after runs on this root that were killed; one message per thing done.

    Executions left RUNNING are marked abandoned, and the serving directory is made to
    agree with MLMD about pushes that did not finish. First the store is checked and backed
    up (pipeline.mlmd_store), so a lost or damaged history stops the run before it writes.

    Raises:
      StoreError: the root's MLMD store is unreadable, or lost while the root holds
        artifacts or served versions.
    """
    check_store(cfg.metadata_path, cfg.pipeline_root, cfg.serving_model_dir)
    if not os.path.exists(cfg.metadata_path) or not os.path.getsize(cfg.metadata_path):
        return []  # a new root: no earlier run
    backup_store(cfg.metadata_path)
    store = open_store(cfg.metadata_path)
    messages = []
    abandoned = abandon_unfinished(store, by_run=run_id)
    if abandoned:
        messages.append(
            f"marked {len(abandoned)} execution(s) left running by a run that was stopped as"
            f" abandoned: {', '.join(abandoned)}"
        )
    messages += reconcile_pushes(cfg.serving_model_dir, cfg.pipeline_root, store)
    return messages


def run_local(
    plan: RunPlan,
    run_id: str,
    until: str | None = None,
    verbose: bool = False,
    notify: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Runs the pipeline (or its head up to node `until`) and reads its run back from MLMD.

    A failing component does not raise here: the outcome carries the error and the
    executions MLMD recorded for this run id, so the caller can say what stopped the run.
    The caller must hold the root's run lock.

    Args:
      plan: the run's validated plan (pipeline/run_plan.py): its config, with absolute
        paths, and its resolved input.
      run_id: the pipeline run id (see new_run_id); MLMD's run context is named by it.
      until: a component id to stop after (None: the whole pipeline).
      verbose: show every library's log on the console (always in the run's log file).
      notify: called with each message of the recovery from earlier killed runs, and once
        if the run's log file could not be written (a full disk).

    Raises:
      StoreError: see `recover_root` (nothing has run).
    """
    cfg, data_root = plan.cfg, plan.data_root
    ir = compile_with_run_id(cfg, run_id, data_root, until=until)
    beam_mode = describe_direct_mode(cfg, data_root)
    if beam_mode is not None:
        _LOG.info(beam_mode)
        if notify is not None:
            notify(beam_mode)
    os.makedirs(cfg.root, exist_ok=True)
    log_path = log_path_of(cfg, run_id)
    for message in recover_root(cfg, run_id):
        _LOG.info(message)
        if notify is not None:
            notify(message)
    runner = _make_runner(cfg)
    start = time.monotonic()
    error: BaseException | None = None
    # The progress lines first: the run log then also gets TFX's own (absl) records.
    progress = attach_progress()
    try:
        with _run_log(log_path, verbose) as run_log:
            try:
                runner.run_with_ir(ir)
            except Exception as e:  # a component failed; MLMD says which, the caller says
                error = e
                logging.getLogger("tfx.run").error(
                    "run %s failed:\n%s", run_id, "".join(traceback.format_exception(e))
                )
    finally:
        detach_progress(progress)
    if run_log.failure is not None and notify is not None:
        notify(f"the run log {log_path} is incomplete: {run_log.failure}")
    seconds = time.monotonic() - start
    if not os.path.exists(cfg.metadata_path):
        return RunOutcome(run_id=run_id, nodes={}, error=error, seconds=seconds, log_path=log_path)
    store = open_store(cfg.metadata_path)
    # A push whose record MLMD did not get (e.g. MLMD's disk is full) is taken back now.
    for message in reconcile_pushes(cfg.serving_model_dir, cfg.pipeline_root, store):
        if notify is not None:
            notify(message)
    run = run_context(store, run_id)
    nodes = read_run(store, run) if run is not None else {}
    return RunOutcome(run_id=run_id, nodes=nodes, error=error, seconds=seconds, log_path=log_path)
