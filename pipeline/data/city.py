"""The city model: what the generator learns from the real Chicago sample.

Learned at run time from the sample CSV inside the installed tfx package (15,002 rows, read
in well under a second): the pinned tfx version fixes the sample, so the same seed gives the
same bytes on every machine, and no derived copy of the data has to be kept in step with it.

What is kept is the sample's own discrete structure, never a smoothed stand-in:
- places: the distinct (community area, latitude, longitude, census tract) tuples of pickups
  and of dropoffs, with their exact CSV text (the coordinates are area or tract centroids),
  missing cells included, so missing-value rates and the joint presence patterns carry over;
- the pickup-dropoff pattern: every sample row links a pickup place to a dropoff place;
  a dropoff is drawn from the rows that share the trip's pickup place;
- time: the joint (day of week, hour) shares, the trips per calendar month, 15-minute times;
- company and payment-type shares (missing company included);
- traffic: the median speed of real trips by start hour (from trip_miles / trip_seconds).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os

import numpy as np

from taxifare_modules import features as f

# Earth radius in miles, for the straight-line distance between two centroids.
EARTH_RADIUS_MILES = 3958.8
_PICKUP_COLUMNS = (
    f.PICKUP_AREA_KEY,
    f.PICKUP_LATITUDE_KEY,
    f.PICKUP_LONGITUDE_KEY,
    "pickup_census_tract",
)
_DROPOFF_COLUMNS = (
    f.DROPOFF_AREA_KEY,
    f.DROPOFF_LATITUDE_KEY,
    f.DROPOFF_LONGITUDE_KEY,
    "dropoff_census_tract",
)
# Real trips used to learn the speed by hour: plausible distance, time and speed only.
_MIN_MILES, _MIN_SECONDS, _MAX_MPH = 0.3, 60, 60.0
SECONDS_PER_HOUR = 3600


class CityError(Exception):
    """The sample cannot be learned from; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Places:
    """Distinct places (pickup or dropoff) and their CSV text."""

    columns: tuple[str, ...]  # the CSV columns of a place, e.g. pickup area, lat, lon, tract
    text: tuple[tuple[str, ...], ...]  # per place, the cell text of each column
    lat: np.ndarray  # radians; NaN when the place has no coordinates
    lon: np.ndarray


@dataclasses.dataclass(frozen=True)
class City:
    """Everything the generator draws from (see the module docstring)."""

    header: tuple[str, ...]
    pickups: Places
    dropoffs: Places
    row_pickup: np.ndarray  # per sample row: its pickup place
    row_dropoff: np.ndarray  # per sample row: its dropoff place
    by_pickup_rows: np.ndarray  # sample rows sorted by pickup place
    by_pickup_start: np.ndarray  # per pickup place: first index into by_pickup_rows
    by_pickup_count: np.ndarray  # per pickup place: how many rows
    week_hour_shares: np.ndarray  # (7, 24): day of week 1-7 (1 = Sunday) by hour
    month_counts: dict[tuple[int, int], int]  # (year, month) -> sample trips
    companies: tuple[str, ...]
    company_shares: np.ndarray
    payment_types: tuple[str, ...]
    payment_shares: np.ndarray
    mph_by_hour: np.ndarray  # (24,)

    @property
    def rows(self) -> int:
        """Trips in the sample."""
        return len(self.row_pickup)

    @property
    def last_month(self) -> tuple[int, int]:
        """The sample's latest (year, month)."""
        return max(self.month_counts)


def _places(rows: list[dict[str, str]], columns: tuple[str, ...]) -> tuple[Places, np.ndarray]:
    ids: dict[tuple[str, ...], int] = {}
    row_place = np.empty(len(rows), dtype=np.int32)
    for i, row in enumerate(rows):
        key = tuple(row[c] for c in columns)
        row_place[i] = ids.setdefault(key, len(ids))
    text = tuple(ids)

    def radians(index: int) -> np.ndarray:
        return np.radians(np.array([float(t[index]) if t[index] else math.nan for t in text]))

    return Places(columns, text, radians(1), radians(2)), row_place


