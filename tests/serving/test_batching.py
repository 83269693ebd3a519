"""The micro-batcher: concurrent submissions share calls, by key, within the size limit."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pipeline.serving.batching import MicroBatcher


class Recorder:
    """A run_batch that records each call and answers each payload doubled."""

    def __init__(self, delay: float = 0.02) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, key, payloads):
        time.sleep(self.delay)  # a model call takes a while: others queue meanwhile
        with self.lock:
            self.calls.append((key, list(payloads)))
        return [ValueError(f"bad {p}") if p < 0 else p * 2 for p in payloads]


async def _submit_all(batcher: MicroBatcher, items):
    await batcher.start()
    try:
        return await asyncio.gather(
            *(batcher.submit(key, payload, size) for key, payload, size in items),
            return_exceptions=True,
        )
    finally:
        await batcher.stop()


def test_concurrent_submissions_share_calls_and_get_their_own_answers():
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_ms=5)
    items = [("a", i, 1) for i in range(40)]
    results = asyncio.run(_submit_all(batcher, items))
    assert results == [i * 2 for i in range(40)]
    assert len(recorder.calls) < 40 / 2
    assert all(sum(1 for _ in payloads) <= 8 for _, payloads in recorder.calls)
    assert batcher.stats.requests == 40 and batcher.stats.model_calls == len(recorder.calls)
    assert batcher.stats.largest_batch > 1


def test_keys_are_never_mixed_and_errors_stay_with_their_request():
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch_size=64, max_wait_ms=5)
    items = [("a" if i % 2 else "b", -i if i == 3 else i, 1) for i in range(20)]
    results = asyncio.run(_submit_all(batcher, items))
    for key, payloads in recorder.calls:
        assert {("a" if p % 2 else "b") for p in map(abs, payloads)} == {key}
    assert isinstance(results[3], ValueError) and str(results[3]) == "bad -3"
    assert [r for i, r in enumerate(results) if i != 3] == [i * 2 for i in range(20) if i != 3]


def test_a_request_larger_than_the_batch_runs_alone():
    recorder = Recorder(delay=0)
    batcher = MicroBatcher(recorder, max_batch_size=4, max_wait_ms=1)
    results = asyncio.run(_submit_all(batcher, [("a", 1, 10), ("a", 2, 1)]))
    assert results == [2, 4]
    assert sorted(len(p) for _, p in recorder.calls) == [1, 1]


def test_submit_after_stop_is_refused():
    async def scenario():
        batcher = MicroBatcher(Recorder(delay=0))
        await batcher.start()
        await batcher.stop()
        with pytest.raises(RuntimeError, match="shutting down"):
            await batcher.submit("a", 1, 1)

    asyncio.run(scenario())


class GatedRecorder:
    """A run_batch whose calls each block until the test opens the gate."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.entered = threading.Semaphore(0)
        self.gate = threading.Event()

    def __call__(self, key, payloads):
        self.calls.append(list(payloads))
        self.entered.release()
        assert self.gate.wait(60), "the test never opened the gate"
        return [p * 2 for p in payloads]


def test_an_idle_model_runs_a_request_at_once_and_requests_queued_meanwhile_go_together():
    async def scenario():
        recorder = GatedRecorder()
        batcher = MicroBatcher(recorder, max_batch_size=64)  # no max_wait: the default
        await batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit("a", 1, 1))
            # The call starts with the lone request: nobody waits for company.
            assert await asyncio.to_thread(recorder.entered.acquire, timeout=60)
            assert recorder.calls == [[1]]
            rest = [asyncio.ensure_future(batcher.submit("a", p, 1)) for p in (2, 3, 4, 5)]
            await asyncio.sleep(0)  # they are queued behind the running call
            assert recorder.calls == [[1]]
            recorder.gate.set()
            results = await asyncio.gather(first, *rest)
        finally:
            recorder.gate.set()
            await batcher.stop()
        assert results == [2, 4, 6, 8, 10]
        assert recorder.calls == [[1], [2, 3, 4, 5]]
        assert batcher.stats.model_calls == 2 and batcher.stats.largest_batch == 4

    asyncio.run(scenario())


def test_max_wait_holds_a_batch_for_company_unless_full_and_stop_runs_what_waits():
    async def scenario():
        recorder = Recorder(delay=0)
        # A wait far longer than the test: only a full batch or the stop can start a call.
        batcher = MicroBatcher(recorder, max_batch_size=3, max_wait_ms=600_000)
        await batcher.start()
        full = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit("a", p, 1) for p in (1, 2, 3))), 60
        )
        waiting = asyncio.ensure_future(batcher.submit("a", 4, 1))
        await asyncio.sleep(0)
        assert recorder.calls == [("a", [1, 2, 3])]
        await asyncio.wait_for(batcher.stop(), 60)
        return full, await waiting

    full, last = asyncio.run(scenario())
    assert full == [2, 4, 6] and last == 8
