"""`taxifare data synth`: streams synthetic trips of the learned city into monthly spans.

Output (`out` may be gs://, written through tf.io.gfile; a local folder is written without
importing TensorFlow, which would take longer than a million rows):

    out/span-YYYYMM/trips-00000-of-0000K.csv   the sample's exact header, one file per shard
    out/synth.json                             the manifest: rows, seed, scenario, and per
                                               span the floor (best achievable RMSE)

Deterministic: each chunk of rows has its own random stream, keyed by (seed, span, shard,
chunk), so the bytes depend on the arguments only. Memory is constant: rows are drawn,
formatted and written a chunk at a time.

The floor: the fare of a trip is the meter on a route the booking cannot know (meter.py).
The best any model of the booking-time fields can do is to predict E[fare | fields]; its
mean squared error is E[Var(fare | fields)]. For every written trip the generator draws
`floor_draws` more fares from the same fields (a separate random stream, so the data does
not depend on the number of draws) and averages their unbiased variance. The pipeline
trains and evaluates only on fares in (min_fare, max_fare] (FareFilter); the floor of that
population uses the draws that fall in the range, weighted by how often they do. The same
draws give the oracle (oracle.py): their mean predicts each written fare, and its realized
RMSE must agree with the floor within the standard errors the manifest gives beside both.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import math
import os
import posixpath
from collections.abc import Callable

import numpy as np

from pipeline.data.city import City, haversine_miles
from pipeline.data.meter import Meter, Noise, draw_trips
from pipeline.data.oracle import RunningScore, in_range_moments
from pipeline.data.scenarios import SCENARIOS, Scenario
from taxifare_modules import features as f

MANIFEST_NAME = "synth.json"
SPAN_PATTERN = "span-{SPAN}/*.csv"
CHUNK_ROWS = 65_536
# A trip's dropoff is drawn from the sample trips with the same pickup place this often,
# else from all trips (pairs the sample never saw, in the city's overall proportions).
SAME_PICKUP_SHARE = 0.9
# Post-trip fields as the real data records them.
ZERO_MILES_SHARE = 0.27  # the odometer field is often 0
MILES_ERROR_SHARE = 0.0005  # ... and sometimes 100 times too large
ZERO_SECONDS_SHARE = 0.032
MISSING_SECONDS_SHARE = 0.0004
CARD_PAYMENT = "Credit Card"
CARD_TIP_SHARE = 0.95
SECONDS_PER_DAY = 86_400


class SynthError(Exception):
    """Arguments the generator cannot use; the message names the argument."""


@dataclasses.dataclass(frozen=True)
class SynthSpec:
    """What to generate."""

    rows: int
    out: str
    shards: int = 1
    seed: int = 0
    months: int = 12
    # The first (year, month); None: the months end with the sample's last month.
    start: tuple[int, int] | None = None
    scenario: str = "none"
    floor_draws: int = 16
    min_fare: float = 0.0
    max_fare: float = 250.0
    chunk_rows: int = CHUNK_ROWS


def parse_month(text: str) -> tuple[int, int]:
    """'YYYY-MM' as (year, month)."""
    try:
        year, month = (int(p) for p in text.split("-"))
    except ValueError:
        raise SynthError(f"--start {text!r}: expected YYYY-MM, e.g. 2015-01") from None
    if not 1 <= month <= 12 or not 1970 <= year <= 2100:
        raise SynthError(f"--start {text!r}: expected YYYY-MM with a month 01-12")
    return year, month


def check_spec(spec: SynthSpec) -> None:
    """Raises SynthError naming the first unusable argument."""
    if spec.rows < 1:
        raise SynthError(f"--rows {spec.rows}: must be at least 1")
    if spec.shards < 1:
        raise SynthError(f"--shards {spec.shards}: must be at least 1")
    if spec.months < 1:
        raise SynthError(f"--months {spec.months}: must be at least 1")
    if spec.floor_draws < 2:
        raise SynthError(f"--floor-draws {spec.floor_draws}: must be at least 2")
    if spec.scenario not in SCENARIOS:
        raise SynthError(
            f"--scenario {spec.scenario!r}: unknown; expected one of {', '.join(SCENARIOS)}"
        )
    if spec.max_fare <= spec.min_fare:
        raise SynthError(f"the label range ({spec.min_fare}, {spec.max_fare}] is empty")


def month_plan(city: City, months: int, start: tuple[int, int] | None) -> list[tuple[int, int]]:
    """The (year, month) of each span."""
    if start is None:
        year, month = city.last_month
        index = year * 12 + month - 1 - (months - 1)
    else:
        index = start[0] * 12 + start[1] - 1
    return [((index + i) // 12, (index + i) % 12 + 1) for i in range(months)]


def month_weights(city: City, plan: list[tuple[int, int]]) -> np.ndarray:
    """Trips per month: the sample's count for that month, else its mean for that month of
    the year (the season)."""
    seasonal = np.zeros(13)
    years = np.zeros(13)
    for (_, m), n in city.month_counts.items():
        seasonal[m] += n
        years[m] += 1
    seasonal = np.where(years > 0, seasonal / np.maximum(years, 1), 0.0)
    fallback = seasonal[seasonal > 0].mean()
    return np.array(
        [city.month_counts.get(ym) or seasonal[ym[1]] or fallback for ym in plan], dtype=float
    )


def allocate(total: int, weights: np.ndarray) -> list[int]:
    """`total` split in proportion to `weights` (largest remainders; sums to `total`)."""
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts.tolist()


def _cdf(shares: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(shares)
    return cdf / cdf[-1]


def _quote(text: str) -> str:
    # The CSV quoting rule (a field with a comma, quote or line break is quoted).
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


class World:
    """The city with the scenario applied, in the arrays the chunks draw from."""

    def __init__(self, city: City, scenario: Scenario):
        self.city = city
        shift = scenario.hour_shift
        self.week_hour_cdf = _cdf(np.roll(city.week_hour_shares, shift, axis=1).ravel())
        self.mph_by_hour = np.roll(city.mph_by_hour, shift)
        companies, shares = list(city.companies), city.company_shares.copy()
        if scenario.new_company is not None:
            name, share = scenario.new_company
            companies.append(name)
            shares = np.append(shares * (1.0 - share), share)
        self.companies = np.array([_quote(c) for c in companies], dtype=object)
        self.company_cdf = _cdf(shares)
        renames = dict(scenario.payment_renames)
        self.payment_names = np.array(
            [_quote(renames.get(p, p)) for p in city.payment_types], dtype=object
        )
        self.card = (
            city.payment_types.index(CARD_PAYMENT) if CARD_PAYMENT in city.payment_types else -1
        )
        self.payment_cdf = _cdf(city.payment_shares)
        self.meter = Meter().scaled(scenario.fare_factor)
        self.noise = Noise()
        self.pickup_text = {
            c: np.array([_quote(t[k]) for t in city.pickups.text], dtype=object)
            for k, c in enumerate(city.pickups.columns)
        }
        self.dropoff_text = {
            c: np.array([_quote(t[k]) for t in city.dropoffs.text], dtype=object)
            for k, c in enumerate(city.dropoffs.columns)
        }


class _Floor:
    """Running sums of one span's floor and oracle, over all trips and over the label range
    (see oracle.py)."""

    def __init__(self) -> None:
        self.rows = 0
        self.in_range_rows = 0
        self.fare_sum = 0.0
        self.everything = RunningScore()
        self.label_range = RunningScore()

    def add(self, fares: np.ndarray, draws: np.ndarray, low: float, high: float) -> None:
        """Adds written trips: their fares and `floor_draws` more fares of each."""
        self.rows += len(fares)
        self.fare_sum += float(fares.sum())
        self.in_range_rows += int(((fares > low) & (fares <= high)).sum())
        d = draws.shape[1]
        self.everything.add(fares, in_range_moments(draws, -math.inf, math.inf), d, -math.inf,
                            math.inf)  # fmt: skip
        self.label_range.add(fares, in_range_moments(draws, low, high), d, low, high)

    def summary(self) -> dict[str, float | int | None]:
        """The span's manifest fields."""
        return {
            "rows": self.rows,
            "rows_in_label_range": self.in_range_rows,
            "mean_fare": round(self.fare_sum / max(self.rows, 1), 4),
            **self.everything.summary(),
            **self.label_range.summary("_label_range"),
        }


