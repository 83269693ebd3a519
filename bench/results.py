"""Everything one benchmark run found, gathered for judging and reporting."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bench import targets
from bench.baselines import Score
from bench.machine import Machine
from bench.measure import Measurement
from bench.ours import RunSummary
from bench.reference import ReferenceExample
from bench.serving import ServingRun


@dataclass(frozen=True)
class ReferenceRun:
    """The reference run and what it produced.

    Attributes:
        example: The shipped example that was run.
        measurement: Its wall time and memory.
        pushed: Whether its Evaluator blessed the model so the Pusher wrote it.
    """

    example: ReferenceExample
    measurement: Measurement
    pushed: bool


@dataclass(frozen=True)
class OursRun:
    """Our run and what it produced.

    Attributes:
        measurement: Its wall time and memory.
        summary: The pipeline's ``summary.json``.
        train_rows: Examples in the train split of its Examples artifact.
        test_rows: Examples in the test split of its Examples artifact (what it is scored on).
        baselines: Baseline predictors scored on the same test split.
    """

    measurement: Measurement
    summary: RunSummary
    train_rows: int
    test_rows: int
    baselines: list[Score] = field(default_factory=list)
    # Examples in the eval split (early stopping and tuning look at it; nothing is scored on it).
    eval_rows: int = 0


@dataclass(frozen=True)
class BenchResults:
    """All figures of one benchmark run.

    Attributes:
        started: When the benchmark started (UTC).
        machine: Where it ran.
        example: The reference example and its training budget (read even when skipped).
        reference: The reference run, or None when skipped.
        ours: Our run.
        config: The pipeline config our run used, as given.
        serving: The serving benchmark, or None when it was not run.
        serving_note: Why the serving benchmark was not run, when it was not.
        tuned: Our pipeline again with tuning switched on, or None when it was not run.
        tuned_note: Why the tuned run was not run, when it was not.
    """

    started: datetime
    machine: Machine
    example: ReferenceExample
    reference: ReferenceRun | None
    ours: OursRun
    config: str
    serving: ServingRun | None = None
    serving_note: str = ""
    tuned: OursRun | None = None
    tuned_note: str = ""

    def boosting_rmse(self) -> float | None:
        """Gradient boosting's test RMSE, when it was scored."""
        found = [s.rmse for s in self.ours.baselines if s.name.startswith("HistGradientBoosting")]
        return found[0] if found else None

    def checks(self) -> list[targets.Check]:
        """Judges every figure that has a target."""
        ours = self.ours.measurement
        reference_seconds = self.reference.measurement.wall_seconds if self.reference else None
        return [
            targets.wall_time(ours.wall_seconds, reference_seconds),
            targets.peak_rss(ours.max_rss_bytes),
            targets.examples_trained(
                self.ours.summary.examples_trained, self.example.examples_trained
            ),
            targets.eval_rmse(self.ours.summary.eval_rmse),
            targets.tuned_against_boosting(
                self.tuned.summary.eval_rmse if self.tuned else None, self.boosting_rmse()
            ),
        ]
