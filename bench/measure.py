"""Running one command under measurement: wall time, peak RSS and its logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.tree_sampler import LimitReached, Sample, TreePeak, TreeSampler, decimate

SAMPLE_INTERVAL_SECONDS = 0.5
"""How often the whole process tree's RSS is sampled."""

STOPPED_BY_TIMEOUT = "timeout"
STOPPED_BY_MEMORY = "memory cap"


@dataclass(frozen=True)
class Measurement:
    """What one measured command did and cost.

    Attributes:
        name: Short label of the run, e.g. ``reference``.
        command: The command that was measured (without the wrapper).
        returncode: Its exit code (negative if killed by a signal, None if timed out).
        wall_seconds: Wall-clock time from start to exit, taken inside the wrapper.
        max_rss_bytes: Peak RSS of the largest single process in the tree (getrusage).
        cpu_seconds: User plus system CPU time of the whole tree (getrusage).
        other_cpu_seconds: CPU time the rest of the machine used meanwhile: busy time of
            all CPUs (psutil) minus ``cpu_seconds``. Large values mean the machine was not
            idle and the wall time is inflated.
        tree: Peaks from sampling the whole tree with psutil.
        stdout_path: File holding the command's standard output.
        stderr_path: File holding the command's standard error.
        rss_series: The tree's sampled RSS over time, at most
            ``tree_sampler.MAX_SERIES_POINTS`` samples (peaks kept, see ``decimate``).
        stopped: Why the benchmark stopped the command (``STOPPED_BY_TIMEOUT`` or
            ``STOPPED_BY_MEMORY``); None if it exited by itself.
        limit_reached: With a memory cap: the sample that passed it, if one did.
        max_rss_sampled: ``max_rss_bytes`` is the sampled largest process, not getrusage's:
            the wrapper was stopped before it could report.
    """

    name: str
    command: tuple[str, ...]
    returncode: int | None
    wall_seconds: float
    max_rss_bytes: int
    cpu_seconds: float
    other_cpu_seconds: float
    tree: TreePeak
    stdout_path: Path
    stderr_path: Path
    rss_series: tuple[Sample, ...] = ()
    stopped: str | None = None
    limit_reached: LimitReached | None = None
    max_rss_sampled: bool = False

    def stderr_tail(self, lines: int = 40) -> str:
        """Returns the last ``lines`` lines of the command's standard error.

        Exceptions that Python ignored at interpreter shutdown (``Exception ignored in:``
        blocks, e.g. from TensorFlow finalizers) are left out: they bury the real error.
        """
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(_without_ignored_exceptions(text.splitlines())[-lines:])


def _without_ignored_exceptions(lines: list[str]) -> list[str]:
    """Drops each ``Exception ignored in:`` block: that line, its traceback and its error."""
    kept: list[str] = []
    skipping = False
    for line in lines:
        if line.startswith("Exception ignored in"):
            skipping = True
        elif skipping and (line.startswith((" ", "Traceback")) or not line.strip()):
            pass
        elif skipping:
            skipping = False  # The block's closing "SomeError: message" line.
        else:
            kept.append(line)
    return kept


