"""The one typed config: loaded from configs/<name>.yaml, overridden field by field from the CLI.

Every field is used somewhere; unknown keys and wrong types are errors that name the key and
the file. Relative paths in a config are resolved against the current working directory.
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.monitoring.thresholds import (
    MIN_EXAMPLES,
    TIME_FEATURES,
    ThresholdError,
    Thresholds,
    check_time_features,
    parse_thresholds,
)
from pipeline.serving.config import ServingConfig
from pipeline.vertex import scale_tiers
from taxifare_modules.hparams import NAMES as HYPERPARAMETER_NAMES

# The value of `data.input` that means "the real Chicago sample shipped inside tfx".
TFX_SAMPLE = "tfx-sample"
# The value of `data.input` that means "the query of data.bigquery".
BIGQUERY = "bigquery"
GCS_PREFIX = "gs://"


class ConfigError(Exception):
    """A config that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(_Strict):
    """Hash buckets of the train/eval/test split (train:eval:test in these proportions).

    The Trainer (and the Tuner) learn on train and choose on eval (early stopping, trials);
    the Evaluator blesses on test, which nothing before it has looked at.
    """

    train_buckets: int = Field(3, ge=1, le=100)
    eval_buckets: int = Field(1, ge=1, le=100)
    test_buckets: int = Field(1, ge=1, le=100)
    # Caps on the holdouts' rows at scale (see pipeline/split_sizing.py): when the buckets
    # above would put more rows in eval or test, that split gets just its cap and train the
    # rest. Eval is compared with itself epoch after epoch (early stopping: a paired
    # comparison, far less noisy than one RMSE); test gives the blessed RMSE, whose standard
    # error on the synthetic trips' long-tailed fares is about $0.085 at 200,000 rows (2.5%
    # of a $3.36 RMSE; BENCHMARKS.md, "Scale"). null: no cap.
    max_eval_rows: int | None = Field(100_000, ge=1)
    max_test_rows: int | None = Field(200_000, ge=1)
    # Bytes per CSV row for the row estimate from the input's size (the sample: 128, the
    # synthetic trips: 130); a lower figure overestimates the rows, so the holdouts come out
    # under their caps rather than over.
    bytes_per_row: int = Field(128, ge=1)


# The public table of every Chicago taxi trip since 2013 (about 200 million rows).
CHICAGO_TAXI_TABLE = "bigquery-public-data.chicago_taxi_trips.taxi_trips"
# A calendar month, 1970-01 on (TFX numbers a query's spans from 1970-01-01), or the month
# before the one a run starts in.
PREVIOUS_MONTH = "previous"
_MONTH_PATTERN = rf"^((19[7-9][0-9]|2[0-9]{{3}})-(0[1-9]|1[0-2])|{PREVIOUS_MONTH})$"


