"""Server-side batching: concurrent requests are merged into one model call.

A request waits at most `max_wait_ms` for others to join it, a batch holds at most
`max_batch_size` instances (a larger request runs alone, unsplit), and at most
`batch_threads` model calls run at once. While they are busy, new requests queue up and go
together in the next call, which is why throughput grows with concurrency. Only requests
with the same key (model version and signature) share a call.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import threading
from collections.abc import Callable, Hashable
from typing import Any

# Runs one batch in a worker thread: (key, payloads) -> one result per payload; a result that
# is an Exception is raised to that payload's caller alone.
RunBatch = Callable[[Hashable, list[Any]], list[Any]]


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


@dataclasses.dataclass
class _Item:
    key: Hashable
    payload: Any
    size: int
    future: asyncio.Future


class MicroBatcher:
    """Merges concurrent submissions into batched calls of `run_batch` in worker threads.

    Args:
      run_batch: runs one batch; called in a worker thread.
      max_batch_size: the most instances per call.
      max_wait_ms: how long the first request of a batch waits for company.
      batch_threads: how many calls may run at once.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        batch_threads: int = 1,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self._pending: collections.deque[_Item] = collections.deque()
        self._pending_size = 0
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._batch_threads = batch_threads
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop_task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._stopping = False
        self._stats_lock = threading.Lock()
        self.stats = BatchStats()

    async def start(self) -> None:
        """Starts the batching loop on the running event loop."""
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self._batch_threads)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self._batch_threads, thread_name_prefix="model-call"
        )
        self._loop_task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Runs what is queued, waits for the calls in flight, then stops."""
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, key: Hashable, payload: Any, size: int) -> Any:
        """Queues a request of `size` instances and returns its result when its batch ran.

        Raises:
          RuntimeError: the batcher is stopping.
          Exception: whatever `run_batch` returned or raised for this payload.
        """
        if self._stopping or self._wakeup is None:
            raise RuntimeError("the server is shutting down")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(key, payload, size, future))
        self._pending_size += size
        self._wakeup.set()
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Give the first request up to max_wait to be joined, unless the batch is full.
            deadline = loop.time() + self.max_wait
            while self._pending_size < self.max_batch_size and not self._stopping:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            # Waiting for a free slot lets more requests queue up for this batch.
            await self._slots.acquire()
            batch = self._take_batch()
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take_batch(self) -> list[_Item]:
        """The oldest request and the queued ones of the same key that fit beside it."""
        first = self._pending.popleft()
        batch, size, kept = [first], first.size, collections.deque()
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

    async def _run(self, batch: list[_Item]) -> None:
        try:
            loop = asyncio.get_running_loop()
            payloads = [item.payload for item in batch]
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run_batch, batch[0].key, payloads
                )
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            except Exception as e:
                results = [e] * len(batch)
            size = sum(item.size for item in batch)
            with self._stats_lock:
                stats = self.stats
                stats.requests += len(batch)
                stats.instances += size
                stats.model_calls += 1
                stats.largest_batch = max(stats.largest_batch, size)
                stats.batch_sizes[size] = stats.batch_sizes.get(size, 0) + 1
            for item, result in zip(batch, results, strict=True):
                if item.future.done():  # the client went away
                    continue
                if isinstance(result, Exception):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
        finally:
            self._slots.release()
