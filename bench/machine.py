"""A description of the machine and software the benchmark ran on."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psutil

PACKAGES = ("tfx", "tensorflow", "tf-keras", "apache-beam")


@dataclass(frozen=True)
class Machine:
    """Hardware and software facts that figures depend on.

    Attributes:
        cpu_model: Processor model name, if known.
        logical_cores: Logical CPUs in the machine.
        usable_cores: Logical CPUs this process may run on.
        memory_bytes: Total physical memory.
        os: Operating system and kernel.
        python: Python version.
        packages: Installed versions of the key packages.
    """

    cpu_model: str
    logical_cores: int
    usable_cores: int
    memory_bytes: int
    os: str
    python: str
    packages: dict[str, str]


def describe() -> Machine:
    """Collects the facts about this machine and environment."""
    logical = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # Not available on every platform.
        usable = logical
    return Machine(
        cpu_model=_cpu_model(),
        logical_cores=logical,
        usable_cores=usable,
        memory_bytes=psutil.virtual_memory().total,
        os=platform.platform(),
        python=platform.python_version(),
        packages={name: _version(name) for name in PACKAGES},
    )


def _cpu_model() -> str:
    """The processor's model name from ``/proc/cpuinfo``, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    """The installed version of ``package``, or ``not installed``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def wait_until_idle(
    busy_percent: float = 20.0, settle_seconds: float = 5.0, timeout_seconds: float = 120.0
) -> float:
    """Waits until the machine's CPUs have been under `busy_percent` busy for
    `settle_seconds` in a row (what a run just before left behind has exited), or
    `timeout_seconds`; returns the seconds waited."""
    start = time.monotonic()
    quiet_since = None
    while time.monotonic() - start < timeout_seconds:
        if psutil.cpu_percent(interval=1.0) < busy_percent:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle_seconds:
                break
        else:
            quiet_since = None
    return time.monotonic() - start
