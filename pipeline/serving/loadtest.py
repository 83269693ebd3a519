"""Latency and throughput of a running server under concurrent clients."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from pipeline.serving.client import predict_url


async def run_load(
    url: str,
    instances: list[Any],
    concurrency: int,
    total_requests: int,
    model_name: str = "taxifare",
    instances_per_request: int = 1,
    timeout: float = 30.0,
) -> dict[str, float]:
    """Sends `total_requests` predict requests from `concurrency` concurrent clients.

    Request `i` carries `instances_per_request` instances, taken round-robin from
    `instances`. Latency is measured per request, from send to full answer.

    Args:
      url: the server, e.g. `http://127.0.0.1:8501`.
      instances: JSON instances to send.
      concurrency: how many requests are in flight at once.
      total_requests: how many requests to send in all.
      model_name: the model in the URL.
      instances_per_request: instances per request.
      timeout: per-request timeout in seconds (a timeout counts as an error).

    Returns:
      `requests`, `errors` (non-200 answers and failures), `seconds`, `requests_per_s`,
      `instances_per_s`, and latency percentiles of the successful requests in ms:
      `p50_ms`, `p90_ms`, `p99_ms`, `max_ms` (NaN if none succeeded).
    """
    import httpx

    if not instances or concurrency < 1 or total_requests < 1 or instances_per_request < 1:
        raise ValueError("need instances and positive concurrency, requests and batch size")
    target = predict_url(url, model_name)
    bodies = [
        {
            "instances": [
                instances[(i * instances_per_request + j) % len(instances)]
                for j in range(instances_per_request)
            ]
        }
        for i in range(min(total_requests, len(instances)))
    ]
    latencies: list[float] = []
    errors = 0
    next_request = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def worker() -> None:
            nonlocal next_request, errors
            while next_request < total_requests:
                i = next_request
                next_request += 1
                started = time.perf_counter()
                try:
                    response = await client.post(target, json=bodies[i % len(bodies)])
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - started) * 1000.0)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started

    ms = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "requests": total_requests,
        "concurrency": concurrency,
        "errors": errors,
        "seconds": seconds,
        "requests_per_s": len(latencies) / seconds,
        "instances_per_s": len(latencies) * instances_per_request / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(np.max(ms)),
    }