class BigQueryConfig(_Strict):
    """The trips BigQueryExampleGen reads when `data.input` is `bigquery`."""

    table: str = Field(CHICAGO_TAXI_TABLE, pattern=r"^[A-Za-z0-9_.-]+$")
    # This run's span: the trips that started in this calendar month (YYYY-MM, UTC). Its span
    # number is TFX's for a query: the day of the month's first day counted from 1970-01-01
    # (2015-01 is span 16436), so later months have higher spans and DriftCheck compares each
    # month with the one checked before it. `previous`: the last whole month before the run
    # starts (UTC), resolved when ExampleGen runs, so a schedule reads month after month
    # (on Vertex its ExampleGen is then never served from the step cache).
    month: str = Field("2015-01", pattern=_MONTH_PATTERN)
    # The share of those trips read, chosen by a hash of the trip id (1.0: all of them).
    sample_fraction: float = Field(1.0, gt=0.0, le=1.0)
    # The Google Cloud project that runs (and is billed for) the query; None: vertex.project.
    project: str | None = Field(None, pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    # The gs:// folder BigQuery exports the result to for Beam; None: the Dataflow temp
    # location of a Vertex run.
    temp_location: str | None = None
    # The Beam job's region; None: vertex.region on Vertex, none locally.
    region: str | None = Field(None, pattern=r"^[a-z]+(-[a-z]+)+[0-9]+$")
    # An existing dataset ("dataset" in the query's project, or "project.dataset") in the
    # table's location (US for the public table) where Beam writes the query's result table.
    # The pipeline's account then needs roles/bigquery.dataEditor on it only, beside
    # roles/bigquery.jobUser. None: Beam creates a temporary dataset for each read, which
    # needs bigquery.datasets.create (roles/bigquery.user on the project).
    temp_dataset: str | None = Field(
        None, pattern=r"^([a-z][a-z0-9-]{4,28}[a-z0-9]\.)?[A-Za-z0-9_]{1,1024}$"
    )

    @field_validator("month", mode="before")
    @classmethod
    def _month_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 2015-01-01 as a date: name it, not its type.
        if isinstance(value, datetime.date):
            raise ValueError(f"a month is YYYY-MM (e.g. \"{value:%Y-%m}\"), not the date {value}")
        return value

    @field_validator("temp_location")
    @classmethod
    def _check_temp_location(cls, value: str | None) -> str | None:
        if value is not None and not _is_gcs(value):
            raise ValueError("must be a gs:// folder: BigQuery exports the query result there")
        return value



class DataConfig(_Strict):
    """Where the trips come from and which labels are plausible."""

    # `tfx-sample`, a local folder of CSV files, a gs:// folder, or `bigquery` (the query of
    # the `bigquery` section, through BigQueryExampleGen).
    input: str = TFX_SAMPLE
    bigquery: BigQueryConfig = BigQueryConfig()
    # Glob under `input` for the files of one run; `{SPAN}` selects the latest span
    # (e.g. "span-{SPAN}/*.csv"). None: every file directly under `input`.
    pattern: str | None = None
    # How many of the latest spans Transform and the Trainer learn from (with `{SPAN}` in the
    # pattern); the Evaluator tests on the newest span alone. 1: the newest span only, so a
    # run costs one span whatever the span's length (a day of BigQuery, a month of synth);
    # a window is the data's choice (docs/data.md, "A window of spans").
    train_spans: int = Field(1, ge=1)
    split: SplitConfig = SplitConfig()
    # Which executor turns the CSVs into tf.Examples (see pipeline/components/csv_example_gen.py):
    # tfx: TFX's own, which infers the column types and reshuffles; a malformed file (a
    #   missing column, text in a numeric column) reaches the AnomalyGate, which stops the
    #   run and lists the anomalies; its runner process holds the whole input in memory.
    # streaming: typed by the curated schema, no reshuffle, memory flat in the rows; a
    #   malformed file stops ExampleGen with the file, line and column named.
    # auto: streaming for a local input above AUTO_MULTI_PROCESSING_BYTES (where Beam also goes
    #   multi-process) with the shipped curated schema, else tfx.
    example_gen: Literal["auto", "tfx", "streaming"] = "auto"
    # Trips whose fare is <= min_fare or > max_fare are excluded from training and evaluation.
    min_fare: float = Field(0.0, ge=0.0)
    max_fare: float = Field(250.0, gt=0.0)
    # Where that range is applied: true, by the streaming ExampleGen as it reads the rows
    # (FareFilter then copies its files and checks the counts, no second pass over the data);
    # false, or with another ExampleGen (tfx, BigQuery), by FareFilter reading every record.
    # The same examples, splits and counts either way; the summary and `taxifare runs` say
    # which ran.
    fold_fare_filter: bool = True
    # The fewest trips the train split and the tested split (test, else eval) may hold after
    # the fare range: fewer stops the run before Transform (exit 3). A model learned from a
    # few dozen trips is not worth serving, and an RMSE on a few dozen test trips is too noisy
    # for its blessing threshold to mean anything.
    min_train_trips: int = Field(2_000, ge=0)
    min_test_trips: int = Field(300, ge=0)
    # Exact duplicate rows in the input (a file copied twice, a re-sent export) above this
    # share of the rows are warned about before the run and in its summary; they are still
    # used (a real trip can repeat at the data's resolution).
    warn_duplicate_share: float = Field(0.01, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_fares(self) -> DataConfig:
        if self.max_fare <= self.min_fare:
            raise ValueError(f"max_fare ({self.max_fare}) must be above min_fare ({self.min_fare})")
        return self

    @model_validator(mode="after")
    def _check_train_spans(self) -> DataConfig:
        # A window needs spans to count: CSV files in span folders named by the pattern.
        spans = self.input != BIGQUERY and "{SPAN}" in (self.pattern or "")
        if self.train_spans > 1 and not spans:
            raise ValueError(
                f"train_spans: {self.train_spans} needs CSV spans, a pattern with {{SPAN}}"
                " (e.g. span-{SPAN}/*.csv); this input has one span"
            )
        return self


class SchemaConfig(_Strict):
    """Which schema validates the data."""

    # curated: the reviewed schema committed to the repo (ImportSchemaGen).
    # inferred: SchemaGen infers one from this data (for a new data source).
    source: Literal["curated", "inferred"] = "curated"
    # The curated schema file; None: the one shipped with the package.
    path: str | None = None


class ModelConfig(_Strict):
    """Hyperparameters of the Keras model (passed to run_fn through custom_config)."""

    hidden_units: tuple[int, ...] = (64, 32)
    embedding_dim: int = Field(8, ge=1, le=256)
    learning_rate: float = Field(0.003, gt=0.0, le=1.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    fare_prior: float = 12.0
    # Huber loss delta in dollars (robust to the long tail of fares); null: mean squared error.
    huber_delta: float | None = Field(5.0, gt=0.0)
    # Quantile buckets per coordinate of the pickup/dropoff grid (a divisor of 64).
    coordinate_buckets: Literal[4, 8, 16, 32, 64] = 16
    # Hash buckets of the pickup-cell x dropoff-cell cross.
    cross_hash_buckets: int = Field(2000, ge=2, le=1_000_000)


class TrainingConfig(_Strict):
    """How long and on what batches the Trainer trains.

    The length comes from the data: epochs over the train split (its examples counted),
    stopped early once the eval RMSE stops improving, the best epoch's weights kept.
    """

    # At most this many passes over the train split.
    epochs: int = Field(30, ge=1)
    # Stop after this many validations (epochs; rounds at scale, see validation_examples)
    # without a better eval RMSE.
    early_stopping_patience: int = Field(3, ge=1)
    # A better eval RMSE must be lower by at least this much (US dollars) to count.
    early_stopping_min_delta: float = Field(0.01, ge=0.0, allow_inf_nan=False)
    # A cap on the total training steps, for quick runs; null: the epochs decide.
    train_steps: int | None = Field(None, ge=1)
    # A cap on the eval batches of each validation; null: the whole eval split.
    eval_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    # TensorFlow and Keras take a seed in 0..2**32-1.
    seed: int | None = Field(42, ge=0, le=2**32 - 1)
    # Read a split into memory once when it has at most in_memory_max_rows examples (fast
    # on data that fits); larger splits, or false, stream from the files.
    in_memory: bool = True
    in_memory_max_rows: int = Field(1_000_000, ge=0)
    # Validate (and so stop early) every this many training examples, a "round", when a
    # pass over the train split is longer; `epochs` then bounds the rounds to as many
    # examples as that many passes, and `early_stopping_patience` counts rounds (patience
    # in examples: patience x this). On 2M trips the eval curve flattened within 1-2 passes
    # of 1.2M examples, which epoch-wise stopping could not see until 3 passes later.
    # null: validate once per pass, however long.
    validation_examples: int | None = Field(500_000, ge=1)
    model: ModelConfig = ModelConfig()


class TuningConfig(_Strict):
    """Hyperparameter search before training (TFX Tuner with KerasTuner).

    The search covers the model (layers, units, learning rate, embedding size, batch size)
    and the preprocessing (coordinate grid, cross hash size); trials are scored on the eval
    split, and the best trial's hyperparameters are the Trainer's.
    """

    enabled: bool = False
    trials: int = Field(10, ge=1, le=1000)
    # random or bayesian. (KerasTuner's Hyperband cannot run under TFX's Tuner, whose
    # executor asks its oracle for max_trials best trials, which Hyperband leaves unset.)
    algorithm: Literal["random", "bayesian"] = "random"
    # Maximum epochs of one trial (each trial also stops early on the eval RMSE).
    epochs: int = Field(10, ge=1)
    # On Vertex: trials run at once, each on its own machines of vertex.training's tier.
    parallel_trials: int = Field(1, ge=1, le=100)
    # Narrows the search: hyperparameter -> values to try (one value fixes it), e.g.
    # {coordinate_buckets: [16, 32], batch_size: [128]}. Names: hidden_layers, hidden_units,
    # learning_rate, embedding_dim, batch_size, coordinate_buckets, cross_hash_buckets.
    search_space: dict[str, tuple[float | int, ...]] = Field(default_factory=dict)

    @field_validator("search_space")
    @classmethod
    def _check_space(cls, value: dict[str, tuple]) -> dict[str, tuple]:
        unknown = sorted(set(value) - set(HYPERPARAMETER_NAMES))
        if unknown:
            raise ValueError(
                f"unknown hyperparameters {unknown}; known: {list(HYPERPARAMETER_NAMES)}"
            )
        empty = sorted(name for name, values in value.items() if not values)
        if empty:
            raise ValueError(f"no values to try for {empty}")
        return value


class EvaluationConfig(_Strict):
    """When the Evaluator blesses a candidate model."""

    # Absolute bound: a model whose test RMSE is above this is not blessed.
    max_rmse: float = Field(7.0, gt=0.0)
    # Change threshold against the last blessed model: blessed only if its RMSE is at most
    # baseline RMSE + max_rmse_increase (0: never worse than the baseline).
    max_rmse_increase: float = Field(0.0, ge=0.0)


# Above this much input (about 500,000 trips of CSV), `auto` runs Beam multi-process: one
# process in memory holds every stage's data and uses one core.
AUTO_MULTI_PROCESSING_BYTES = 64 * 1024 * 1024


class BeamConfig(_Strict):
    """Options of the Beam pipelines the components run."""

    runner: str = "DirectRunner"
    # DirectRunner only: in_memory (fast on small data), multi_threading, multi_processing;
    # auto: in_memory, or multi_processing on every core when the input files are larger
    # than AUTO_MULTI_PROCESSING_BYTES (an input of unknown size counts as small).
    direct_running_mode: Literal["auto", "in_memory", "multi_threading", "multi_processing"] = (
        "auto"
    )
    # DirectRunner only: 0 means one per core (auto sets it: 1 in memory, 0 multi-process).
    direct_num_workers: int = Field(1, ge=0)
    # Any other Beam pipeline option, e.g. ["--temp_location=gs://..."] for another runner.
    extra_args: tuple[str, ...] = ()

    def direct_mode(self, input_bytes: int | None = None) -> tuple[str, int]:
        """The DirectRunner's running mode and number of workers for an input of that size."""
        if self.direct_running_mode != "auto":
            return self.direct_running_mode, self.direct_num_workers
        if input_bytes is not None and input_bytes > AUTO_MULTI_PROCESSING_BYTES:
            return "multi_processing", 0
        return "in_memory", 1

    def to_args(self, input_bytes: int | None = None) -> list[str]:
        """The options as Beam command-line arguments (`input_bytes`: see direct_mode)."""
        args = [f"--runner={self.runner}"]
        if self.runner == "DirectRunner":
            mode, workers = self.direct_mode(input_bytes)
            args += [f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]
        return args + list(self.extra_args)


class OrchestratorConfig(_Strict):
    """Which local orchestrator runs the pipeline."""

    runner: Literal["beam", "local"] = "beam"
    enable_cache: bool = True


OnDetect = Literal["report", "stop"]


class DriftCheckConfig(_Strict):
    """Drift: each run's span of training data against the previous span's."""

    # report: record the verdict and report, and train anyway; stop: fail the run before
    # Transform (nothing trained or pushed, the pushed model stays).
    on_detect: OnDetect = "report"
    # Fields that identify the period (two monthly spans always differ in them, and so do
    # served traffic and the months a model learned from): checked for presence and against
    # the schema, never compared as distributions, by drift and by skew.
    time_features: tuple[str, ...] = TIME_FEATURES

    @field_validator("time_features", mode="before")
    @classmethod
    def _known_time_features(cls, value: Any) -> Any:
        try:
            return check_time_features(value, "time_features")
        except ThresholdError as e:
            raise ValueError(str(e)) from None


class SkewCheckConfig(_Strict):
    """Skew: what the served model sees (the request log) against the training data."""

    # The request log directory of `taxifare serve --log-dir` (gs:// on Vertex), or the
    # endpoint's request-response logging table as bq://project.dataset.table (see
    # endpoint.request_logging); None: no skew check in the pipeline.
    serving_logs: str | None = None
    # report or stop, as for drift.
    on_detect: OnDetect = "report"
    # A bq:// table only: the rows logged in the last window_days days before the check
    # runs, newest first, at most max_rows of them (a row is one request).
    window_days: int = Field(7, ge=1, le=366)
    max_rows: int = Field(50_000, ge=1, le=10_000_000)

    @field_validator("serving_logs")
    @classmethod
    def _check_table(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("bq://"):
            if not re.match(_BQ_TABLE_PATTERN, value):
                raise ValueError("must be a BigQuery table as bq://project.dataset.table")
        return value


class MonitoringConfig(_Strict):
    """Drift and skew checks of a run, and their thresholds (see monitoring/thresholds.py)."""

    drift: DriftCheckConfig = DriftCheckConfig()
    skew: SkewCheckConfig = SkewCheckConfig()
    # Threshold defaults by feature kind: categorical, numeric, coordinate, presence.
    defaults: dict[str, Any] = Field(default_factory=dict)
    # Per-feature thresholds: `feature: distance` or `feature: {distance: .., presence: ..}`.
    features: dict[str, Any] = Field(default_factory=dict)
    # Fewer examples than this on either side: "too few to judge", nothing found.
    min_examples: int = Field(default=MIN_EXAMPLES, ge=1)

    @model_validator(mode="after")
    def _check_thresholds(self) -> MonitoringConfig:
        try:
            self.thresholds()
        except ThresholdError as e:
            raise ValueError(str(e)) from None
        return self

    def thresholds(self) -> Thresholds:
        """The per-feature thresholds of both checks."""
        return parse_thresholds(
            {
                "defaults": self.defaults,
                "features": self.features,
                "min_examples": self.min_examples,
                "drift": {"time_features": list(self.drift.time_features)},
            },
            source="config monitoring",
        )


def _is_gcs(value: str) -> bool:
    return value.startswith(GCS_PREFIX) and len(value) > len(GCS_PREFIX)


# Why a path must be on gs:// when the pipeline runs on Vertex.
_GCS_REASON = "must be a gs:// path: the Vertex containers cannot see this machine's files"


def _check_gcs_field(value: str | None) -> str | None:
    if value is not None and not _is_gcs(value):
        raise ValueError(_GCS_REASON)
    return value


# A Cloud KMS key, a Vertex TensorBoard and a VPC network peered with Vertex, as the Vertex
# and Dataflow APIs name them.
_KMS_KEY_PATTERN = re.compile(
    r"^projects/[^/\s]+/locations/(?P<location>[a-z0-9-]+)/keyRings/[A-Za-z0-9_-]{1,63}"
    r"/cryptoKeys/[A-Za-z0-9_-]{1,63}$"
)
_TENSORBOARD_PATTERN = re.compile(
    r"^projects/[^/\s]+/locations/(?P<location>[a-z0-9-]+)/tensorboards/[0-9]+$"
)
_VERTEX_NETWORK_PATTERN = re.compile(
    r"^projects/[0-9]+/global/networks/[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
)

# The five fields of a cron line: (name, lowest, highest, names allowed for values).
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {name: i + 1 for i, name in enumerate(_MONTH_NAMES)}),
    ("day of week", 0, 7, {name: i for i, name in enumerate(_DAY_NAMES)}),
)


def _cron_value(text: str, field: tuple[str, int, int, dict[str, int]]) -> int:
    name, low, high, names = field
    value = names.get(text.upper()) if not text.isdigit() else int(text)
    if value is None or not low <= value <= high:
        raise ValueError(f"{name} {text!r} is not in {low}-{high}")
    return value


def check_cron(value: str) -> str:
    """A five-field cron line (minute hour day-of-month month day-of-week), as Vertex takes
    it, optionally after a time zone: "TZ=America/Chicago 0 6 * * 1". Raises ValueError."""
    line = value.strip()
    zone = re.match(r"^(CRON_)?TZ=(\S+)\s+", line)
    if zone:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(zone.group(2))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"time zone {zone.group(2)!r} is not an IANA time zone (e.g. America/Chicago)"
            ) from None
        line = line[zone.end() :]
    parts = line.split()
    if len(parts) != 5:
        raise ValueError(
            f"{value!r}: a cron line has five fields (minute hour day-of-month month"
            f" day-of-week), optionally after TZ=Area/City; this one has {len(parts)}"
        )
    for part, field in zip(parts, _CRON_FIELDS, strict=True):
        for item in part.split(","):
            span, _, step = item.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                raise ValueError(f"{field[0]} {item!r}: a step is a positive number")
            if span == "*":
                continue
            first, dash, last = span.partition("-")
            low = _cron_value(first, field)
            if dash and _cron_value(last, field) < low:
                raise ValueError(f"{field[0]} {item!r}: a range goes from low to high")
    return value


def _check_timestamp(value: Any) -> str | None:
    # YAML reads an unquoted 2027-01-01T06:00:00Z as a datetime: keep it, as text.
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO-8601 time (e.g. 2027-01-01T06:00:00Z)"
            ) from None
    else:
        raise ValueError(f"{value!r} is not an ISO-8601 time (e.g. 2027-01-01T06:00:00Z)")
    if moment.tzinfo is None:
        raise ValueError(
            f"{moment.isoformat()} has no time zone: end it with Z or an offset (+01:00)"
        )
    return moment.isoformat()


