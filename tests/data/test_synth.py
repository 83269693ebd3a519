"""`taxifare data synth`: determinism, the sample's format, spans, the floor, bad arguments."""

from __future__ import annotations

import csv
import datetime
import glob
import json
import math
import os

import numpy as np
import pytest

from pipeline import cli
from pipeline.data.city import haversine_miles
from pipeline.data.meter import draw_trips
from pipeline.data.scenarios import SCENARIOS
from pipeline.data.synth import World, read_manifest
from taxifare_modules import features as f
from tests.data.conftest import concat_spans, read_rows, synth


def _files(folder) -> dict[str, bytes]:
    paths = sorted(glob.glob(os.path.join(str(folder), "**", "*"), recursive=True))
    return {os.path.relpath(p, folder): open(p, "rb").read() for p in paths if os.path.isfile(p)}


def test_same_seed_same_bytes_and_another_seed_other_bytes(city, tmp_path):
    args = dict(rows=30_000, shards=2, months=2, seed=5, chunk_rows=4096)
    synth(city, tmp_path / "a", **args)
    synth(city, tmp_path / "b", **args)
    synth(city, tmp_path / "c", **{**args, "seed": 6})
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 2 * 2 + 1  # two spans of two shards, and the manifest
    assert a == b
    csvs = [k for k in a if k.endswith(".csv")]
    assert all(a[k] != c[k] for k in csvs)


def test_chunking_does_not_change_the_data(city, tmp_path):
    # Streaming is in chunks; the chunk size is an implementation detail of memory use, and
    # the random streams are keyed by chunk: the same chunking gives the same bytes.
    synth(city, tmp_path / "a", rows=5000, chunk_rows=1000)
    synth(city, tmp_path / "b", rows=5000, chunk_rows=1000)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_the_sample_format_places_and_missing_rates(city, sample_csv, sample_rows, tmp_path):
    synth(city, tmp_path / "s", rows=40_000, months=48, seed=1)
    rows = read_rows(concat_spans(tmp_path / "s", tmp_path / "all.csv"))
    with open(sample_csv, newline="") as fh:
        sample_header = next(csv.reader(fh))
    with open(glob.glob(str(tmp_path / "s" / "span-*" / "*.csv"))[0], newline="") as fh:
        assert next(csv.reader(fh)) == sample_header
    assert len(rows) == 40_000
    # Types as CsvExampleGen infers them from the sample: integers stay integers.
    int_keys = f.INT_FEATURE_KEYS + ("trip_seconds",)
    float_keys = f.FLOAT_FEATURE_KEYS + (f.LABEL_KEY, "trip_miles", "tips")
    for row in rows[:5000]:
        for key in int_keys:
            assert row[key] == "" or row[key].lstrip("-").isdigit(), (key, row[key])
        for key in float_keys:
            assert row[key] == "" or math.isfinite(float(row[key])), (key, row[key])
    # Places are the sample's centroids, exactly as the sample writes them.
    for side in ("pickup", "dropoff"):
        keys = [f"{side}_community_area", f"{side}_latitude", f"{side}_longitude"]
        real = {tuple(r[k] for k in keys) for r in sample_rows}
        assert {tuple(r[k] for k in keys) for r in rows} <= real
    # Missing-value rates and category shares as in the sample.
    for key in (f.DROPOFF_LATITUDE_KEY, f.DROPOFF_AREA_KEY, f.COMPANY_KEY, "dropoff_census_tract"):
        real = sum(not r[key] for r in sample_rows) / len(sample_rows)
        ours = sum(not r[key] for r in rows) / len(rows)
        assert abs(ours - real) < 0.012, (key, real, ours)
    for key in (f.PAYMENT_TYPE_KEY, f.COMPANY_KEY):
        real_share = sum(
            r[key] == "Cash" or r[key] == "Taxi Affiliation Services" for r in sample_rows
        )
        ours_share = sum(r[key] == "Cash" or r[key] == "Taxi Affiliation Services" for r in rows)
        assert abs(ours_share / len(rows) - real_share / len(sample_rows)) < 0.015, key

    # The joint pattern: trips within one community area as often as in the sample.
    def same_area(rs):
        return sum(
            r[f.PICKUP_AREA_KEY] != "" and r[f.PICKUP_AREA_KEY] == r[f.DROPOFF_AREA_KEY] for r in rs
        ) / len(rs)

    assert abs(same_area(rows) - same_area(sample_rows)) < 0.02
    fares = np.array([float(r[f.LABEL_KEY]) for r in rows])
    real_fares = np.array([float(r[f.LABEL_KEY]) for r in sample_rows])
    assert abs(np.median(fares) - np.median(real_fares)) < 1.0
    assert (fares == 0).any() and fares.max() > 250  # the real data's outliers


