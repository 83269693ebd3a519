"""Drift on a real calendar: twelve monthly spans of the synthetic city, one after another.

Two monthly spans always differ in the fields that identify the period (timestamp, month):
those are not compared as distributions, so clean months raise no drift, while each named
scenario applied to the last month is flagged on the fields it moves. The statistics are
computed in process by TFDV (the same options as every comparison) from the synthesized CSV
rows, typed as CsvExampleGen types them, so the test stays cheap.
"""

from __future__ import annotations

import csv
import glob
import os

import pytest

from pipeline.data.scenarios import SCENARIOS
from pipeline.data.synth import SynthSpec, read_manifest, synthesize
from pipeline.monitoring.compare import DRIFT, Side, compare
from pipeline.monitoring.faults import _column_types
from pipeline.monitoring.thresholds import default_thresholds
from taxifare_modules import features as f

pytestmark = [pytest.mark.timeout(900)]

MONTHS = 12
ROWS = 36_000  # about 3,000 trips a month
SEED = 4
KEYS = f.DRIFT_KEYS


@pytest.fixture(scope="module")
def city(sample_csv):
    from pipeline.data.city import learn_city

    return learn_city(sample_csv)


def _statistics(folder: str):
    """TFDV statistics of one span folder's CSV rows, computed in process.

    Each column is typed as the curated schema (CsvExampleGen) types it; an empty cell is a
    feature present with no value, as CsvExampleGen writes it.
    """
    import pyarrow as pa
    from tensorflow_data_validation.statistics import stats_impl

    from pipeline.monitoring.stats_options import monitoring_stats_options

    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "*.csv"))):
        with open(path, newline="") as fh:
            rows += list(csv.DictReader(fh))
    types = _column_types()
    arrays, names = [], []
    for key in KEYS:
        kind = types[key]
        cast, arrow = {
            "INT": (int, pa.int64()),
            "FLOAT": (float, pa.float32()),
            "BYTES": (str.encode, pa.binary()),
        }[kind]
        values = [[] if r[key] == "" else [cast(r[key])] for r in rows]
        arrays.append(pa.array(values, type=pa.list_(arrow)))
        names.append(key)
    batch = pa.RecordBatch.from_arrays(arrays, names)
    return stats_impl.generate_statistics_in_memory(batch, monitoring_stats_options(KEYS))


def _spans(root: str) -> list[tuple[int, str]]:
    manifest = read_manifest(root)
    return [(s["span"], os.path.join(root, s["folder"])) for s in manifest["spans"]]


@pytest.fixture(scope="module")
def clean_year(city, tmp_path_factory) -> list[tuple[int, object]]:
    """(span, statistics) of twelve clean months, oldest first."""
    root = str(tmp_path_factory.mktemp("clean_year"))
    synthesize(SynthSpec(rows=ROWS, out=root, months=MONTHS, seed=SEED), city)
    return [(span, _statistics(folder)) for span, folder in _spans(root)]


def _drift(baseline, current) -> dict:
    import tensorflow_data_validation as tfdv

    from pipeline.monitoring.cli import _curated_schema_file

    schema = tfdv.load_schema_text(_curated_schema_file())
    return compare(
        DRIFT,
        Side(baseline, "previous month"),
        Side(current, "this month"),
        schema,
        default_thresholds(),
        KEYS,
    )


def test_twelve_clean_months_one_after_another_raise_no_drift(clean_year):
    assert len(clean_year) == MONTHS
    for (before, baseline), (span, current) in zip(clean_year, clean_year[1:], strict=False):
        verdict = _drift(baseline, current)
        assert verdict["failed_features"] == [], (before, span, verdict["failed_features"])
        assert verdict["verdict"] == "no_drift"
        # The fields that identify the span are listed, not compared...
        assert set(verdict["not_compared"]) == {f.TIMESTAMP_KEY, f.MONTH_KEY}
        by_name = {x["name"]: x for x in verdict["features"]}
        assert by_name[f.MONTH_KEY]["distance"] is None
        # ... while the mixes that can drift within a month are.
        assert by_name[f.HOUR_KEY]["p_value"] is not None
        assert by_name[f.DAY_KEY]["p_value"] is not None
        assert all(n >= 2000 for n in (s["examples"] for s in verdict["sides"].values()))


@pytest.mark.parametrize(
    "scenario", ["rush-hour-moved", "new-company", "renamed-payment-type", "fare-inflation"]
)
def test_a_scenario_in_the_last_month_is_flagged_on_its_fields(
    scenario, city, clean_year, tmp_path
):
    (last_span, _), (_, previous) = clean_year[-1], clean_year[-2]
    year, month = divmod(last_span, 100)
    root = str(tmp_path / scenario)
    synthesize(
        SynthSpec(
            rows=ROWS // MONTHS,
            out=root,
            months=1,
            start=(year, month),
            seed=SEED,
            scenario=scenario,
        ),
        city,
    )
    ((span, folder),) = _spans(root)
    assert span == last_span
    verdict = _drift(previous, _statistics(folder))
    touched = [k for k in SCENARIOS[scenario].touches if k in KEYS]
    if scenario == "fare-inflation":
        # Drift compares the model's inputs, not the label: a dearer meter leaves every input
        # as it was and shows in the Evaluator's error on the new span instead.
        assert touched == [] and f.LABEL_KEY not in KEYS
        assert verdict["failed_features"] == []
    else:
        assert verdict["failed_features"] == touched, verdict["failed_features"]