class ScheduleConfig(_Strict):
    """The Vertex pipeline schedule `taxifare schedule` creates for the compiled spec."""

    # When runs start: five cron fields (minute hour day-of-month month day-of-week), UTC
    # unless prefixed with an IANA time zone as "TZ=America/Chicago 0 6 1 * *"; None: the
    # config cannot be scheduled.
    cron: str | None = None
    # Runs of this schedule running at once; a start due while as many run is skipped (the
    # pipeline's drift pointer and endpoint expect one run at a time).
    max_concurrent_runs: int = Field(1, ge=1)
    # The schedule completes after this many runs; None: until end_time, a pause or a delete.
    max_runs: int | None = Field(None, ge=1)
    # ISO-8601 times with a zone (2027-01-01T06:00:00Z) between which runs start; None: from
    # the schedule's creation, and with no end.
    start_time: str | None = None
    end_time: str | None = None

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("start_time", "end_time", mode="before")
    @classmethod
    def _check_time(cls, value: Any) -> str | None:
        return _check_timestamp(value)

    @model_validator(mode="after")
    def _check_window(self) -> ScheduleConfig:
        if self.start_time is not None and self.end_time is not None:
            start = datetime.datetime.fromisoformat(self.start_time)
            if datetime.datetime.fromisoformat(self.end_time) <= start:
                raise ValueError(
                    f"end_time ({self.end_time}) must be after start_time ({self.start_time})"
                )
        return self


