"""The fault corpus on real trips: each fault flagged on exactly its features, clean traffic
on none, with what the model computes (distance, predicted fare) compared too.

Each log is what the server writes for the traffic: the raw fields as sent and the model's
own prediction for them (the small real model, called in process through its signature).
"""

from __future__ import annotations

import json
import random

import pytest

from pipeline.monitoring import faults
from pipeline.monitoring.cli import EXIT_FOUND, EXIT_OK, main
from pipeline.serving.client import csv_row_to_instance
from taxifare_modules import features as f
from tests.monitoring.conftest import predict, write_log

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

N_TRAFFIC = 1000


@pytest.fixture(scope="module")
def traffic(sample_rows, served_rows) -> list[dict]:
    """1,000 random real trips as a client sends them (unknown optional fields left out)."""
    served = {id(r) for r in served_rows}
    rows = [r for r in sample_rows if id(r) not in served]
    return [csv_row_to_instance(r) for r in random.Random(21).sample(rows, N_TRAFFIC)]


def _skew(instances, model, stats, tmp_path) -> tuple[int, dict]:
    log_dir = str(tmp_path / "log")
    write_log(log_dir, instances, predict(model, instances))
    out = tmp_path / "out"
    code = main(
        [
            "skew",
            "--serving-logs",
            log_dir,
            "--training-stats",
            stats,
            "--model",
            model,
            "--out",
            str(out),
        ]
    )
    return code, json.loads((out / "verdict.json").read_text())


def test_clean_traffic_flags_nothing_raw_or_derived(
    traffic, reference_model, training_stats_file, tmp_path
):
    code, verdict = _skew(traffic, reference_model, training_stats_file, tmp_path)
    assert verdict["failed_features"] == [], json.dumps(verdict["features"], indent=1)[:3000]
    assert code == EXIT_OK
    names = [x["name"] for x in verdict["features"]]
    assert names == list(f.SKEW_KEYS) + list(f.DERIVED_KEYS)
    derived = {x["name"]: x for x in verdict["features"] if x["derived_from"]}
    assert derived[f.DISTANCE_XF]["derived_from"] == list(f.COORDINATE_KEYS)
    assert all(x["distance"] is not None for x in derived.values())


@pytest.mark.parametrize("fault", faults.FAULTS, ids=[x.name for x in faults.FAULTS])
def test_each_fault_flags_exactly_its_features(
    fault, traffic, reference_model, training_stats_file, tmp_path
):
    faulty = faults.apply_fault(traffic, fault, 1.0, seed=5)
    code, verdict = _skew(faulty, reference_model, training_stats_file, tmp_path)
    flagged = verdict["failed_features"]
    assert code == EXIT_FOUND
    assert faults.flagged_correctly(fault, flagged), (fault.name, flagged)


def test_dropoff_as_pickup_is_caught_by_the_derived_distance_and_names_its_inputs(
    traffic, reference_model, training_stats_file, tmp_path
):
    fault = faults.FAULTS_BY_NAME["dropoff_as_pickup"]
    code, verdict = _skew(
        faults.apply_fault(traffic, fault, 1.0), reference_model, training_stats_file, tmp_path
    )
    by_name = {x["name"]: x for x in verdict["features"]}
    distance = by_name[f.DISTANCE_XF]
    assert distance["flagged"] and distance["distance"] > 0.3
    assert any(all(k in r for k in f.COORDINATE_KEYS) for r in distance["reasons"])
    # Each coordinate's own distribution barely moves: the raw fields alone would miss it.
    assert all(by_name[k]["distance"] < 0.1 for k in f.COORDINATE_KEYS)


def test_a_fault_in_a_quarter_of_the_traffic_is_still_caught(
    traffic, reference_model, training_stats_file, tmp_path
):
    fault = faults.FAULTS_BY_NAME["payment_codes"]
    code, verdict = _skew(
        faults.apply_fault(traffic, fault, 0.25, seed=2),
        reference_model,
        training_stats_file,
        tmp_path,
    )
    assert code == EXIT_FOUND and verdict["failed_features"] == [f.PAYMENT_TYPE_KEY]


def test_apply_fault_changes_only_the_chosen_share(traffic):
    import copy

    before = copy.deepcopy(traffic)
    fault = faults.FAULTS_BY_NAME["timestamp_ms"]
    faulty = faults.apply_fault(traffic, fault, 0.5, seed=1)
    changed = [b for a, b in zip(traffic, faulty, strict=True) if a != b]
    assert 0.4 < len(changed) / len(traffic) < 0.6
    assert all(b[f.TIMESTAMP_KEY] > 10**12 for b in changed)
    assert traffic == before  # the input is left as it was
