"""The targets our pipeline is held to, and how a figure is judged against them."""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_WALL_TIME_RATIO = 0.5
"""Our wall time may be at most this fraction of the reference's."""

MAX_PEAK_RSS_BYTES = 1_500_000_000
"""Peak RSS of our largest process: at most 1.5 GB (decimal, 1.5 x 10^9 bytes)."""

MAX_EVAL_RMSE_DOLLARS = 5.00
"""Our eval RMSE must be strictly under this."""


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


def examples_trained(ours: int, reference: int) -> Check:
    """Judges how many examples we train on against the reference's budget."""
    return Check(
        "Examples trained",
        f"ours >= reference ({reference:,})",
        f"{ours:,}",
        _verdict(ours >= reference),
    )


def eval_rmse(rmse: float) -> Check:
    """Judges our model's eval RMSE."""
    return Check(
        "Eval RMSE",
        f"under ${MAX_EVAL_RMSE_DOLLARS:.2f}",
        f"${rmse:.2f}",
        _verdict(rmse < MAX_EVAL_RMSE_DOLLARS),
    )