def _month_dates(year: int, month: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Days of the month by weekday (1 = Sunday): a (7, 5) table of day offsets, the count
    per weekday, and the month's first day in days since the epoch."""
    first = int(np.datetime64(f"{year:04d}-{month:02d}-01", "D").astype(np.int64))
    days = calendar.monthrange(year, month)[1]
    table = np.zeros((7, 5), dtype=np.int64)
    count = np.zeros(7, dtype=np.int64)
    for offset in range(days):
        weekday = (first + offset + 4) % 7  # 1970-01-01 was a Thursday: 0 = Sunday
        table[weekday, count[weekday]] = offset
        count[weekday] += 1
    return table, count, first


def _draw_chunk(
    world: World, year: int, month: int, n: int, rng: np.random.Generator
) -> dict[str, np.ndarray | list]:
    """One chunk of trips: the arrays of every field (before formatting)."""
    city = world.city
    pickup = city.row_pickup[rng.integers(0, city.rows, n)]
    within = city.by_pickup_start[pickup] + (rng.random(n) * city.by_pickup_count[pickup]).astype(
        np.int64
    )
    same = city.row_dropoff[city.by_pickup_rows[within]]
    anywhere = city.row_dropoff[rng.integers(0, city.rows, n)]
    dropoff = np.where(rng.random(n) < SAME_PICKUP_SHARE, same, anywhere)

    cell = np.searchsorted(world.week_hour_cdf, rng.random(n), side="right")
    weekday, hour = cell // 24, cell % 24
    table, count, first = _month_dates(year, month)
    pick = (rng.random(n) * count[weekday]).astype(np.int64)
    day = first + table[weekday, pick]
    timestamp = day * SECONDS_PER_DAY + hour * 3600 + rng.integers(0, 4, n) * 900

    company = np.searchsorted(world.company_cdf, rng.random(n), side="right")
    payment = np.searchsorted(world.payment_cdf, rng.random(n), side="right")

    p, d = city.pickups, city.dropoffs
    miles = haversine_miles(p.lat[pickup], p.lon[pickup], d.lat[dropoff], d.lon[dropoff])
    mph = world.mph_by_hour[hour]
    route, minutes, fare = draw_trips(rng, miles, mph, world.meter, world.noise)

    recorded = np.where(rng.random(n) < ZERO_MILES_SHARE, 0.0, route)
    recorded = np.where(rng.random(n) < MILES_ERROR_SHARE, recorded * 100.0, recorded)
    seconds = np.rint(minutes).astype(np.int64) * 60
    seconds = np.where(rng.random(n) < ZERO_SECONDS_SHARE, 0, seconds)
    seconds_missing = rng.random(n) < MISSING_SECONDS_SHARE
    tip_share = 0.12 + 0.2 * rng.random(n)
    tipped = (payment == world.card) & (rng.random(n) < CARD_TIP_SHARE)
    tips = np.where(tipped, np.round(fare * tip_share, 2), 0.0)

    return {
        "pickup": pickup,
        "dropoff": dropoff,
        "miles": miles,
        "mph": mph,
        "fare": fare,
        "hour": hour,
        "weekday": weekday + 1,
        "timestamp": timestamp,
        "company": company,
        "payment": payment,
        "trip_miles": recorded,
        "trip_seconds": seconds,
        "seconds_missing": seconds_missing,
        "tips": tips,
    }


def _format_chunk(world: World, month: int, trips: dict, header: tuple[str, ...]) -> str:
    """The chunk as CSV lines in the sample's column order."""
    n = len(trips["fare"])
    seconds = [
        "" if missing else str(s)
        for s, missing in zip(
            trips["trip_seconds"].tolist(), trips["seconds_missing"].tolist(), strict=True
        )
    ]
    columns: dict[str, list[str]] = {
        f.LABEL_KEY: [f"{x:.2f}" for x in trips["fare"].tolist()],
        f.MONTH_KEY: [str(month)] * n,
        f.HOUR_KEY: list(map(str, trips["hour"].tolist())),
        f.DAY_KEY: list(map(str, trips["weekday"].tolist())),
        f.TIMESTAMP_KEY: list(map(str, trips["timestamp"].tolist())),
        "trip_miles": [f"{x:.1f}" for x in trips["trip_miles"].tolist()],
        "trip_seconds": seconds,
        "tips": [f"{x:.2f}" for x in trips["tips"].tolist()],
        f.COMPANY_KEY: world.companies[trips["company"]].tolist(),
        f.PAYMENT_TYPE_KEY: world.payment_names[trips["payment"]].tolist(),
    }
    for name, text in world.pickup_text.items():
        columns[name] = text[trips["pickup"]].tolist()
    for name, text in world.dropoff_text.items():
        columns[name] = text[trips["dropoff"]].tolist()
    lines = map(",".join, zip(*(columns[name] for name in header), strict=True))
    return "\n".join(lines) + "\n"


def span_name(year: int, month: int) -> str:
    """The span folder of a month: span-YYYYMM (spans order as months do)."""
    return f"span-{year:04d}{month:02d}"


def _is_remote(path: str) -> bool:
    return "://" in path


def _open_write(path: str):
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.GFile(path, "w")
    return open(path, "w", encoding="utf-8", newline="")


def _makedirs(path: str) -> None:
    if _is_remote(path):
        import tensorflow as tf

        tf.io.gfile.makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def _has_files(path: str) -> bool:
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path) and bool(tf.io.gfile.listdir(path))
    return os.path.exists(path) and (not os.path.isdir(path) or bool(os.listdir(path)))


