"""``python -m bench --cli``: how long each command takes to answer when it only reads.

A command that prints help, checks a config or lists runs from MLMD should answer in about
a second, as git or kubectl do. Each command below is started :data:`REPEATS` times in a
fresh process and its median wall time is reported, against two references measured in the
same run: the bare interpreter (``python -c pass``, the floor no command can beat) and
``import tensorflow`` (what a command pays that imports it needlessly). The target is
:data:`TARGET_SECONDS` for each command.

``taxifare runs`` reads a real root: a smoke run of the pipeline into the workspace (about a
minute), so that the table has a run's metrics, statistics and training record to read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPEATS = 5
TARGET_SECONDS = 1.5
SECTION_TITLE = "## Command start-up"
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Timing:
    """One command's wall times over its repeats."""

    label: str
    command: tuple[str, ...]
    seconds: tuple[float, ...]
    exit_codes: tuple[int, ...]
    reference: bool = False  # a reference, not a command with a target

    @property
    def median(self) -> float:
        """The median wall time (s)."""
        return statistics.median(self.seconds)


@dataclass(frozen=True)
class CliRun:
    """The measured commands and the references."""

    timings: tuple[Timing, ...]
    load_before: float
    load_after: float

    def reference(self, label: str) -> Timing:
        """The reference timing called `label`."""
        return next(t for t in self.timings if t.reference and t.label == label)


def _time(label: str, command: list[str], repeats: int, reference: bool = False) -> Timing:
    seconds, codes = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(
            command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        seconds.append(time.perf_counter() - started)
        codes.append(done.returncode)
    return Timing(label, tuple(command), tuple(seconds), tuple(codes), reference)


def _smoke_root(workspace: Path) -> Path:
    """A root holding one smoke run of the pipeline (what `taxifare runs` reads)."""
    root = workspace / "root"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--config", "configs/smoke.yaml",
         "--set", f"root={root}"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if done.returncode not in (0, 4):  # 4: ran to the end but not blessed
        raise ValueError(f"the smoke run for `taxifare runs` failed: {done.stderr[-2000:]}")
    return root


def main(args: argparse.Namespace, workspace: Path) -> CliRun:
    """Measures every command; `args` is the benchmark's command line (unused but shared)."""
    del args
    python = sys.executable
    taxifare = [python, "-m", "pipeline"]
    root = _smoke_root(workspace)
    # The run wrote its report, keeping what needs the model; `report` then reads files only.
    load_before = os.getloadavg()[0]
    timings = [
        _time("python -c pass", [python, "-c", "pass"], REPEATS, reference=True),
        _time("import tensorflow", [python, "-c", "import tensorflow"], 3, reference=True),
        _time("taxifare --help", [*taxifare, "--help"], REPEATS),
        _time("taxifare run --help", [*taxifare, "run", "--help"], REPEATS),
        _time("taxifare runs", [*taxifare, "runs", "--root", str(root)], REPEATS),
        _time("taxifare runs --json", [*taxifare, "runs", "--root", str(root), "--json"],
              REPEATS),
        _time(
            "taxifare report",
            [*taxifare, "report", "--root", str(root), "--out", str(workspace / "report")],
            REPEATS,
        ),
        _time(
            "taxifare run (config error)",
            [*taxifare, "run", "--set", "training.seed=-1"],
            REPEATS,
        ),
        _time("taxifare serve --help", [*taxifare, "serve", "--help"], REPEATS),
        _time(
            "python -m taxifare_modules.task --help",
            [python, "-m", "taxifare_modules.task", "--help"],
            REPEATS,
        ),
    ]
    return CliRun(tuple(timings), load_before, os.getloadavg()[0])


def markdown_section(run: CliRun | None, note: str = "") -> list[str]:
    """The report's section."""
    lines = [SECTION_TITLE, ""]
    if run is None:
        return lines + [f"Not measured: {note}" if note else "Not measured."]
    floor = run.reference("python -c pass").median
    tf_import = run.reference("import tensorflow").median
    lines += [
        f"Median wall time of {REPEATS} fresh processes per command (load average"
        f" {run.load_before:.1f} before, {run.load_after:.1f} after). References measured in"
        f" the same run: the bare interpreter {floor:.2f} s, `import tensorflow`"
        f" {tf_import:.2f} s. Target: each command <= {TARGET_SECONDS:g} s.",
        "",
        "| command | median | x bare interpreter | exit codes | target |",
        "|---|---|---|---|---|",
    ]
    for t in run.timings:
        verdict = "reference" if t.reference else (
            "pass" if t.median <= TARGET_SECONDS else "FAIL"
        )
        codes = ",".join(sorted({str(c) for c in t.exit_codes}))
        lines.append(
            f"| `{t.label}` | {t.median:.2f} s | {t.median / floor:.1f}x | {codes} | {verdict} |"
        )
    return lines


def summary_lines(run: CliRun | None, note: str = "") -> list[str]:
    """A few lines for the terminal."""
    if run is None:
        return [f"command start-up: not measured ({note})" if note else "not measured"]
    return [
        f"{t.label:>40}: {t.median:.2f} s"
        + ("" if t.reference else (" pass" if t.median <= TARGET_SECONDS else " FAIL"))
        for t in run.timings
    ]
