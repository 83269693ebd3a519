"""Periodic sampling of a process tree's resident memory with psutil."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psutil


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


class TreeSampler:
    """Samples the RSS of a process and all its descendants on a background thread.

    Sampling can miss short spikes between samples, so these peaks are a lower bound; they
    complement the exact per-process figure from ``getrusage``.
    """

    def __init__(self, root_pid: int, interval_seconds: float = 0.5) -> None:
        """Prepares to sample the tree rooted at ``root_pid`` every ``interval_seconds``."""
        self._root_pid = root_pid
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._total = 0
        self._largest = 0
        self._max_processes = 0
        self._samples = 0

    def __enter__(self) -> TreeSampler:
        """Starts sampling."""
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
            self._total = max(self._total, sum(sizes))
            self._largest = max(self._largest, max(sizes))
            self._max_processes = max(self._max_processes, len(sizes))
            self._samples += 1
        return True