class DataflowConfig(_Strict):
    """How the Beam components (ExampleGen, FareFilter, StatisticsGen, Transform, ...) run."""

    # DataflowRunner: each Beam component runs as a Dataflow job. DirectRunner: inside the
    # component's container, with the `beam` section's direct options (small data only).
    runner: Literal["DataflowRunner", "DirectRunner"] = "DataflowRunner"
    # Where the Dataflow jobs run; None: vertex.region (keep it the bucket's region).
    region: str | None = Field(None, pattern=r"^[a-z]+(-[a-z]+)+[0-9]+$")
    # Dataflow's scratch space; None: <vertex.pipeline_root>/dataflow-tmp.
    temp_location: str | None = None
    machine_type: str = "e2-standard-4"
    max_workers: int = Field(10, ge=1, le=1000)
    # Each worker's boot disk (GB); None: Dataflow's default (250 GB batch, 30 GB with
    # Dataflow Shuffle). Transform and StatisticsGen spill to it on large spans.
    disk_size_gb: int | None = Field(None, ge=30, le=2000)
    # The VPC network and subnetwork the workers join; None: the project's `default` network.
    # A subnetwork is a full URL or regions/REGION/subnetworks/NAME. (The PipelineJob and
    # the training jobs join vertex.network.)
    network: str | None = Field(None, pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
    subnetwork: str | None = Field(
        None,
        pattern=r"^(https://www\.googleapis\.com/compute/v1/projects/[^/]+/)?regions/[a-z0-9-]+/subnetworks/[a-z0-9-]+$",
    )
    # false: the workers get no public IP (the subnetwork needs Private Google Access).
    use_public_ips: bool = True
    # The workers' container: it needs the Beam SDK and this package; None: vertex.image.
    sdk_container_image: str | None = None

    @field_validator("temp_location")
    @classmethod
    def _check_temp_location(cls, value: str | None) -> str | None:
        return _check_gcs_field(value)


class TrainingScaleConfig(_Strict):
    """The Trainer's cluster on Vertex AI Training (see pipeline/vertex/scale_tiers.py)."""

    # basic: one CPU VM; basic-gpu: one VM, one GPU; multi-gpu: one VM, several GPUs;
    # multi-worker: a chief plus workers (GPUs optional); custom: worker_pool_specs below.
    tier: Literal["basic", "basic-gpu", "multi-gpu", "multi-worker", "custom"] = "basic"
    # Overrides of the tier's defaults; None: the tier's own.
    machine_type: str | None = None
    accelerator_type: str | None = None
    accelerator_count: int | None = Field(None, ge=1, le=16)
    # multi-worker only: VMs besides the chief.
    workers: int | None = Field(None, ge=1, le=64)
    # custom only: Vertex worker pools, snake_case, pool 0 the chief (replica_count 1).
    worker_pool_specs: tuple[dict[str, Any], ...] = ()
    # true: the Trainer's and the Tuner's VMs are Spot VMs (cheaper, but Compute Engine can
    # reclaim them at any time: Vertex then restarts the job's workers, a Trainer resuming
    # from its last epoch's backup; the Trainer of a multi-VM tier restarts all its VMs).
    spot: bool = False
    # Vertex stops a Trainer or Tuner job still running after this many hours; None:
    # Vertex's default (7 days).
    timeout_hours: float | None = Field(None, gt=0.0, le=24.0 * 7, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check_tier(self) -> TrainingScaleConfig:
        if self.tier == scale_tiers.CUSTOM:
            overrides = {
                "machine_type": self.machine_type,
                "accelerator_type": self.accelerator_type,
                "accelerator_count": self.accelerator_count,
                "workers": self.workers,
            }
            given = sorted(k for k, v in overrides.items() if v is not None)
            if given:
                raise ValueError(
                    f"{', '.join(given)}: the custom tier takes its machines from"
                    " worker_pool_specs only"
                )
            scale_tiers.check_custom_pools(self.worker_pool_specs)
            return self
        if self.worker_pool_specs:
            raise ValueError(
                f"worker_pool_specs: only the custom tier takes them (tier is {self.tier})"
            )
        self.shape()  # raises ValueError naming the field
        return self

    def shape(self) -> scale_tiers.TierShape:
        """The machines of a non-custom tier, overrides applied."""
        return scale_tiers.resolve_shape(
            self.tier,
            self.machine_type,
            self.accelerator_type,
            self.accelerator_count,
            self.workers,
        )


# bq://project.dataset.table, as Vertex's BigQueryDestination.output_uri takes a table.
_BQ_TABLE_PATTERN = (
    r"^bq://[a-z][a-z0-9-]{4,28}[a-z0-9]"  # project
    r"\.[A-Za-z0-9_]{1,1024}"  # dataset
    r"\.[A-Za-z0-9_-]{1,1024}$"  # table
)


# Google Cloud labels (the same rules for Vertex AI and Dataflow).
_LABEL_KEY_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
# Of a resource's 64 labels, those left to vertex.labels: the pipeline adds taxifare-pipeline
# and taxifare-component (Dataflow) or the model's digest (Model versions), TFX its own.
MAX_USER_LABELS = 60
_LABEL_VALUE_PATTERN = r"^[a-z0-9_-]{0,63}$"


class RequestLoggingConfig(_Strict):
    """The endpoint's request-response logging to BigQuery, which the Pusher turns on.

    The logged rows are what `taxifare skew --serving-logs bq://...` reads on Vertex (the
    prebuilt TF Serving container writes no request log of this project's own).
    """

    # true: after each deploy the Pusher sets the endpoint's logging to the values below;
    # false: the Pusher turns the endpoint's logging off.
    enabled: bool = True
    # The fraction of requests Vertex logs, in (0, 1]: each logged row costs a BigQuery
    # streaming insert and its storage.
    sampling_rate: float = Field(0.1, gt=0.0, le=1.0)
    # bq://project.dataset.table; None: Vertex creates
    # bq://<project>.logging_<endpoint display name>_<endpoint id>.request_response_logging.
    bigquery_table: str | None = None

    @field_validator("bigquery_table")
    @classmethod
    def _check_bigquery_table(cls, value: str | None) -> str | None:
        if value is not None and not re.match(_BQ_TABLE_PATTERN, value):
            raise ValueError("must be a BigQuery table as bq://project.dataset.table")
        return value


class EndpointConfig(_Strict):
    """The autoscaling Vertex AI endpoint the Pusher deploys a blessed model to."""

    # The endpoint's display name (created on the first push); None: the pipeline's name.
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
    machine_type: str = "n1-standard-2"
    min_replicas: int = Field(1, ge=1, le=100)
    max_replicas: int = Field(2, ge=1, le=100)
    # The serving container; None: Vertex's prebuilt TensorFlow 2.15 CPU image near the region.
    serving_image: str | None = None
    # Request-response logging to BigQuery: the serving side of the skew check on Vertex.
    request_logging: RequestLoggingConfig = RequestLoggingConfig()
    # After a successful deploy the Pusher undeploys the endpoint's earlier models but the
    # newest `keep_previous` of them (each deployed model holds its min replicas, billed).
    keep_previous: int = Field(1, ge=0, le=10)

    @model_validator(mode="after")
    def _check_replicas(self) -> EndpointConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be at least min_replicas"
                f" ({self.min_replicas})"
            )
        return self


class VertexConfig(_Strict):
    """Where and how the pipeline runs on Vertex AI Pipelines (absent: local runs only)."""

    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    region: str = Field(pattern=r"^[a-z]+(-[a-z]+)+[0-9]+$")
    # Where Vertex writes the artifacts: a bucket in `region` (single-region).
    pipeline_root: str
    # The pipeline image (see Dockerfile): every component, the Trainer's VMs and, by
    # default, the Dataflow workers run it.
    image: str = Field(pattern=r"^[a-z0-9.-]+(:[0-9]+)?/\S+$")
    # The service account the pipeline, the training job and the Dataflow workers run as;
    # None: the project's default compute service account.
    service_account: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.gserviceaccount\.com$")
    dataflow: DataflowConfig = DataflowConfig()
    training: TrainingScaleConfig = TrainingScaleConfig()
    # The machine each parallel trial of the Tuner's Vertex job runs on, without GPUs (e.g.
    # n1-standard-8); None: the Trainer's chief machine, GPUs included (parallel_trials of
    # them count against the region's GPU quota).
    tuning_machine_type: str | None = Field(None, pattern=r"^[a-z][a-z0-9]*-[a-z0-9-]+$")
    # endpoint: deploy a blessed model to `endpoint`; directory: copy it to
    # <serving_root>/<name>/<version>/ on gs:// (serving_root required).
    push: Literal["endpoint", "directory"] = "endpoint"
    endpoint: EndpointConfig = EndpointConfig()
    # Labels of every billed resource a run creates (the pipeline job, the training and
    # tuning jobs, the Dataflow jobs, the BigQuery query jobs, the model and the endpoint),
    # e.g. {team: pricing, cost-center: ml}: the bill can be split by them.
    labels: dict[str, str] = {}
    # A Cloud KMS key (CMEK), projects/P/locations/L/keyRings/R/cryptoKeys/K, in `region`:
    # it encrypts the pipeline job, the training and tuning jobs, the Dataflow jobs' state
    # and the model and endpoint. None: Google-managed encryption. The Vertex AI and the
    # Dataflow service agents need roles/cloudkms.cryptoKeyEncrypterDecrypter on it.
    encryption_key: str | None = None
    # The VPC network peered with Vertex AI (private services access) that the pipeline job
    # and the training and tuning jobs join: projects/<project NUMBER>/global/networks/NAME.
    # None: no peering. The Dataflow workers' network is dataflow.network/subnetwork.
    network: str | None = Field(None, pattern=_VERTEX_NETWORK_PATTERN.pattern)
    # A Vertex AI TensorBoard in `region`, projects/P/locations/REGION/tensorboards/ID: the
    # Trainer's and the Tuner's jobs stream their TensorBoard logs to it (they write them
    # under <pipeline_root>/tensorboard/). None: no TensorBoard. The pipeline's service
    # account needs roles/aiplatform.user and write access to the pipeline root.
    tensorboard: str | None = None
    # The Vertex schedule `taxifare schedule` creates.
    schedule: ScheduleConfig = ScheduleConfig()

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_USER_LABELS:
            raise ValueError(
                f"{len(value)} labels: at most {MAX_USER_LABELS} (Google Cloud takes 64 on a"
                " resource, and the pipeline and TFX add up to four of their own)"
            )
        for key, label in value.items():
            if key.startswith("taxifare-") or key.startswith("tfx"):
                raise ValueError(
                    f"label key {key!r}: taxifare-* and tfx* keys are the pipeline's own (they"
                    " name the pipeline, its component, the model's digest, TFX's executor)"
                )
            if not re.match(_LABEL_KEY_PATTERN, key):
                raise ValueError(
                    f"label key {key!r}: lowercase letters, digits, _ and -, starting with a"
                    " letter, at most 63 characters"
                )
            if not re.match(_LABEL_VALUE_PATTERN, label):
                raise ValueError(
                    f"label {key}: value {label!r}: lowercase letters, digits, _ and -, at most"
                    " 63 characters"
                )
        return value

    @field_validator("encryption_key")
    @classmethod
    def _check_encryption_key(cls, value: str | None) -> str | None:
        if value is not None and not _KMS_KEY_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not a Cloud KMS key: projects/P/locations/L/keyRings/R/cryptoKeys/K"
            )
        return value

    @field_validator("tensorboard")
    @classmethod
    def _check_tensorboard(cls, value: str | None) -> str | None:
        if value is not None and not _TENSORBOARD_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not a Vertex TensorBoard:"
                " projects/P/locations/REGION/tensorboards/ID"
            )
        return value

    @model_validator(mode="after")
    def _check_regional_resources(self) -> VertexConfig:
        # Vertex and Dataflow refuse a key or a TensorBoard of another region, when the job
        # is created: say so at load time instead.
        if self.encryption_key is not None:
            location = _KMS_KEY_PATTERN.match(self.encryption_key)["location"]
            if location != self.region:
                raise ValueError(
                    f"encryption_key: the key is in {location!r} but vertex.region is"
                    f" {self.region!r}: Vertex AI takes a key in the job's region only"
                )
            dataflow_region = self.dataflow.region or self.region
            if self.dataflow.runner == "DataflowRunner" and dataflow_region != location:
                raise ValueError(
                    f"encryption_key: the key is in {location!r} but the Dataflow jobs run in"
                    f" {dataflow_region!r} (vertex.dataflow.region): Dataflow takes a key in"
                    " the job's region only"
                )
        if self.tensorboard is not None:
            location = _TENSORBOARD_PATTERN.match(self.tensorboard)["location"]
            if location != self.region:
                raise ValueError(
                    f"tensorboard: the TensorBoard is in {location!r} but vertex.region is"
                    f" {self.region!r}: the training jobs can only write to one in their region"
                )
            if self.service_account is None:
                raise ValueError(
                    "tensorboard: set vertex.service_account too: Vertex AI streams a training"
                    " job's logs to a TensorBoard only for a job run as a service account"
                )
        return self

    @field_validator("pipeline_root")
    @classmethod
    def _check_pipeline_root(cls, value: str) -> str:
        return _check_gcs_field(value) or value

    @field_validator("tuning_machine_type")
    @classmethod
    def _check_tuning_machine(cls, value: str | None) -> str | None:
        if value is not None:
            from pipeline.vertex.scale_tiers import check_machine

            check_machine(value, None, "")
        return value