def _shares(values: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    names = tuple(sorted(counts, key=lambda k: (-counts[k], k)))
    shares = np.array([counts[n] for n in names], dtype=np.float64)
    return names, shares / shares.sum()


def haversine_miles(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Straight-line miles between points given in radians (NaN where one is missing)."""
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_MILES * np.arcsin(np.sqrt(a))


def learn_city(sample_csv: str) -> City:
    """Learns the city model from a trips CSV with the sample's header.

    Raises:
      CityError: the file is missing, lacks a column the generator needs, or has no rows.
    """
    if not os.path.isfile(sample_csv):
        raise CityError(f"sample trips not found: {sample_csv}")
    with open(sample_csv, newline="") as fh:
        reader = csv.DictReader(fh)
        header = tuple(reader.fieldnames or ())
        rows = list(reader)
    needed = set(_PICKUP_COLUMNS + _DROPOFF_COLUMNS) | {
        f.LABEL_KEY,
        f.TIMESTAMP_KEY,
        f.HOUR_KEY,
        f.DAY_KEY,
        f.MONTH_KEY,
        f.COMPANY_KEY,
        f.PAYMENT_TYPE_KEY,
        *f.POST_TRIP_KEYS,
    }
    missing = sorted(needed - set(header))
    if missing:
        raise CityError(f"{sample_csv}: missing columns {', '.join(missing)}")
    if not rows:
        raise CityError(f"{sample_csv}: no trips")
    pickups, row_pickup = _places(rows, _PICKUP_COLUMNS)
    dropoffs, row_dropoff = _places(rows, _DROPOFF_COLUMNS)
    order = np.argsort(row_pickup, kind="stable").astype(np.int32)
    count = np.bincount(row_pickup, minlength=len(pickups.text))
    start = np.concatenate([[0], np.cumsum(count)[:-1]])

    timestamps = np.array([int(r[f.TIMESTAMP_KEY]) for r in rows], dtype=np.int64)
    week_hour = np.zeros((7, 24))
    for r in rows:
        week_hour[int(r[f.DAY_KEY]) - 1, int(r[f.HOUR_KEY])] += 1
    months: dict[tuple[int, int], int] = {}
    for ts in timestamps.astype("datetime64[s]").astype("datetime64[M]").astype(int):
        key = (1970 + int(ts) // 12, int(ts) % 12 + 1)
        months[key] = months.get(key, 0) + 1

    companies, company_shares = _shares([r[f.COMPANY_KEY] for r in rows])
    payments, payment_shares = _shares([r[f.PAYMENT_TYPE_KEY] for r in rows])

    speeds: list[list[float]] = [[] for _ in range(24)]
    for r in rows:
        miles, seconds = r["trip_miles"], r["trip_seconds"]
        if not miles or not seconds:
            continue
        miles_f, seconds_f = float(miles), float(seconds)
        if miles_f >= _MIN_MILES and seconds_f >= _MIN_SECONDS:
            mph = miles_f / (seconds_f / SECONDS_PER_HOUR)
            if mph <= _MAX_MPH:
                speeds[int(r[f.HOUR_KEY])].append(mph)
    overall = float(np.median([s for hour in speeds for s in hour]))
    mph_by_hour = np.array([float(np.median(s)) if len(s) >= 20 else overall for s in speeds])

    return City(
        header=header,
        pickups=pickups,
        dropoffs=dropoffs,
        row_pickup=row_pickup,
        row_dropoff=row_dropoff,
        by_pickup_rows=order,
        by_pickup_start=start.astype(np.int64),
        by_pickup_count=count.astype(np.int64),
        week_hour_shares=week_hour / week_hour.sum(),
        month_counts=months,
        companies=companies,
        company_shares=company_shares,
        payment_types=payments,
        payment_shares=payment_shares,
        mph_by_hour=mph_by_hour,
    )


def sample_city() -> City:
    """The city model of the real sample inside the installed tfx package."""
    from pipeline.data_source import tfx_sample_dir

    return learn_city(os.path.join(tfx_sample_dir(), "data.csv"))