def run_measured(
    name: str,
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_dir: Path,
    timeout_seconds: float | None = None,
    memory_cap_bytes: int | None = None,
) -> Measurement:
    """Runs ``command`` through ``bench.rss_wrapper`` and measures it.

    The wrapper runs in a new session so that, on timeout or interruption, the whole
    tree it started can be killed at once.

    Args:
        name: Label of the run; also names the log files.
        command: The command and its arguments.
        cwd: Working directory for the command.
        env: Complete environment for the command.
        log_dir: Directory for the stdout/stderr logs and the wrapper's JSON result.
        timeout_seconds: Kill the run after this long; None waits forever.
        memory_cap_bytes: Kill the run once the sampled RSS of its whole tree passes this;
            None: no cap.

    Returns:
        The measurement. A run stopped by the timeout or the memory cap has ``returncode``
        None and says which in ``stopped``.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path = log_dir / f"{name}.stdout.log"
    stderr_path = log_dir / f"{name}.stderr.log"
    result_path = log_dir / f"{name}.rusage.json"
    result_path.unlink(missing_ok=True)
    wrapper = [
        sys.executable, "-m", "bench.rss_wrapper",
        "--out", str(result_path), "--cwd", str(cwd), "--", *command,
    ]  # fmt: skip
    start = time.perf_counter()
    busy_before = _machine_busy_seconds()
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            wrapper,
            cwd=_package_parent(),
            env=dict(env),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        sampler = TreeSampler(
            process.pid,
            SAMPLE_INTERVAL_SECONDS,
            limit_bytes=memory_cap_bytes,
            on_limit=lambda: _signal_session(process.pid),
        )
        timed_out = False
        stragglers = False
        try:
            with sampler:
                try:
                    process.wait(timeout=timeout_seconds)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill_session(process)
                else:
                    stragglers = _kill_session(process)
        except BaseException:
            _kill_session(process)
            raise
    outer_seconds = time.perf_counter() - start
    machine_busy = _machine_busy_seconds() - busy_before
    capped = sampler.limit_reached
    stopped = STOPPED_BY_MEMORY if capped else STOPPED_BY_TIMEOUT if timed_out else None
    if capped:
        _note(
            stderr_path,
            f"killed after {capped.seconds:.0f} s: the process tree's RSS reached"
            f" {capped.total_bytes / 2**30:.2f} GiB, past the {capped.limit_bytes / 2**30:.2f}"
            " GiB cap",
        )
    elif timed_out:
        _note(stderr_path, f"killed after the {timeout_seconds:.0f} s timeout")
    elif stragglers:
        _note(stderr_path, "processes left running after the command exited were killed")
    result = _read_result(result_path)
    # A wrapper killed with its command cannot report getrusage: the sampled peak stands in.
    reported = "max_rss_kib" in result
    cpu_seconds = float(result.get("user_cpu_seconds", 0.0)) + float(
        result.get("system_cpu_seconds", 0.0)
    )
    return Measurement(
        name=name,
        command=tuple(command),
        returncode=None if stopped else int(result.get("returncode", process.returncode)),
        wall_seconds=float(result.get("wall_seconds", outer_seconds)),
        max_rss_bytes=(
            int(result["max_rss_kib"]) * 1024 if reported else sampler.peak.largest_process_bytes
        ),
        cpu_seconds=cpu_seconds,
        other_cpu_seconds=max(0.0, machine_busy - cpu_seconds),
        tree=sampler.peak,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        rss_series=tuple(decimate(sampler.series)),
        stopped=stopped,
        limit_reached=capped,
        max_rss_sampled=not reported,
    )


def _machine_busy_seconds() -> float:
    """CPU time all CPUs of the machine have spent busy since boot."""
    times = psutil.cpu_times()
    return (
        times.user
        + times.nice
        + times.system
        + getattr(times, "irq", 0.0)
        + getattr(times, "softirq", 0.0)
    )


def _package_parent() -> Path:
    """Returns the directory that holds the ``bench`` package, so ``-m bench...`` resolves."""
    return Path(__file__).resolve().parent.parent


def _signal_session(pid: int) -> None:
    """Kills the session led by `pid` without waiting (the measuring thread waits)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_session(process: subprocess.Popen[bytes]) -> bool:
    """Kills the wrapper's whole session (the wrapper and everything it started).

    Returns:
        Whether any process of the session was still there to kill.
    """
    try:
        os.killpg(process.pid, signal.SIGKILL)
        found = True
    except ProcessLookupError:
        found = False
    process.wait()
    return found


def _note(stderr_path: Path, message: str) -> None:
    """Appends a note from the benchmark to a run's stderr log."""
    with stderr_path.open("a") as err:
        err.write(f"\nbench: {message}\n")


def _read_result(path: Path) -> dict[str, float]:
    """Reads the wrapper's JSON result; empty if the wrapper did not get to write it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
