"""Synthetic trips against the real checks: the curated schema and `taxifare drift`.

15,002 synthetic trips over the sample's 48 months (2013-01 to 2016-12) against the real
sample: the clean city passes the schema and does not drift; each named scenario is flagged
on the fields it changes.
"""

from __future__ import annotations

import importlib.resources
import json

import pytest

from pipeline.data.scenarios import SCENARIOS
from pipeline.monitoring.cli import EXIT_FOUND, EXIT_OK, main
from taxifare_modules import features as f
from tests.data.conftest import concat_spans, synth

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SAMPLE_SIZE = 15_002
SCHEMA = str(importlib.resources.files("pipeline") / "schema" / "schema.pbtxt")


@pytest.fixture(scope="module")
def synthetic(city, tmp_path_factory):
    """scenario -> (CSV of 15,002 trips, its statistics as StatisticsGen computes them)."""
    import tensorflow_data_validation as tfdv

    from pipeline.monitoring.stats_options import monitoring_stats_options

    made: dict[str, tuple[str, object]] = {}

    def make(scenario: str) -> tuple[str, object]:
        if scenario not in made:
            folder = tmp_path_factory.mktemp(scenario)
            synth(
                city,
                folder / "spans",
                rows=SAMPLE_SIZE,
                months=48,
                start=(2013, 1),
                seed=17,
                scenario=scenario,
            )
            path = concat_spans(folder / "spans", folder / "trips.csv")
            stats = tfdv.generate_statistics_from_csv(
                path, stats_options=monitoring_stats_options()
            )
            stats_path = folder / "stats.pb"
            stats_path.write_bytes(stats.SerializeToString())
            made[scenario] = (str(stats_path), stats)
        return made[scenario]

    return make


def _anomalies(stats) -> dict[str, str]:
    import tensorflow_data_validation as tfdv

    schema = tfdv.load_schema_text(SCHEMA)
    found = tfdv.validate_statistics(stats, schema, environment="TRAINING")
    return {name: info.short_description for name, info in found.anomaly_info.items()}


def test_clean_synthetic_trips_pass_the_curated_schema(synthetic):
    _, stats = synthetic("none")
    assert _anomalies(stats) == {}
    # The same check does see a change of vocabulary (the payment types are a closed list).
    _, renamed = synthetic("renamed-payment-type")
    assert list(_anomalies(renamed)) == [f.PAYMENT_TYPE_KEY]


def _drift(baseline: str, current: str, out) -> tuple[int, dict]:
    code = main(["drift", "--baseline", baseline, "--current", current, "--out", str(out)])
    return code, json.loads((out / "verdict.json").read_text())


def test_clean_synthetic_trips_do_not_drift_from_the_real_sample(
    training_stats_file,
    synthetic,
    tmp_path,
):
    path, _ = synthetic("none")
    code, verdict = _drift(training_stats_file, path, tmp_path)
    assert verdict["failed_features"] == [], json.dumps(verdict["features"], indent=1)[:3000]
    assert code == EXIT_OK and verdict["features_checked"] == len(f.DRIFT_KEYS)


@pytest.mark.parametrize("scenario", ["rush-hour-moved", "new-company", "renamed-payment-type"])
def test_each_scenario_drifts_on_the_fields_it_touches(
    scenario,
    training_stats_file,
    synthetic,
    tmp_path,
):
    path, _ = synthetic(scenario)
    code, verdict = _drift(training_stats_file, path, tmp_path)
    assert code == EXIT_FOUND
    assert verdict["failed_features"] == list(SCENARIOS[scenario].touches)


def test_fare_inflation_moves_the_label_only(training_stats_file, synthetic, tmp_path):
    from pipeline.monitoring.compare import DRIFT, Side, compare
    from pipeline.monitoring.thresholds import default_thresholds

    path, inflated = synthetic("fare-inflation")
    assert SCENARIOS["fare-inflation"].touches == (f.LABEL_KEY,)
    # `taxifare drift` compares the model's inputs: none of them moved.
    code, verdict = _drift(training_stats_file, path, tmp_path)
    assert code == EXIT_OK and verdict["failed_features"] == []
    # The same comparison on the label (which the pipeline leaves to the Evaluator) flags it
    # against the clean city, and not the clean city against itself.
    import tensorflow_data_validation as tfdv

    _, clean = synthetic("none")
    schema = tfdv.load_schema_text(SCHEMA)
    keys = (f.LABEL_KEY,)
    moved = compare(
        DRIFT,
        Side(clean, "clean"),
        Side(inflated, "inflated"),
        schema,
        default_thresholds(keys),
        keys,
    )
    same = compare(
        DRIFT, Side(clean, "clean"), Side(clean, "clean"), schema, default_thresholds(keys), keys
    )
    assert moved["failed_features"] == [f.LABEL_KEY] and same["failed_features"] == []
