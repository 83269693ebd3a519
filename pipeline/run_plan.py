"""One validated plan for a run, built once before anything runs and handed down.

`taxifare run` and `taxifare infer-schema` ask for a plan; it loads the config (ranges
checked), resolves the input once, checks the serving-log folder, the roots, and every input
file, and returns what later steps need: the config, the resolved input and what the data
check counted. Each kind of fault has one error type here (UsageError: exit 2, nothing ran;
DataError: exit 3, the data is not what it claims to be), and the command line maps them to
exit codes. What must happen under the root's lock (the MLMD store's check and backup,
recovery from killed runs) is done by the runner once it holds the lock.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from pipeline.config import Config, ConfigError, load_config

if TYPE_CHECKING:  # data_checks imports TensorFlow; a config error must not wait for it
    from pipeline.data_checks import InputReport


class PlanError(Exception):
    """A run that cannot start; the message names what and where."""


class UsageError(PlanError):
    """The config, a root or the input cannot be used (exit 2; nothing ran)."""


class DataError(PlanError):
    """The input files are not the CSV trips they claim to be (exit 3; nothing ran)."""


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """A run that passed every check that needs no lock."""

    cfg: Config  # with absolute paths (MLMD and the artifacts record them)
    data_root: str  # the resolved input: a folder, gs:// folder, or the BigQuery marker
    input: InputReport | None  # what the data check counted (None for a query input)


def load(config_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config with absolute paths.

    Raises:
      UsageError: the file or a key or value is invalid (the message names which).
    """
    try:
        return load_config(config_path, overrides).with_absolute_paths()
    except ConfigError as e:
        raise UsageError(str(e)) from None


def plan_run(cfg: Config) -> RunPlan:
    """Checks everything a local run needs before it takes the root's lock.

    Raises:
      UsageError: the input cannot be resolved, the serving-log folder is missing, a root is
        unusable (inside the input, not writable), or an input file cannot be read.
      DataError: an input file is malformed (named with its line and column where known).
    """
    from pipeline.data_checks import DataCheckError, DataReadError, check_input_report
    from pipeline.data_source import DataSourceError, resolve_input
    from pipeline.root_lock import RootError, check_outside_input, check_writable_dir, prepare_root

    try:
        data_root = resolve_input(cfg)
    except DataSourceError as e:
        raise UsageError(str(e)) from None
    logs = cfg.monitoring.skew.serving_logs
    if logs is not None and not logs.startswith(("gs://", "bq://")) and not os.path.isdir(logs):
        raise UsageError(
            f"monitoring.skew.serving_logs: request log folder not found: {logs}"
            " (the --log-dir of `taxifare serve`; null for no skew check)"
        )
    try:
        if cfg.serving_root is not None and "://" not in cfg.serving_root:
            check_outside_input(cfg.serving_root, data_root, "serving_root")
            check_writable_dir(cfg.serving_root, "serving_root")
        check_outside_input(cfg.root, data_root, "root")
        prepare_root(cfg.root)
    except RootError as e:
        raise UsageError(f"{e}; nothing was run") from None
    try:
        report = check_input_report(cfg, data_root)
    except DataCheckError as e:
        raise DataError(f"data: {e}; nothing was trained or pushed") from None
    except DataReadError as e:
        raise UsageError(f"{e}; nothing was run") from None
    return RunPlan(cfg=cfg, data_root=data_root, input=report)
