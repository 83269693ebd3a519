"""The train/eval/test split sized to the input: holdouts capped in rows, the rest to train.

ExampleGen splits by hashing each example into one of `sum(buckets)` integer buckets and
giving each split its run of buckets. On a small input the configured buckets
(`data.split`, 3:1:1) are used as they are. Once the configured shares would put more rows
in eval or test than their caps (`data.split.max_eval_rows`, `max_test_rows`), those splits
get just enough buckets for their cap and train gets the rest: an estimate's standard error
shrinks only with the square root of its rows, while every extra holdout row is a row not
learned from and a row the Evaluator (or every validation) scores again.

The rows are estimated before the run from the input's size in bytes
(`data.split.bytes_per_row`), so the DAG is fixed when it is compiled; an input of unknown
size (BigQuery, a gs:// folder) keeps the configured buckets. Light: no TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# Each capped split gets at least this many buckets, so rounding its share down to whole
# buckets costs at most 1% of its cap.
MIN_CAPPED_BUCKETS = 100
# The finest split resolution: 10**7 buckets (a split of a tenth of a row per million).
MAX_TOTAL_BUCKETS = 10**7


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """The hash buckets ExampleGen is given and why."""

    train_buckets: int
    eval_buckets: int
    test_buckets: int
    # Rows estimated from the input's bytes; None when the size is unknown.
    estimated_rows: int | None
    sized: bool  # True: the caps changed the configured buckets
    reason: str

    @property
    def shares(self) -> tuple[float, float, float]:
        """The train, eval and test shares of the examples (they sum to 1)."""
        total = self.train_buckets + self.eval_buckets + self.test_buckets
        return (
            self.train_buckets / total,
            self.eval_buckets / total,
            self.test_buckets / total,
        )

    def ratio_text(self) -> str:
        """The shares as people read them, e.g. `train 85% : eval 5% : test 10%`."""
        train, eval_, test = (_percent(s) for s in self.shares)
        return f"train {train} : eval {eval_} : test {test}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (recorded with the run; see describe_recorded)."""
        return {**dataclasses.asdict(self), "ratio": self.ratio_text()}


def _percent(share: float) -> str:
    text = f"{share * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text}%"


def plan_split(
    buckets: tuple[int, int, int],
    max_eval_rows: int | None,
    max_test_rows: int | None,
    bytes_per_row: int,
    input_bytes: int | None,
) -> SplitPlan:
    """The split of an input of `input_bytes` bytes (see the module docstring).

    Args:
      buckets: the configured train, eval and test buckets.
      max_eval_rows: the most rows eval should hold; None: no cap.
      max_test_rows: the most rows test should hold; None: no cap.
      bytes_per_row: the input's bytes per row, for the row estimate.
      input_bytes: the input's size; None when unknown.
    """
    train, eval_, test = buckets
    configured = f"{train}:{eval_}:{test} as configured (data.split)"
    if input_bytes is None:
        return SplitPlan(
            train, eval_, test, None, False, f"{configured}; input size unknown, no caps applied"
        )
    rows = max(1, math.ceil(input_bytes / bytes_per_row))
    total = train + eval_ + test
    shares = {"eval": eval_ / total, "test": test / total}
    caps = {"eval": max_eval_rows, "test": max_test_rows}
    capped = {
        name: cap / rows
        for name, cap in caps.items()
        if cap is not None and rows * shares[name] > cap
    }
    estimate = f"~{rows:,} rows estimated from {input_bytes / 2**20:,.1f} MiB"
    if not capped:
        return SplitPlan(
            train, eval_, test, rows, False, f"{configured}; {estimate}, holdouts within their caps"
        )
    # The fewest buckets (a power of 10) that give every capped split MIN_CAPPED_BUCKETS.
    total_buckets = 10 ** max(3, math.ceil(math.log10(MIN_CAPPED_BUCKETS / min(capped.values()))))
    total_buckets = min(total_buckets, MAX_TOTAL_BUCKETS)
    # A capped split rounds down (never above its cap); an uncapped one keeps its share.
    new = {
        name: max(1, math.floor(capped[name] * total_buckets))
        if name in capped
        else max(1, round(shares[name] * total_buckets))
        for name in ("eval", "test")
    }
    why = ", ".join(
        f"{name} capped at {caps[name]:,} rows (data.split.max_{name}_rows)" for name in capped
    )
    return SplitPlan(
        total_buckets - new["eval"] - new["test"],
        new["eval"],
        new["test"],
        rows,
        True,
        f"sized to the input: {estimate}; {why}; the rest to train",
    )


def describe_recorded(record: dict[str, Any] | None) -> str | None:
    """One line on a recorded split plan (SplitPlan.to_json), or None when none was."""
    if not record or "ratio" not in record:
        return None
    return f"{record['ratio']} ({record.get('reason', '')})"
