"""Server-side batching: concurrent requests are merged into one model call.

At most `batch_threads` model calls run at once. A request that finds a call slot free runs
at once, alone: an idle model never makes anyone wait for company. While every slot is busy,
new requests queue up, and when a call finishes the queued ones go together in the next
call, which is why throughput grows with concurrency while a lone request pays nothing for
it. A batch holds at most `max_batch_size` instances (a larger request runs alone, unsplit),
and only requests with the same key (model version and signature) share a call.

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
    queued_at: float


class MicroBatcher:
    """Merges concurrent submissions into batched calls of `run_batch` in worker threads.

    All its state lives on the event loop's thread; only `run_batch` runs elsewhere.

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
        self._pending: collections.deque[_Item] = collections.deque()
        self._pending_size = 0
        self._free_slots = batch_threads
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Batches for the worker threads; None tells one to exit.
        self._calls: queue.SimpleQueue[tuple[list[_Item], Hashable, list[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._idle: asyncio.Event | None = None
        self._stopping = False
        self.stats = BatchStats()

    async def start(self) -> None:
        """Starts batching on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        self._threads = [
            threading.Thread(target=self._work, name=f"model-call-{i}", daemon=True)
            for i in range(self._batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    async def stop(self) -> None:
        """Runs what is queued (without waiting for company), waits for the calls, stops."""
        self._stopping = True
        if self._loop is None:
            return
        self._dispatch()
        await self._idle.wait()
        for _ in self._threads:
            self._calls.put(None)
        for thread in self._threads:
            thread.join()

    async def submit(self, key: Hashable, payload: Any, size: int) -> Any:
        """Queues a request of `size` instances and returns its result when its batch ran.

        Raises:
          RuntimeError: the batcher is stopping.
          Exception: whatever `run_batch` returned or raised for this payload.
        """
        if self._stopping or self._loop is None:
            raise RuntimeError("the server is shutting down")
        future = self._loop.create_future()
        self._pending.append(_Item(key, payload, size, future, self._loop.time()))
        self._pending_size += size
        self._idle.clear()
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        """Starts calls while a slot is free and requests are queued."""
        while self._free_slots > 0 and self._pending:
            if self.max_wait > 0 and not self._stopping:
                if self._pending_size < self.max_batch_size:
                    deadline = self._pending[0].queued_at + self.max_wait
                    if self._loop.time() < deadline:
                        if self._timer is None:
                            self._timer = self._loop.call_at(deadline, self._on_timer)
                        return
            batch = self._take_batch()
            self._free_slots -= 1
            self._calls.put((batch, batch[0].key, [item.payload for item in batch]))
        if self._free_slots == self._batch_threads and not self._pending:
            self._idle.set()

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

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

    def _work(self) -> None:
        """A worker thread: runs batches until told to exit, hands results to the loop."""
        while True:
            call = self._calls.get()
            if call is None:
                return
            batch, key, payloads = call
            try:
                results = self._run_batch(key, payloads)
                if len(results) != len(payloads):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(payloads)}")
            except Exception as e:
                results = [e] * len(payloads)
            self._loop.call_soon_threadsafe(self._finish, batch, results)

    def _finish(self, batch: list[_Item], results: list[Any]) -> None:
        """Back on the event loop: answers the batch's callers, then starts the next call."""
        self._free_slots += 1
        size = sum(item.size for item in batch)
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
        self._dispatch()
