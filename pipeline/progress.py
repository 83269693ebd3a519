"""One line per component as the run goes: which one, cached or run, and how long it took."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from taxifare_modules import compat

# What TFX's orchestrators log (absl) when a node starts and ends, and when it is cached.
_START = re.compile(r"^(?:node|Component) (\S+) is running\.$")
_END = re.compile(r"^(?:node|Component) (\S+) is finished\.$")
_CACHED = "A cached execution %d is used."


class ComponentProgress(logging.Handler):
    """Turns the orchestrator's node start/finish records into one readable line each."""

    def __init__(self, stream: TextIO | None = None):
        super().__init__(level=logging.INFO)
        # Progress is not the command's output: stderr (read when written, for capture).
        self._stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}
        self._cached: set[str] = set()
        self._current: str | None = None
        self.durations: dict[str, float] = {}
        # Set by attach_progress: lets the absl logger's level go again.
        self.release_absl_level: Callable[[], None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if not isinstance(record.msg, str):
            return
        if record.msg == _CACHED and self._current:
            self._cached.add(self._current)
            return
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return
        now = time.monotonic()
        with self._lock:
            if match := _START.match(message):
                self._current = match.group(1)
                self._started[self._current] = now
            elif match := _END.match(message):
                node = match.group(1)
                seconds = now - self._started.get(node, now)
                self.durations[node] = seconds
                how = "cached" if node in self._cached else "done"
                self._stream.write(f"  {node:<28} {how:<7} {seconds:6.1f}s\n")
                self._stream.flush()


def _drop_quiet_absl(record: logging.LogRecord) -> bool:
    """Lets absl records through to other handlers only from ERROR up (TFX is chatty)."""
    return record.name != "absl" or record.levelno >= logging.ERROR


def attach_progress(stream: TextIO | None = None) -> ComponentProgress:
    """Attaches a ComponentProgress to the absl logger (TFX logs through absl).

    Parsing absl flags (which some libraries do mid-run) resets the absl logger to WARNING;
    while the handler is attached, the logger's level is held at INFO or below
    (`compat.hold_absl_logger_level`) so the orchestrator's node records keep arriving.
    Other handlers only see absl records from ERROR up, so the console stays quiet.
    """
    handler = ComponentProgress(stream)
    absl_logger = logging.getLogger("absl")
    absl_logger.addHandler(handler)
    for h in logging.getLogger().handlers:
        h.addFilter(_drop_quiet_absl)
    handler.release_absl_level = compat.hold_absl_logger_level(logging.INFO)
    return handler


def detach_progress(handler: ComponentProgress) -> None:
    """Removes a handler attached by attach_progress and restores the absl logger."""
    absl_logger = logging.getLogger("absl")
    absl_logger.removeHandler(handler)
    if handler.release_absl_level is not None:
        handler.release_absl_level()
    for h in logging.getLogger().handlers:
        h.removeFilter(_drop_quiet_absl)


def process_seconds() -> float:
    """Wall seconds since this process started (its imports included), as a user waited."""
    import psutil

    return max(0.0, time.time() - psutil.Process().create_time())
