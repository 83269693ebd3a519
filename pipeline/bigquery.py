"""The BigQuery input: one calendar month per span, read by TFX's query-based ExampleGen.

TFX numbers a query's spans in days: span N starts at the UTC midnight N days after
1970-01-01, and its driver writes that instant into the query's `@span_begin_timestamp`
(example_gen/utils.py, get_query_for_span). A span here is a calendar month, so its number is
the day of the month's first day (2015-01 is 16436) and the query itself reaches the end of
the month from `@span_begin_timestamp`. Span numbers grow month by month: DriftCheck compares
each month with the one checked before it.

The query keeps only the rows the curated schema accepts in TRAINING (see REQUIRED_COLUMNS),
so a NULL in a required column of the real table does not stop the run at the AnomalyGate.

Light on purpose: the config checks and the read-only commands import this module.
"""

from __future__ import annotations

import datetime

from pipeline.config import PREVIOUS_MONTH, BigQueryConfig

# TFX's placeholder for the UTC start of a query's span, in seconds since the epoch.
SPAN_BEGIN_PLACEHOLDER = "@span_begin_timestamp"
_EPOCH = datetime.date(1970, 1, 1)

# The columns the curated schema requires in every training example (presence min_fraction
# 1.0 in TRAINING) that the table may leave NULL; the trip start, which the month, hour and
# day come from, is non-NULL by the span's range. tests/vertex/test_bigquery_sql.py derives
# the list from pipeline/schema/schema.pbtxt, so a new required feature fails there.
REQUIRED_COLUMNS = ("fare", "payment_type")

# The key of BigQueryExampleGen's custom_config that pipeline.bigquery_executor reads.
READ_SETTINGS_KEY = "taxifare_bigquery_read"


def month_span(month: str) -> int:
    """The span number of a month ("YYYY-MM"): its first day counted from 1970-01-01."""
    year, number = (int(part) for part in month.split("-"))
    return (datetime.date(year, number, 1) - _EPOCH).days


def resolve_month(month: str, now: datetime.datetime | None = None) -> str:
    """The calendar month ("YYYY-MM") `data.bigquery.month` names at `now` (default: the
    current time, UTC): itself, or for `previous` the last whole month before `now`."""
    if month != PREVIOUS_MONTH:
        return month
    now = now or datetime.datetime.now(datetime.timezone.utc)
    first = now.astimezone(datetime.timezone.utc).date().replace(day=1)
    return f"{first - datetime.timedelta(days=1):%Y-%m}"


def is_relative_month(bq: BigQueryConfig) -> bool:
    """Whether the month is resolved when ExampleGen runs (`previous`), not fixed."""
    return bq.month == PREVIOUS_MONTH


def span_month(span: int) -> str:
    """The month ("YYYY-MM") whose first day is span `span`; ValueError for another day."""
    day = _EPOCH + datetime.timedelta(days=span)
    if day.day != 1:
        raise ValueError(f"span {span} is {day}, not the first day of a month")
    return f"{day:%Y-%m}"


def bigquery_query(bq: BigQueryConfig) -> str:
    """The query of every span: TFX fills `@span_begin_timestamp` with the span's start.

    It selects the sample's 18 columns (booking-time fields, the label and the post-trip
    fields) from the trips that started in the span's month and have every REQUIRED_COLUMNS
    value. The table's times are Chicago local times stored as UTC (as in the sample): hour,
    day of week (1 = Sunday) and month are read in UTC to match the CSV data.
    """
    sample = ""
    if bq.sample_fraction < 1.0:
        # The same trips on every read of the month: a hash of the trip id, not RAND().
        per_million = round(bq.sample_fraction * 1_000_000)
        sample = f"\n  AND MOD(ABS(FARM_FINGERPRINT(unique_key)), 1000000) < {per_million}"
    required = "".join(f"\n  AND {column} IS NOT NULL" for column in REQUIRED_COLUMNS)
    begin = f"TIMESTAMP_SECONDS({SPAN_BEGIN_PLACEHOLDER})"
    # DATE_ADD on the DATE: TIMESTAMP_ADD takes no MONTH; the span starts at UTC midnight.
    end = f"TIMESTAMP(DATE_ADD(DATE({begin}), INTERVAL 1 MONTH))"
    return f"""SELECT
  pickup_community_area,
  fare,
  EXTRACT(MONTH FROM trip_start_timestamp) AS trip_start_month,
  EXTRACT(HOUR FROM trip_start_timestamp) AS trip_start_hour,
  EXTRACT(DAYOFWEEK FROM trip_start_timestamp) AS trip_start_day,
  UNIX_SECONDS(trip_start_timestamp) AS trip_start_timestamp,
  pickup_latitude,
  pickup_longitude,
  dropoff_latitude,
  dropoff_longitude,
  trip_miles,
  pickup_census_tract,
  dropoff_census_tract,
  payment_type,
  company,
  trip_seconds,
  dropoff_community_area,
  tips
FROM `{bq.table}`
WHERE trip_start_timestamp >= {begin}
  AND trip_start_timestamp < {end}{required}{sample}"""


def temp_dataset(bq: BigQueryConfig, project: str | None) -> str | None:
    """The configured temp dataset as "project.dataset" (None: Beam creates one per read).

    Raises:
      ValueError: a dataset without a project when no project is configured.
    """
    if bq.temp_dataset is None or "." in bq.temp_dataset:
        return bq.temp_dataset
    if not project:
        raise ValueError(
            f"data.bigquery.temp_dataset: {bq.temp_dataset!r} names no project; write"
            " project.dataset or set data.bigquery.project"
        )
    return f"{project}.{bq.temp_dataset}"


def read_settings(
    bq: BigQueryConfig, project: str | None, labels: dict[str, str]
) -> dict[str, object]:
    """What pipeline.bigquery_executor passes to Beam's ReadFromBigQuery besides the query."""
    return {
        "temp_dataset": temp_dataset(bq, project),
        "labels": dict(labels),
        # `previous`: pipeline.bigquery_executor resolves the month itself when no driver ran.
        "month": bq.month,
    }