def test_spans_are_months_and_time_fields_agree(city, tmp_path):
    manifest = synth(city, tmp_path / "s", rows=9000, months=3, start=(2015, 11), shards=3)
    assert [s["folder"] for s in manifest["spans"]] == [
        "span-201511",
        "span-201512",
        "span-201601",
    ]
    assert sum(s["rows"] for s in manifest["spans"]) == 9000
    assert read_manifest(str(tmp_path / "s")) == manifest
    for span in manifest["spans"]:
        files = sorted(glob.glob(str(tmp_path / "s" / span["folder"] / "*.csv")))
        assert len(files) == 3
        rows = [r for p in files for r in read_rows(p)]
        assert len(rows) == span["rows"]
        year, month = map(int, span["month"].split("-"))
        for r in rows[:2000]:
            t = datetime.datetime.fromtimestamp(int(r[f.TIMESTAMP_KEY]), datetime.timezone.utc)
            assert (t.year, t.month) == (year, month)
            assert int(r[f.MONTH_KEY]) == month and int(r[f.HOUR_KEY]) == t.hour
            assert int(r[f.DAY_KEY]) == t.isoweekday() % 7 + 1  # 1 = Sunday
            assert t.minute % 15 == 0 and t.second == 0


def test_scenarios_change_what_they_say(city, tmp_path):
    def rows_of(name: str, **kwargs) -> list[dict[str, str]]:
        synth(city, tmp_path / name, rows=8000, seed=2, **kwargs)
        return read_rows(concat_spans(tmp_path / name, tmp_path / f"{name}.csv"))

    base = rows_of("base")
    renamed = rows_of("renamed", scenario="renamed-payment-type")
    inflated = rows_of("inflated", scenario="fare-inflation")
    assert "Card" not in {r[f.PAYMENT_TYPE_KEY] for r in base}
    assert "Credit Card" not in {r[f.PAYMENT_TYPE_KEY] for r in renamed}
    assert sum(r[f.PAYMENT_TYPE_KEY] == "Card" for r in renamed) > 2000
    # The same seed draws the same trips: only the meter's rates differ.
    assert [r[f.TIMESTAMP_KEY] for r in inflated] == [r[f.TIMESTAMP_KEY] for r in base]
    ratio = sum(float(r[f.LABEL_KEY]) for r in inflated) / sum(float(r[f.LABEL_KEY]) for r in base)
    assert ratio == pytest.approx(1.25, abs=0.01)


def _brute_force(city, rows, low, high, draws, seed) -> tuple[float, float]:
    """From the written fields alone, with many fresh draws per trip: the expected floor
    (pooled per-trip variance of the fares in the label range) and the realized RMSE of
    E[fare | fields] over the written trips in the range."""
    world = World(city, SCENARIOS["none"])
    radians = {
        k: np.radians([float(r[k]) if r[k] else np.nan for r in rows]) for k in f.COORDINATE_KEYS
    }
    miles = haversine_miles(*(radians[k] for k in f.COORDINATE_KEYS))
    mph = world.mph_by_hour[np.array([int(r[f.HOUR_KEY]) for r in rows])]
    fares = np.array([float(r[f.LABEL_KEY]) for r in rows])
    rng = np.random.default_rng(seed)
    _, _, sims = draw_trips(rng, miles, mph, world.meter, world.noise, draws)
    inside = (sims > low) & (sims <= high)
    count = inside.sum(axis=1)
    mean = np.where(inside, sims, 0.0).sum(axis=1) / count
    var = (np.where(inside, sims * sims, 0.0).sum(axis=1) - count * mean * mean) / (count - 1)
    expected = float(np.sqrt((count * var).sum() / count.sum()))
    keep = (fares > low) & (fares <= high)
    realized = float(np.sqrt(np.mean((fares[keep] - mean[keep]) ** 2)))
    return expected, realized


def test_floor_matches_a_brute_force_estimate(city, tmp_path):
    manifest = synth(city, tmp_path / "s", rows=60_000, months=1, seed=4, floor_draws=16)
    span = manifest["spans"][0]
    rows = read_rows(glob.glob(str(tmp_path / "s" / span["folder"] / "*.csv"))[0])
    expected, realized = _brute_force(city, rows, 0.0, 250.0, draws=300, seed=99)
    assert span["rmse_floor_label_range"] == pytest.approx(expected, rel=0.03)
    # What a perfect model scores on these very trips: the same up to the sampling noise of
    # 60,000 heavy-tailed errors (a few percent).
    assert span["rmse_floor_label_range"] == pytest.approx(realized, rel=0.12)
    # Outliers above the label range make the unfiltered floor much larger.
    assert span["rmse_floor"] > 1.5 * span["rmse_floor_label_range"]


def test_cli_writes_and_refuses_bad_arguments(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli.main(["data", "synth", "--rows", "500", "--out", str(out), "--months", "2"]) == 0
    manifest = json.loads((out / "synth.json").read_text())
    assert [s["rows"] for s in manifest["spans"]] and sum(
        s["rows"] for s in manifest["spans"]
    ) == 500
    captured = capsys.readouterr()
    assert captured.out == "" and "wrote 500 trips" in captured.err
    before = _files(out)
    assert cli.main(["data", "synth", "--rows", "500", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert _files(out) == before
    assert cli.main(["data", "synth", "--rows", "0", "--out", str(tmp_path / "t")]) == 2
    assert "--rows 0" in capsys.readouterr().err
    code = cli.main(
        ["data", "synth", "--rows", "5", "--out", str(tmp_path / "u"), "--start", "2015-13"]
    )
    assert code == 2 and "--start" in capsys.readouterr().err
    assert not (tmp_path / "t").exists() and not (tmp_path / "u").exists()