class Config(_Strict):
    """The whole configuration of one taxifare deployment."""

    name: str = Field("taxifare", pattern=r"^[a-z][a-z0-9-]{0,62}$")
    # Everything a run writes: pipeline artifacts, MLMD (SQLite) and the serving directory.
    root: str = Field("build/taxifare", min_length=1)
    # Where the Pusher writes `<serving_root>/<name>/<version>/`; None: `<root>/serving`.
    serving_root: str | None = None
    data: DataConfig = DataConfig()
    schema_: SchemaConfig = Field(SchemaConfig(), alias="schema")
    training: TrainingConfig = TrainingConfig()
    tuning: TuningConfig = TuningConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    beam: BeamConfig = BeamConfig()
    orchestrator: OrchestratorConfig = OrchestratorConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    # `taxifare serve` (its flags override single fields).
    serving: ServingConfig = ServingConfig()
    # Vertex AI Pipelines; None: the pipeline runs on this machine only.
    vertex: VertexConfig | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check_vertex(self) -> Config:
        # A Vertex run executes in containers on Google Cloud: every path they read or
        # write must be on gs://, and that is checked here rather than an hour into a run.
        if self.vertex is None:
            return self
        paths = {} if self.data.input == BIGQUERY else {"data.input": self.data.input}
        if self.schema_config.source == "curated" and self.schema_config.path is not None:
            paths["schema.path"] = self.schema_config.path
        if self.vertex.push == "directory":
            if self.serving_root is None:
                raise ValueError("serving_root: vertex.push is 'directory': set a gs:// folder")
            paths["serving_root"] = self.serving_root
        for key, value in paths.items():
            if not _is_gcs(value):
                raise ValueError(f"{key} ({value!r}) {_GCS_REASON}")
        serving_logs = self.monitoring.skew.serving_logs
        if serving_logs is not None and not (
            _is_gcs(serving_logs) or serving_logs.startswith("bq://")
        ):
            raise ValueError(
                f"monitoring.skew.serving_logs ({serving_logs!r}) must be a gs:// folder of"
                " `taxifare serve` logs or the endpoint's logging table as"
                " bq://project.dataset.table: the Vertex containers cannot see this machine's"
                " files"
            )
        if self.beam.runner != "DirectRunner":
            raise ValueError(
                f"beam.runner ({self.beam.runner!r}): on Vertex the runner is"
                " vertex.dataflow.runner"
            )
        return self

    def with_absolute_paths(self) -> Config:
        """This config with its local paths made absolute (against the working directory).

        A run records paths in MLMD and in its artifacts, and later runs, `taxifare serve`
        and `taxifare skew` read them back from wherever they are started: a relative path
        would only work from the directory the first run was started in.
        """

        def absolute(path: str | None) -> str | None:
            return path if path is None or "://" in path else os.path.abspath(path)

        data = self.data
        if data.input not in (TFX_SAMPLE, BIGQUERY):
            data = data.model_copy(update={"input": absolute(data.input)})
        schema = self.schema_.model_copy(update={"path": absolute(self.schema_.path)})
        skew = self.monitoring.skew
        monitoring = self.monitoring.model_copy(
            update={"skew": skew.model_copy(update={"serving_logs": absolute(skew.serving_logs)})}
        )
        return self.model_copy(
            update={
                "root": absolute(self.root),
                "serving_root": absolute(self.serving_root),
                "data": data,
                "schema_": schema,
                "monitoring": monitoring,
            }
        )

    @property
    def schema_config(self) -> SchemaConfig:
        """The schema section (named `schema` in YAML)."""
        return self.schema_

    @property
    def pipeline_root(self) -> str:
        """Where TFX writes the artifacts: under `root`, or vertex.pipeline_root on Vertex."""
        if self.vertex is not None:
            return self.vertex.pipeline_root
        return os.path.join(self.root, "pipeline")

    @property
    def metadata_path(self) -> str:
        """The MLMD SQLite file."""
        return os.path.join(self.root, "metadata.sqlite")

    @property
    def serving_model_dir(self) -> str:
        """The versioned model directory TF Serving (and `taxifare serve`) reads."""
        return os.path.join(self.serving_root or os.path.join(self.root, "serving"), self.name)


