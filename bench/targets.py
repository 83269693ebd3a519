"""The targets our pipeline is held to, and how a figure is judged against them."""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_WALL_TIME_RATIO = 0.5
"""Our wall time may be at most this fraction of the reference's."""

MAX_PEAK_RSS_BYTES = 1_500_000_000
"""Peak RSS of our largest process: at most 1.5 GB (decimal, 1.5 x 10^9 bytes)."""

MAX_EVAL_RMSE_DOLLARS = 5.00
"""Our test RMSE must be strictly under this."""


class Verdict(enum.Enum):
    """Outcome of judging one figure."""

    PASS = "PASS"
    FAIL = "FAIL"
    NOT_MEASURED = "n/a"


@dataclass(frozen=True)
class Check:
    """One figure judged against its target.

    Attributes:
        name: What is judged.
        target: The target, in words.
        value: The figure, formatted.
        verdict: Whether it meets the target.
    """

    name: str
    target: str
    value: str
    verdict: Verdict


def _verdict(ok: bool) -> Verdict:
    """PASS if ``ok`` else FAIL."""
    return Verdict.PASS if ok else Verdict.FAIL


def wall_time(ours_seconds: float, reference_seconds: float | None) -> Check:
    """Judges our wall time relative to the reference's."""
    target = f"ours / reference <= {MAX_WALL_TIME_RATIO:g}x"
    if reference_seconds is None or reference_seconds <= 0:
        return Check("Wall time ratio", target, "reference not run", Verdict.NOT_MEASURED)
    ratio = ours_seconds / reference_seconds
    return Check("Wall time ratio", target, f"{ratio:.2f}x", _verdict(ratio <= MAX_WALL_TIME_RATIO))


def peak_rss(ours_bytes: int) -> Check:
    """Judges the peak RSS of our largest process."""
    target = f"ours <= {MAX_PEAK_RSS_BYTES / 1e9:g} GB"
    return Check(
        "Peak RSS (largest process)",
        target,
        f"{ours_bytes / 1e9:.2f} GB",
        _verdict(0 < ours_bytes <= MAX_PEAK_RSS_BYTES),
    )


def examples_trained(ours: int | None, reference: int) -> Check:
    """Judges how many examples we train on against the reference's budget."""
    if ours is None:
        return Check(
            "Examples trained",
            f"ours >= reference ({reference:,})",
            "not recorded by the run",
            Verdict.NOT_MEASURED,
        )
    return Check(
        "Examples trained",
        f"ours >= reference ({reference:,})",
        f"{ours:,}",
        _verdict(ours >= reference),
    )


def tuned_against_boosting(tuned_rmse: float | None, boosting_rmse: float | None) -> Check:
    """Judges the tuned model's test RMSE against gradient boosting's (issue: model quality)."""
    target = "tuned model <= gradient boosting (test RMSE)"
    if tuned_rmse is None or boosting_rmse is None:
        return Check("Tuned model vs gradient boosting", target, "not run", Verdict.NOT_MEASURED)
    return Check(
        "Tuned model vs gradient boosting",
        target,
        f"${tuned_rmse:.2f} vs ${boosting_rmse:.2f}",
        _verdict(tuned_rmse <= boosting_rmse),
    )


def eval_rmse(rmse: float) -> Check:
    """Judges our model's test RMSE."""
    return Check(
        "Test RMSE",
        f"under ${MAX_EVAL_RMSE_DOLLARS:.2f}",
        f"${rmse:.2f}",
        _verdict(rmse < MAX_EVAL_RMSE_DOLLARS),
    )


MAX_HTTP_OVERHEAD_MS = 2.0
"""HTTP p50 at concurrency 1 may exceed the in-process p50 by at most this."""

MAX_GRPC_OVERHEAD_MS = 1.5
"""gRPC p50 at concurrency 1 may exceed the in-process p50 by at most this."""

MIN_CONCURRENCY_SPEEDUP = 3.0
"""Requests/s at concurrency 16 must be at least this multiple of concurrency 1's."""


def http_overhead(http_p50_ms: float, in_process_p50_ms: float, protocol: str = "HTTP") -> Check:
    """Judges the p50 at concurrency 1 of a protocol against the in-process p50."""
    limit = MAX_GRPC_OVERHEAD_MS if protocol == "gRPC" else MAX_HTTP_OVERHEAD_MS
    overhead = http_p50_ms - in_process_p50_ms
    return Check(
        f"{protocol} p50 overhead, concurrency 1",
        f"<= {limit:g} ms over in process",
        f"{overhead:+.2f} ms ({http_p50_ms:.2f} vs {in_process_p50_ms:.2f} ms)",
        _verdict(overhead <= limit),
    )


def concurrency_speedup(concurrent_rps: float, single_rps: float, protocol: str = "HTTP") -> Check:
    """Judges the throughput gained from 16 concurrent clients."""
    ratio = concurrent_rps / single_rps if single_rps > 0 else 0.0
    return Check(
        f"{protocol} requests/s, concurrency 16 vs 1",
        f">= {MIN_CONCURRENCY_SPEEDUP:g}x",
        f"{ratio:.2f}x ({concurrent_rps:,.0f} vs {single_rps:,.0f} req/s)",
        _verdict(ratio >= MIN_CONCURRENCY_SPEEDUP),
    )


def log_run_errors(errors: int, requests: int, protocol: str = "HTTP") -> Check:
    """Judges the errors of the request-log run: there must be none."""
    return Check(
        f"{protocol} errors in {requests:,} requests, concurrency 32",
        "0",
        f"{errors:,}",
        _verdict(errors == 0),
    )


def logged_instances(
    logged: int, expected: int, unfinished_files: int, exit_code: int, protocol: str = "HTTP"
) -> Check:
    """Judges the request log after a graceful stop: every instance, all files finished."""
    notes = []
    if unfinished_files:
        notes.append(f"{unfinished_files} file(s) left unfinished")
    if exit_code != 0:
        notes.append(f"server exited with {exit_code}")
    return Check(
        f"Instances in the request log after SIGTERM ({protocol} run)",
        f"exactly {expected:,}",
        f"{logged:,}" + (f" ({'; '.join(notes)})" if notes else ""),
        _verdict(logged == expected and not unfinished_files and exit_code == 0),
    )
