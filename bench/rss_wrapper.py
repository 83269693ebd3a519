"""Run one command and record its wall time and the peak RSS of its largest process.

Usage::

    python -m bench.rss_wrapper --out result.json [--cwd DIR] -- CMD [ARG ...]

The wrapper starts ``CMD``, waits for it, then reads its own
``getrusage(RUSAGE_CHILDREN).ru_maxrss``. On Linux that is the maximum resident
set size, in KiB, of the largest single process among all descendants that
terminated and were waited for. Because the wrapper has no other children, the
figure belongs to this one command alone, independent of anything else the
caller ran before. The result is written as JSON to ``--out``; the wrapper exits
with the command's return code.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _parse_args(argv: list[str]) -> argparse.Namespace:
    """Parses the wrapper's own options and the command after ``--``."""
    parser = argparse.ArgumentParser(prog="python -m bench.rss_wrapper")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--cwd", type=Path, default=None, help="working directory of CMD")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG ...]")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given after --")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the command, writes the measurement and returns its exit code."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    try:
        returncode = subprocess.call(args.command, cwd=args.cwd)
    except OSError as err:
        print(f"rss_wrapper: cannot start {args.command[0]!r}: {err}", file=sys.stderr)
        returncode = 127
    wall_seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {
        "returncode": returncode,
        "wall_seconds": wall_seconds,
        "max_rss_kib": usage.ru_maxrss,
        "user_cpu_seconds": usage.ru_utime,
        "system_cpu_seconds": usage.ru_stime,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return returncode


if __name__ == "__main__":
    sys.exit(main())