def _chunk_seed(seed: int, year: int, month: int, shard: int, chunk: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(year * 100 + month, shard, chunk))


def write_shard(
    world: World,
    spec: SynthSpec,
    year: int,
    month: int,
    shard: int,
    rows: int,
    path: str,
    floor: _Floor,
    on_rows: Callable[[int], None] | None = None,
) -> None:
    """Writes one shard file of a span, chunk by chunk, and adds its rows to the floor."""
    header = world.city.header
    with _open_write(path) as fh:
        fh.write(",".join(header) + "\n")
        for chunk, begin in enumerate(range(0, rows, spec.chunk_rows)):
            n = min(spec.chunk_rows, rows - begin)
            data_seed, floor_seed = _chunk_seed(spec.seed, year, month, shard, chunk).spawn(2)
            trips = _draw_chunk(world, year, month, n, np.random.default_rng(data_seed))
            fh.write(_format_chunk(world, month, trips, header))
            _, _, draws = draw_trips(
                np.random.default_rng(floor_seed),
                trips["miles"],
                trips["mph"],
                world.meter,
                world.noise,
                draws=spec.floor_draws,
            )
            floor.add(trips["fare"], draws, spec.min_fare, spec.max_fare)
            if on_rows is not None:
                on_rows(n)


def synthesize(spec: SynthSpec, city: City, on_rows: Callable[[int], None] | None = None) -> dict:
    """Writes the spans and the manifest; returns the manifest.

    Raises:
      SynthError: an unusable argument, or `out` already holds files.
    """
    check_spec(spec)
    if _has_files(spec.out):
        raise SynthError(f"--out {spec.out}: not empty; give a new or empty folder")
    scenario = SCENARIOS[spec.scenario]
    world = World(city, scenario)
    plan = month_plan(city, spec.months, spec.start)
    spans = []
    for (year, month), rows in zip(
        plan, allocate(spec.rows, month_weights(city, plan)), strict=True
    ):
        folder = posixpath.join(spec.out, span_name(year, month))
        _makedirs(folder)
        floor = _Floor()
        files = []
        for shard, shard_rows in enumerate(allocate(rows, np.ones(spec.shards))):
            name = f"trips-{shard:05d}-of-{spec.shards:05d}.csv"
            files.append(name)
            write_shard(
                world,
                spec,
                year,
                month,
                shard,
                shard_rows,
                posixpath.join(folder, name),
                floor,
                on_rows,
            )
        spans.append(
            {
                "span": year * 100 + month,
                "month": f"{year:04d}-{month:02d}",
                "folder": span_name(year, month),
                "files": files,
                **floor.summary(),
            }
        )
    manifest = {
        "rows": spec.rows,
        "seed": spec.seed,
        "shards": spec.shards,
        "months": spec.months,
        "scenario": spec.scenario,
        "scenario_description": scenario.description,
        "scenario_touches": list(scenario.touches),
        "pattern": SPAN_PATTERN,
        "floor_draws": spec.floor_draws,
        "label_range": [spec.min_fare, spec.max_fare],
        "floor_note": (
            "rmse_floor: the RMSE of E[fare | booking-time fields] over all trips, from the"
            " spread of floor_draws fares per trip; rmse_oracle: the realized RMSE of that"
            " mean on the written fares; *_label_range: over the trips whose fare is in"
            " label_range, as the pipeline trains and evaluates (FareFilter); *_se: standard"
            " errors; oracle_vs_floor_z: their difference in standard errors. Compare a model"
            " with the oracle on the rows it was evaluated on (taxifare data oracle), not with"
            " the floor of a span: a split's realized RMSE moves by several standard errors"
            " of the span's floor"
        ),
        "spans": spans,
    }
    with _open_write(posixpath.join(spec.out, MANIFEST_NAME)) as fh:
        fh.write(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(out: str) -> dict:
    """The manifest of a synthesized folder."""
    path = posixpath.join(out, MANIFEST_NAME)
    if _is_remote(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(path) as fh:
            return json.loads(fh.read())
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