def _run_drift_check(tmp_path, clean_year, thresholds: str) -> dict:
    """The pipeline's DriftCheck, by its own executor, on the last two clean months."""
    import json

    from tfx.types import standard_artifacts

    from pipeline.components import monitoring as mon
    from pipeline.monitoring.cli import _curated_schema_file

    def artifact(cls, name: str, **custom):
        a = cls()
        a.uri = str(tmp_path / name)
        os.makedirs(a.uri, exist_ok=True)
        for key, value in custom.items():
            a.set_int_custom_property(key, value)
        return a

    schema = artifact(standard_artifacts.Schema, "schema")
    with open(_curated_schema_file()) as src, open(f"{schema.uri}/schema.pbtxt", "w") as dst:
        dst.write(src.read())
    verdict = None
    for span, stats in clean_year[-2:]:
        statistics = artifact(standard_artifacts.ExampleStatistics, f"stats-{span}")
        os.makedirs(f"{statistics.uri}/Split-train")
        with open(f"{statistics.uri}/Split-train/FeatureStats.pb", "wb") as fh:
            fh.write(stats.SerializeToString())
        verdict = artifact(mon.DriftVerdict, f"verdict-{span}")
        mon.DriftCheck.EXECUTOR_SPEC.executor_class().Do(
            {
                "examples": [artifact(standard_artifacts.Examples, f"ex-{span}", span=span)],
                "statistics": [statistics],
                "schema": [schema],
            },
            {"verdict": [verdict]},
            {"thresholds": thresholds, "baseline": str(tmp_path / "baseline")},
        )
    with open(f"{verdict.uri}/verdict.json") as fh:
        return json.load(fh)


def test_the_pipeline_drift_check_follows_the_configured_time_features(clean_year, tmp_path):
    from pipeline.config import load_config
    from pipeline.monitoring.thresholds import thresholds_to_json

    config = tmp_path / "c.yaml"
    config.write_text("monitoring: {}\n")
    default = thresholds_to_json(load_config(str(config)).monitoring.thresholds())
    verdict = _run_drift_check(tmp_path / "default", clean_year, default)
    assert verdict["verdict"] == "no_drift", verdict["failed_features"]
    assert set(verdict["not_compared"]) == {f.TIMESTAMP_KEY, f.MONTH_KEY}
    html = max((tmp_path / "default").glob("verdict-*/report.html")).read_text()
    assert "not compared: identifies the span" in html
    sides = verdict["sides"]
    n_before, n_now = sides["baseline"]["examples"], sides["current"]["examples"]
    assert f"<td>{n_before:,} examples</td>" in html and f"<td>{n_now:,} examples</td>" in html
    assert f"N = {n_before:,} baseline · {n_now:,} current examples" in html
    # Naming no time features brings back the comparison that alarms on every new month.
    config.write_text("monitoring:\n  drift: {time_features: []}\n")
    none = thresholds_to_json(load_config(str(config)).monitoring.thresholds())
    verdict = _run_drift_check(tmp_path / "none", clean_year, none)
    assert set(verdict["failed_features"]) == {f.TIMESTAMP_KEY, f.MONTH_KEY}


def _daily_span(rows: list[dict[str, str]], day_start: int, folder) -> object:
    """`rows` as the trips of one day (a span of BigQuery's day partitions): each keeps its
    hour, its start moves to that hour of the day that begins at `day_start` (a UTC
    midnight), and its day of the week and month become that day's."""
    import datetime

    date = datetime.datetime.fromtimestamp(day_start, datetime.timezone.utc)
    day_of_week = date.isoweekday() % 7 + 1  # 1 = Sunday
    out = []
    for i, r in enumerate(rows):
        start = day_start + int(r[f.HOUR_KEY]) * 3600 + (i % 4) * 900
        out.append(
            dict(
                r,
                **{
                    f.TIMESTAMP_KEY: str(start),
                    f.DAY_KEY: str(day_of_week),
                    f.MONTH_KEY: str(date.month),
                },
            )
        )
    os.makedirs(folder)
    with open(os.path.join(folder, "trips.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(out[0]))
        writer.writeheader()
        writer.writerows(out)
    return _statistics(str(folder))


def test_daily_spans_compare_hours_but_not_the_day_of_the_week(sample_rows, tmp_path):
    import random

    rows = random.Random(5).sample(sample_rows, 6000)
    monday = 1_451_865_600  # 2016-01-04 00:00 UTC
    first = _daily_span(rows[:3000], monday, tmp_path / "monday")
    second = _daily_span(rows[3000:], monday + 86_400, tmp_path / "tuesday")
    verdict = _drift(first, second)
    # Monday against Tuesday: every trip's day differs, and that is the calendar.
    assert verdict["failed_features"] == [], verdict["failed_features"]
    assert verdict["not_compared"][f.DAY_KEY].startswith("not compared: the baseline side")
    by_name = {x["name"]: x for x in verdict["features"]}
    assert by_name[f.HOUR_KEY]["p_value"] is not None
    # A day covers the hours: rush hours three hours later are still drift.
    moved = [dict(r, **{f.HOUR_KEY: str((int(r[f.HOUR_KEY]) + 3) % 24)}) for r in rows[3000:]]
    later = _daily_span(moved, monday + 86_400, tmp_path / "tuesday-moved")
    assert _drift(first, later)["failed_features"] == [f.HOUR_KEY]
