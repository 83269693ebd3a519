"""Server-side batching: concurrent requests are merged into one model call.

At most `batch_threads` model calls run at once. A request that finds a call slot free runs
at once, alone: an idle model never makes anyone wait for company. While every slot is busy,
new requests queue up, and when a call finishes the queued ones go together in the next
call, which is why throughput grows with concurrency while a lone request pays nothing for
it. A batch holds at most `max_batch_size` instances (a larger request runs alone, unsplit),
and only requests with the same key (model version and signature) share a call.

Requests come from the server's event loop (REST and gRPC alike) through `submit`, a
coroutine: batches run in the batcher's worker threads, so the loop never blocks, and each
answer comes back to the loop.

`max_wait_ms` (0 by default) is an optional extra: when positive, a batch that could start
waits until its oldest request has waited that long, unless the batch is already full,
trading latency for larger batches.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

# Runs one batch in a worker thread: (key, payloads) -> one result per payload; a result that
# is an Exception is raised to that payload's caller alone.
RunBatch = Callable[[Hashable, list[Any]], list[Any]]

SHUTTING_DOWN = "the server is shutting down"
_STOP_POLL_SECONDS = 0.005


@dataclasses.dataclass
class BatchStats:
    """Counters of the batcher (exposed by the stats endpoint)."""

    requests: int = 0
    instances: int = 0
    model_calls: int = 0
    largest_batch: int = 0
    # instances per model call -> number of calls
    batch_sizes: dict[int, int] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The counters as JSON."""
        return {
            "requests": self.requests,
            "instances": self.instances,
            "model_calls": self.model_calls,
            "largest_batch": self.largest_batch,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


@dataclasses.dataclass(eq=False)
class _Item:
    key: Hashable
    payload: Any
    size: int
    queued_at: float
    future: asyncio.Future
    result: Any = None


class MicroBatcher:
    """Merges concurrent submissions into batched calls of `run_batch`.

    Its queue and counters are guarded by one lock, shared by the event loop, the worker
    threads and the wait timer.

    Args:
      run_batch: runs one batch; called in a worker thread.
      max_batch_size: the most instances per call.
      max_wait_ms: how long a batch that could start waits for company (0: not at all).
      batch_threads: how many calls may run at once.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        max_batch_size: int = 64,
        max_wait_ms: float = 0.0,
        batch_threads: int = 1,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self._batch_threads = batch_threads
        self._lock = threading.Lock()
        self._pending: collections.deque[_Item] = collections.deque()
        self._pending_size = 0
        self._free_slots = batch_threads
        self._timer: threading.Timer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Batches for the worker threads; None tells one to exit.
        self._calls: queue.SimpleQueue[list[_Item] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.stats = BatchStats()

    async def start(self) -> None:
        """Starts batching; `submit` answers on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(target=self._work, name=f"model-call-{i}", daemon=True)
            for i in range(self._batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    async def stop(self) -> None:
        """Runs what is queued (without waiting for company), waits for the calls, stops."""
        with self._lock:
            self._stopping = True
            runs = self._dispatch() if self._loop is not None else []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self._loop is None:
            return
        self._start(runs)
        while not self._idle():
            await asyncio.sleep(_STOP_POLL_SECONDS)
        for _ in self._threads:
            self._calls.put(None)
        for thread in self._threads:
            thread.join()

    def _idle(self) -> bool:
        with self._lock:
            return self._free_slots == self._batch_threads and not self._pending

    async def submit(self, key: Hashable, payload: Any, size: int) -> Any:
        """Queues a request of `size` instances and returns its result when its batch ran.

        Raises:
          RuntimeError: the batcher is stopping.
          Exception: whatever `run_batch` returned or raised for this payload.
        """
        loop = self._loop
        if self._stopping or loop is None:
            raise RuntimeError(SHUTTING_DOWN)
        future = loop.create_future()
        item = _Item(key, payload, size, time.monotonic(), future)
        with self._lock:
            if self._stopping:
                raise RuntimeError(SHUTTING_DOWN)
            self._pending.append(item)
            self._pending_size += size
            runs = self._dispatch()
        self._start(runs)
        return await future

    # --- under the lock ---------------------------------------------------------------------

    def _dispatch(self) -> list[list[_Item]]:
        """Takes the batches that may start now (free slots, queued requests); the caller
        starts them (`_start`) once it has let go of the lock."""
        runs = []
        while self._free_slots > 0 and self._pending:
            if self.max_wait > 0 and not self._stopping:
                if self._pending_size < self.max_batch_size:
                    delay = self._pending[0].queued_at + self.max_wait - time.monotonic()
                    if delay > 0:
                        if self._timer is None:
                            self._timer = threading.Timer(delay, self._on_timer)
                            self._timer.daemon = True
                            self._timer.start()
                        break
            runs.append(self._take_batch())
            self._free_slots -= 1
        return runs

    def _take_batch(self) -> list[_Item]:
        """The oldest request and the queued ones of the same key that fit beside it."""
        first = self._pending.popleft()
        batch, size = [first], first.size
        if self._pending:
            kept: collections.deque[_Item] = collections.deque()
            while self._pending:
                item = self._pending.popleft()
                if item.key == first.key and size + item.size <= self.max_batch_size:
                    batch.append(item)
                    size += item.size
                else:
                    kept.append(item)
            self._pending = kept
        self._pending_size -= size
        return batch

    # --- running batches --------------------------------------------------------------------

    def _start(self, runs: list[list[_Item]]) -> None:
        """Hands each batch to a worker thread."""
        for batch in runs:
            self._calls.put(batch)

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            runs = self._dispatch()
        self._start(runs)

    def _work(self) -> None:
        """A worker thread: runs batches until told to exit."""
        while True:
            batch = self._calls.get()
            if batch is None:
                return
            self._run(batch)

    def _run(self, batch: list[_Item]) -> None:
        """Runs one batch, answers its callers, frees the slot and starts what queued
        meanwhile."""
        try:
            results = self._run_batch(batch[0].key, [item.payload for item in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except Exception as e:
            results = [e] * len(batch)
        size = sum(item.size for item in batch)
        with self._lock:
            self._free_slots += 1
            stats = self.stats
            stats.requests += len(batch)
            stats.instances += size
            stats.model_calls += 1
            stats.largest_batch = max(stats.largest_batch, size)
            stats.batch_sizes[size] = stats.batch_sizes.get(size, 0) + 1
            runs = self._dispatch()
        for item, result in zip(batch, results, strict=True):
            item.result = result
        self._loop.call_soon_threadsafe(_resolve, batch)
        self._start(runs)


def _resolve(items: list[_Item]) -> None:
    """On the event loop: hands `submit` callers their results."""
    for item in items:
        if item.future.done():  # the client went away
            continue
        if isinstance(item.result, Exception):
            item.future.set_exception(item.result)
        else:
            item.future.set_result(item.result)