class _NotYaml(str):
    """A --set value that is not valid YAML, kept as its text (fine where text is expected)."""

    problem: str


def _parse_value(text: str) -> Any:
    """A --set value as YAML (so 5 is an int, true a bool, [1, 2] a list).

    Text that is not YAML (`*.csv` reads as an alias, `[64,` as an open list) is kept as
    text: right for a text field; any other field names it (see `_format_error`).
    """
    if not text.strip():
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        kept = _NotYaml(text)
        kept.problem = " ".join(str(getattr(e, "problem", None) or e).split())
        return kept


def _apply_override(data: dict[str, Any], assignment: str) -> None:
    """Applies one `dotted.key=value` override to the raw config dict."""
    if "=" not in assignment:
        raise ConfigError(
            f"--set {assignment!r}: expected key=value, e.g. training.train_steps=100"
        )
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = _parse_value(value)


def _format_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        elif item["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        elif item["type"] == "value_error" and isinstance(item.get("input"), dict):
            # A check across a section: its message names the keys; the section is noise.
            message = item["msg"].removeprefix("Value error, ")
            named = key and not message.startswith(f"{key}.")
            lines.append(f"  {key}: {message}" if named else f"  {message}")
        elif isinstance(item.get("input"), _NotYaml) and not (
            # A text field's own check (a cron line starts with `*`): its message, not YAML's.
            item["type"].startswith("string_") or item["type"] == "value_error"
        ):
            value = item["input"]
            lines.append(
                f"  {key}: --set value {str(value)!r} is not valid YAML ({value.problem}) and"
                " this key does not take text; quote or fix it"
            )
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  {key or '(top level)'}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_config(
    path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Loads and validates a config file, then applies `key=value` overrides.

    Args:
      path: a YAML file.
      overrides: dotted assignments such as "training.train_steps=100".

    Returns:
      The frozen config.

    Raises:
      ConfigError: the file is missing or unreadable, or a key or value is invalid; the
        message names the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys, not {type(data).__name__}"
        )
    for assignment in overrides:
        _apply_override(data, assignment)
    source = f"{path}" + (" (with --set overrides)" if overrides else "")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None
