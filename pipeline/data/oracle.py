"""The oracle: E[fare | booking-time fields] by the generator's own draws, and its RMSE.

The generator's fare depends on the booking-time fields only through the straight-line
miles between the two centroids (NaN when a point is missing) and the start hour's median
speed (meter.py); everything else about the fare is drawn. So the best any model of those
fields can do is the mean of the fare's conditional distribution, which the oracle estimates
per row by Monte Carlo with the very function that draws the written fares (`draw_trips`),
restricted to the label range (min_fare, max_fare] the pipeline trains on (FareFilter).

Two estimates of the best RMSE, which must agree within sampling error:
- the floor: sqrt(mean over rows of Var(fare | fields)), from the spread of the draws;
- the oracle's RMSE: the realized error of E[fare | fields] on the rows' actual fares. With
  c draws per row the Monte Carlo mean adds Var/c to each squared error; subtracting the
  draws' unbiased variance / c leaves an unbiased estimate of the exact oracle's error.

Both come with standard errors. The fare has a long tail inside the label range (meters left
running: 0.3% of trips at 2-5 times the fare carry about half the mean squared error), so the
realized RMSE of even the exact oracle on a split of 100,000 trips moves by about $0.13 from
split to split: a model's RMSE is to be compared with the oracle's on the same rows, never
with a floor computed over other rows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np

from pipeline.data.city import City, haversine_miles
from pipeline.data.meter import draw_trips
from taxifare_modules import features as f

# Rows per batch of Monte Carlo draws: (rows x draws) arrays of a few million floats.
_DRAW_ELEMENTS = 1 << 20
# Records read and parsed at once from an examples split.
_READ_BATCH = 8192
DEFAULT_DRAWS = 64


class OracleError(Exception):
    """Input the oracle cannot score; the message names the file or argument."""


@dataclasses.dataclass(frozen=True)
class Moments:
    """Per row: how many draws fell in the label range, their mean and unbiased variance
    (NaN where fewer than two did)."""

    count: np.ndarray
    mean: np.ndarray
    variance: np.ndarray


def in_range_moments(draws: np.ndarray, low: float, high: float) -> Moments:
    """Moments of the draws (rows x draws) that fall in (low, high]."""
    inside = (draws > low) & (draws <= high)
    count = inside.sum(axis=1)
    total = np.where(inside, draws, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        # Centred before squaring: fares of hundreds of dollars lose cents otherwise.
        centred = np.where(inside, draws - mean[:, None], 0.0)
        variance = (centred * centred).sum(axis=1) / (count - 1)
    variance = np.where(count >= 2, variance, np.nan)
    return Moments(count, mean, variance)


def booking_inputs(
    world, coordinates: dict[str, np.ndarray], hour: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """What the generator's fare depends on, from booking-time fields: (miles, mph).

    Args:
      world: the synth.World (city and scenario) that drew the trips.
      coordinates: degrees of each of features.COORDINATE_KEYS; NaN where missing.
      hour: the trip's start hour.
    """
    radians = [np.radians(np.asarray(coordinates[k], dtype=np.float64)) for k in f.COORDINATE_KEYS]
    miles = haversine_miles(*radians)
    return miles, world.mph_by_hour[np.asarray(hour, dtype=np.int64)]


def predict(
    world,
    miles: np.ndarray,
    mph: np.ndarray,
    low: float,
    high: float,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
) -> Moments:
    """The oracle's moments for each row, from `draws` fresh fares per row."""
    rng = np.random.default_rng(seed)
    step = max(1, _DRAW_ELEMENTS // draws)
    parts = []
    for begin in range(0, len(miles), step):
        sl = slice(begin, begin + step)
        _, _, fares = draw_trips(rng, miles[sl], mph[sl], world.meter, world.noise, draws=draws)
        parts.append(in_range_moments(fares, low, high))
    if not parts:
        empty = np.zeros(0)
        return Moments(empty.astype(np.int64), empty, empty)
    fields = [field.name for field in dataclasses.fields(Moments)]
    return Moments(*(np.concatenate([getattr(p, k) for p in parts]) for k in fields))


@dataclasses.dataclass
class RunningScore:
    """Running sums of the floor and of the oracle's error over rows, for streams of chunks.

    The floor weights each row by the share of its draws in the label range (the chance the
    row would be kept); rows already filtered to the range carry weight 1 (`weighted=False`).
    """

    rows: int = 0
    weight: float = 0.0
    weight_sq: float = 0.0
    floor: float = 0.0
    floor_sq: float = 0.0
    floor_weight: float = 0.0
    scored: int = 0
    error: float = 0.0
    error_sq: float = 0.0

    def add(
        self, fares: np.ndarray, moments: Moments, draws: int, low: float, high: float,
        weighted: bool = True,
    ) -> None:  # fmt: skip
        """Adds rows: their actual fares (any) and the moments of their draws."""
        ok = moments.count >= 2
        self.rows += int(ok.sum())
        weight = moments.count[ok] / draws if weighted else np.ones(int(ok.sum()))
        part = weight * moments.variance[ok]
        self.weight += float(weight.sum())
        self.weight_sq += float((weight * weight).sum())
        self.floor += float(part.sum())
        self.floor_sq += float((part * part).sum())
        self.floor_weight += float((part * weight).sum())
        kept = ok & (fares > low) & (fares <= high)
        error = (fares[kept] - moments.mean[kept]) ** 2 - moments.variance[kept] / moments.count[
            kept
        ]
        self.scored += int(kept.sum())
        self.error += float(error.sum())
        self.error_sq += float((error * error).sum())

    def floor_rmse(self) -> tuple[float, float]:
        """(floor, its standard error): a ratio estimator, its error by the delta method."""
        if self.weight <= 0:
            return math.nan, math.nan
        mse = self.floor / self.weight
        spread = self.floor_sq - 2 * mse * self.floor_weight + mse * mse * self.weight_sq
        se = math.sqrt(max(spread, 0.0)) / self.weight
        return _rmse_and_se(mse, se)

    def oracle_rmse(self) -> tuple[float, float]:
        """(the oracle's RMSE on the scored rows, its standard error)."""
        if self.scored < 2:
            return math.nan, math.nan
        mse = self.error / self.scored
        variance = (self.error_sq - self.scored * mse * mse) / (self.scored - 1)
        return _rmse_and_se(mse, math.sqrt(max(variance, 0.0) / self.scored))

    def summary(self, prefix: str = "") -> dict[str, float | int]:
        """The figures as manifest fields, with their standard errors and the z-score of
        the oracle against the floor (within +-3: they agree)."""
        floor, floor_se = self.floor_rmse()
        oracle, oracle_se = self.oracle_rmse()
        return {
            f"rmse_floor{prefix}": _round(floor),
            f"rmse_floor{prefix}_se": _round(floor_se),
            f"rmse_oracle{prefix}": _round(oracle),
            f"rmse_oracle{prefix}_se": _round(oracle_se),
            f"oracle_vs_floor_z{prefix}": _round(agreement_z(oracle, oracle_se, floor, floor_se)),
        }


def agreement_z(a: float, a_se: float, b: float, b_se: float) -> float:
    """(a - b) in standard errors of the difference (errors taken as independent)."""
    spread = math.hypot(a_se, b_se)
    return (a - b) / spread if spread > 0 else math.nan


def _rmse_and_se(mse: float, mse_se: float) -> tuple[float, float]:
    # The delta method: d sqrt(x) = dx / (2 sqrt(x)). An estimate of the exact oracle's mean
    # squared error can dip below 0 only on a handful of rows.
    rmse = math.sqrt(max(mse, 0.0))
    return rmse, (mse_se / (2 * rmse) if rmse > 0 else math.nan)


def _round(value: float) -> float | None:
    # JSON has no NaN.
    return round(value, 4) if math.isfinite(value) else None


@dataclasses.dataclass(frozen=True)
class SplitRows:
    """The rows of an examples split the oracle scores: fares and booking-time inputs."""

    fares: np.ndarray
    miles: np.ndarray
    mph: np.ndarray
    rows_read: int
    files: int


@dataclasses.dataclass(frozen=True)
class SplitScore:
    """The oracle's and the floor's RMSE on the rows of a split."""

    rows_read: int
    rows_scored: int
    label_range: tuple[float, float]
    draws: int
    rmse_oracle: float
    rmse_oracle_se: float
    rmse_floor: float
    rmse_floor_se: float

    def as_dict(self) -> dict:
        """JSON-ready fields."""
        return {
            "rows_read": self.rows_read,
            "rows_scored": self.rows_scored,
            "label_range": list(self.label_range),
            "draws": self.draws,
            "rmse_oracle": _round(self.rmse_oracle),
            "rmse_oracle_se": _round(self.rmse_oracle_se),
            "rmse_floor": _round(self.rmse_floor),
            "rmse_floor_se": _round(self.rmse_floor_se),
            "oracle_vs_floor_z": _round(
                agreement_z(self.rmse_oracle, self.rmse_oracle_se, self.rmse_floor,
                            self.rmse_floor_se)
            ),
        }  # fmt: skip


def _split_files(patterns: list[str]) -> list[str]:
    from taxifare_modules.task import expand_paths

    files = []
    for pattern in patterns:
        try:
            files += expand_paths([pattern])
        except ValueError:
            raise OracleError(f"--examples {pattern}: no files match") from None
    return files


def _first_values(sparse, rows: int, missing: float) -> np.ndarray:
    """The first value of each row of a VarLen feature; `missing` where it has none."""
    out = np.full(rows, missing, dtype=np.float64)
    indices, values = sparse.indices.numpy(), sparse.values.numpy()
    first = indices[:, 1] == 0
    out[indices[first, 0]] = values[first]
    return out


def _records(path: str) -> Iterator[list[bytes]]:
    import tensorflow as tf

    # ExampleGen and FareFilter write gzipped TFRecords named *.gz; the request log plain ones.
    compression = "GZIP" if path.endswith(".gz") else ""
    dataset = tf.data.TFRecordDataset(path, compression_type=compression).batch(_READ_BATCH)
    try:
        for batch in dataset:
            yield list(batch.numpy())
    except tf.errors.OpError as err:
        raise OracleError(f"{path}: not a readable TFRecord file: {err.message}") from None


def read_split(world, patterns: list[str]) -> SplitRows:
    """Reads the fare and the booking-time inputs of every tf.Example of the files.

    Raises:
      OracleError: no file matches a pattern, a file is not TFRecords of tf.Examples, or a
        record lacks its fare or start hour (the file and record are named).
    """
    import tensorflow as tf

    spec = {k: tf.io.VarLenFeature(tf.float32) for k in (*f.COORDINATE_KEYS, f.LABEL_KEY)}
    spec[f.HOUR_KEY] = tf.io.VarLenFeature(tf.int64)
    fares, miles, mph = [], [], []
    files = _split_files(patterns)
    read = 0
    for path in files:
        for records in _records(path):
            try:
                parsed = tf.io.parse_example(records, spec)
            except tf.errors.InvalidArgumentError as err:
                raise OracleError(
                    f"{path}: records {read}-{read + len(records) - 1}: cannot be parsed as"
                    f" trips ({err.message.splitlines()[0]})"
                ) from None
            n = len(records)
            fare = _first_values(parsed[f.LABEL_KEY], n, math.nan)
            hour = _first_values(parsed[f.HOUR_KEY], n, math.nan)
            for name, values in ((f.LABEL_KEY, fare), (f.HOUR_KEY, hour)):
                bad = np.flatnonzero(np.isnan(values))
                if len(bad):
                    raise OracleError(f"{path}: record {read + int(bad[0])} has no {name}")
            low, high = f.HOUR_RANGE
            for name, wrong, expected in (
                (f.HOUR_KEY, (hour < low) | (hour > high), f"{low}-{high}"),
                (f.LABEL_KEY, ~np.isfinite(fare), "a finite number"),
            ):
                bad = np.flatnonzero(wrong)
                if len(bad):
                    i = int(bad[0])
                    value = (hour if name == f.HOUR_KEY else fare)[i]
                    raise OracleError(
                        f"{path}: record {read + i}: {name} {value:g}, expected {expected}"
                    )
            coordinates = {k: _first_values(parsed[k], n, math.nan) for k in f.COORDINATE_KEYS}
            m, s = booking_inputs(world, coordinates, hour.astype(np.int64))
            fares.append(fare)
            miles.append(m)
            mph.append(s)
            read += n
    join = (lambda parts: np.concatenate(parts)) if fares else (lambda parts: np.zeros(0))
    return SplitRows(join(fares), join(miles), join(mph), read, len(files))


def score_rows(
    world,
    fares: np.ndarray,
    miles: np.ndarray,
    mph: np.ndarray,
    label_range: tuple[float, float],
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
) -> tuple[SplitScore, Moments]:
    """The oracle and the floor on rows of a split, over the fares in the label range.

    Returns:
      The score, and the oracle's per-row moments (for a paired comparison with a model).
    """
    low, high = label_range
    moments = predict(world, miles, mph, low, high, draws, seed)
    keep = (fares > low) & (fares <= high)
    score = RunningScore()
    # The rows are a sample of the label range's population already: each weighs 1.
    score.add(fares[keep], _take(moments, keep), draws, low, high, weighted=False)
    floor, floor_se = score.floor_rmse()
    oracle, oracle_se = score.oracle_rmse()
    result = SplitScore(
        rows_read=len(fares),
        rows_scored=score.scored,
        label_range=(float(low), float(high)),
        draws=draws,
        rmse_oracle=oracle,
        rmse_oracle_se=oracle_se,
        rmse_floor=floor,
        rmse_floor_se=floor_se,
    )
    return result, moments


def _take(moments: Moments, mask: np.ndarray) -> Moments:
    return Moments(moments.count[mask], moments.mean[mask], moments.variance[mask])


def load_manifest(folder: str) -> dict:
    """The synth.json of a synthesized folder (local or gs://).

    Raises:
      OracleError: the file is missing or not a JSON object.
    """
    import posixpath

    import tensorflow as tf

    from pipeline.data.synth import MANIFEST_NAME, read_manifest

    path = posixpath.join(folder, MANIFEST_NAME)
    if not tf.io.gfile.exists(path):
        raise OracleError(f"--synth {folder}: no synth.json (not a `taxifare data synth` folder)")
    try:
        manifest = read_manifest(folder)
    except ValueError as err:  # json's decode error
        raise OracleError(f"{path}: not JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise OracleError(f"{path}: not a JSON object")
    return manifest


def world_of(manifest: dict, city: City | None = None):
    """The synth.World that drew a synthesized folder (its manifest names the scenario)."""
    from pipeline.data.city import sample_city
    from pipeline.data.scenarios import SCENARIOS
    from pipeline.data.synth import World

    name = manifest.get("scenario", "none")
    if name not in SCENARIOS:
        raise OracleError(f"the manifest's scenario {name!r} is unknown")
    return World(city or sample_city(), SCENARIOS[name])


def score_examples(
    patterns: list[str],
    manifest: dict,
    label_range: tuple[float, float] | None = None,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    city: City | None = None,
) -> SplitScore:
    """The oracle's RMSE on a split of tf.Examples (TFRecord files, local or gs://), e.g.
    the test split the pipeline evaluated on, beside the floor of the same rows.

    Args:
      patterns: globs of the split's files.
      manifest: the synth.json of the folder the trips came from (its scenario).
      label_range: (min_fare, max_fare]; default: the manifest's.
      draws: Monte Carlo fares per row.
      seed: the draws' seed.
      city: the learned city (default: the sample's).

    Raises:
      OracleError: unreadable input (named) or an empty label range.
    """
    low, high = label_range or tuple(manifest.get("label_range", (0.0, 250.0)))
    if not high > low:
        raise OracleError(f"the label range ({low:g}, {high:g}] is empty")
    if draws < 2:
        raise OracleError(f"--draws {draws}: must be at least 2")
    world = world_of(manifest, city)
    rows = read_split(world, patterns)
    score, _ = score_rows(world, rows.fares, rows.miles, rows.mph, (low, high), draws, seed)
    return score
