"""Periodic sampling of a process tree's resident memory with psutil."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil

MAX_SERIES_POINTS = 2000
"""Most points a kept RSS series has (see `decimate`)."""


@dataclass(frozen=True)
class TreePeak:
    """Peaks seen while sampling a process tree.

    Attributes:
        total_bytes: Highest sum of RSS over all live processes in the tree at one instant.
        largest_process_bytes: Highest RSS of any single process at a sampling instant.
        max_processes: Most processes alive in the tree at one instant.
        samples: Number of samples taken.
    """

    total_bytes: int
    largest_process_bytes: int
    max_processes: int
    samples: int


@dataclass(frozen=True)
class Sample:
    """One sampling instant: seconds since sampling started, the tree's summed RSS and the
    RSS of its largest process, in bytes."""

    seconds: float
    total_bytes: int
    largest_process_bytes: int


@dataclass(frozen=True)
class LimitReached:
    """The first sample whose summed RSS passed the sampler's limit."""

    seconds: float
    total_bytes: int
    limit_bytes: int


def decimate(series: Sequence[Sample], max_points: int = MAX_SERIES_POINTS) -> list[Sample]:
    """At most `max_points` samples of `series`, keeping its peaks.

    Consecutive samples are taken in equal groups; each group becomes one sample at the time
    of its highest summed RSS, with the group's highest summed and largest-process RSS, so
    the peaks of the kept series are those of the whole one.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    if len(series) <= max_points:
        return list(series)
    group = -(-len(series) // max_points)  # ceil
    kept = []
    for begin in range(0, len(series), group):
        chunk = series[begin : begin + group]
        top = max(chunk, key=lambda s: s.total_bytes)
        kept.append(
            Sample(top.seconds, top.total_bytes, max(s.largest_process_bytes for s in chunk))
        )
    return kept


class TreeSampler:
    """Samples the RSS of a process and all its descendants on a background thread.

    Sampling can miss short spikes between samples, so these peaks are a lower bound; they
    complement the exact per-process figure from ``getrusage``. Every sample is kept (time,
    summed RSS, largest process), for the memory curve. With ``limit_bytes``, the first
    sample whose summed RSS passes it is recorded and ``on_limit`` is called once, on the
    sampling thread (e.g. to stop the tree), and sampling goes on until the root exits.
    """

    def __init__(
        self,
        root_pid: int,
        interval_seconds: float = 0.5,
        limit_bytes: int | None = None,
        on_limit: Callable[[], None] | None = None,
    ) -> None:
        """Prepares to sample the tree rooted at ``root_pid`` every ``interval_seconds``."""
        self._root_pid = root_pid
        self._interval = interval_seconds
        self._limit = limit_bytes
        self._on_limit = on_limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._total = 0
        self._largest = 0
        self._max_processes = 0
        self._samples = 0
        self._series: list[Sample] = []
        self._start = time.monotonic()
        self.limit_reached: LimitReached | None = None

    def __enter__(self) -> TreeSampler:
        """Starts sampling."""
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stops sampling and waits for the thread."""
        self.stop()

    def stop(self) -> TreePeak:
        """Stops sampling and returns the peaks seen so far."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.peak

    @property
    def peak(self) -> TreePeak:
        """The peaks seen so far."""
        return TreePeak(self._total, self._largest, self._max_processes, self._samples)

    @property
    def series(self) -> list[Sample]:
        """Every sample taken so far, in order."""
        return list(self._series)

    def _run(self) -> None:
        """Takes samples until stopped or the root process is gone."""
        try:
            root = psutil.Process(self._root_pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            if not self._sample(root):
                return
            self._stop.wait(self._interval)

    def _sample(self, root: psutil.Process) -> bool:
        """Takes one sample; returns False once the root process has exited."""
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return False
        sizes = []
        for process in processes:
            try:
                sizes.append(process.memory_info().rss)
            except psutil.Error:
                continue  # Exited between listing and reading; it no longer holds memory.
        if sizes:
            total = sum(sizes)
            self._total = max(self._total, total)
            self._largest = max(self._largest, max(sizes))
            self._max_processes = max(self._max_processes, len(sizes))
            self._samples += 1
            seconds = time.monotonic() - self._start
            self._series.append(Sample(seconds, total, max(sizes)))
            if self._limit is not None and total > self._limit and self.limit_reached is None:
                self.limit_reached = LimitReached(seconds, total, self._limit)
                if self._on_limit is not None:
                    self._on_limit()
        return True
