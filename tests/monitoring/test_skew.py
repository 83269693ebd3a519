"""`taxifare skew` on real traffic: no false alarms, injected skews caught on their feature.

The clean log and the shifted-hours log are sent through the real server (a small real model
on loopback); the other skewed logs are written with the server's own request-log writer
(`pipeline/serving/request_log.py`), which keeps the test time down while producing the
same files.
"""

from __future__ import annotations

import json
import logging
import os

import pytest

from pipeline.monitoring.cli import EXIT_FOUND, EXIT_OK, EXIT_USAGE, main
from pipeline.monitoring.compare import SKEW, time_feature_note
from pipeline.monitoring.thresholds import TIME_FEATURES
from pipeline.serving.client import csv_row_to_instance
from pipeline.serving.request_log import request_log_files
from taxifare_modules import features as f
from tests.monitoring.conftest import write_log

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _skew(log_dir: str, stats: str, out) -> tuple[int, dict]:
    code = main(["skew", "--serving-logs", log_dir, "--training-stats", stats, "--out", str(out)])
    verdict_path = out / "verdict.json"
    verdict = json.loads(verdict_path.read_text()) if verdict_path.exists() else {}
    return code, verdict


def test_clean_traffic_through_the_server_raises_no_alarm(
    clean_log, served_rows, training_stats_file, tmp_path
):
    code, verdict = _skew(clean_log, training_stats_file, tmp_path)
    assert verdict["failed_features"] == [], json.dumps(verdict["features"], indent=1)[:4000]
    assert code == EXIT_OK and verdict["verdict"] == "no_skew"
    assert verdict["features_checked"] == len(f.RAW_FEATURE_KEYS)
    assert verdict["sides"]["serving"]["examples"] == len(served_rows)
    by_name = {x["name"]: x for x in verdict["features"]}
    # A distance for every feature, not only failing ones, but for the fields that identify
    # the period (served traffic is of another period); the label is never reported.
    compared = [k for k in f.RAW_FEATURE_KEYS if k not in TIME_FEATURES]
    assert all(by_name[k]["distance"] is not None for k in compared)
    assert all(by_name[k]["distance"] is None for k in TIME_FEATURES)
    assert verdict["not_compared"] == {k: time_feature_note(SKEW) for k in TIME_FEATURES}
    assert f.LABEL_KEY not in by_name
    assert by_name[f.PAYMENT_TYPE_KEY]["comparator"] == "L_INFINITY"
    assert by_name[f.HOUR_KEY]["comparator"] == "L_INFINITY"
    assert by_name[f.PICKUP_LATITUDE_KEY]["comparator"] == "KOLMOGOROV_SMIRNOV"
    # Omitted optional fields are missing, as CsvExampleGen's empty cells are in training.
    company = by_name[f.COMPANY_KEY]["presence"]
    assert abs(company["training"] - company["serving"]) < 0.05
    assert (tmp_path / "report.html").exists()


def test_shifted_start_hours_through_the_server(hours_shifted_log, training_stats_file, tmp_path):
    code, verdict = _skew(hours_shifted_log, training_stats_file, tmp_path)
    assert code == EXIT_FOUND
    assert verdict["failed_features"] == [f.HOUR_KEY]


def _renamed_payment(trip: dict) -> dict:
    trip[f.PAYMENT_TYPE_KEY] = trip[f.PAYMENT_TYPE_KEY].upper().replace(" ", "_")
    return trip


def _timestamp_in_ms(trip: dict) -> dict:
    trip[f.TIMESTAMP_KEY] = trip[f.TIMESTAMP_KEY] * 1000
    return trip


def _company_mostly_missing(trip: dict, index: int) -> dict:
    if index % 5:  # 80% of requests lose the field
        trip.pop(f.COMPANY_KEY, None)
    return trip


@pytest.mark.parametrize(
    "inject, feature",
    [
        (lambda t, i: _renamed_payment(t), f.PAYMENT_TYPE_KEY),
        (lambda t, i: _timestamp_in_ms(t), f.TIMESTAMP_KEY),
        (_company_mostly_missing, f.COMPANY_KEY),
    ],
    ids=["category-renamed", "unit-change", "mostly-missing"],
)
def test_injected_skew_is_flagged_on_its_feature_only(
    inject, feature, served_rows, training_stats_file, tmp_path
):
    log_dir = str(tmp_path / "log")
    write_log(log_dir, [inject(csv_row_to_instance(r), i) for i, r in enumerate(served_rows)])
    code, verdict = _skew(log_dir, training_stats_file, tmp_path / "out")
    assert code == EXIT_FOUND
    assert verdict["failed_features"] == [feature], verdict["failed_features"]


def test_renamed_category_is_a_schema_anomaly_too(served_rows, training_stats_file, tmp_path):
    log_dir = str(tmp_path / "log")
    write_log(log_dir, [_renamed_payment(csv_row_to_instance(r)) for r in served_rows[:300]])
    _, verdict = _skew(log_dir, training_stats_file, tmp_path / "out")
    payment = next(x for x in verdict["features"] if x["name"] == f.PAYMENT_TYPE_KEY)
    assert payment["anomalies"] and payment["flagged"]


def test_missing_log_dir_exits_2(training_stats_file, tmp_path, capsys):
    code, _ = _skew(str(tmp_path / "nope"), training_stats_file, tmp_path / "out")
    assert code == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err


def test_empty_log_dir_exits_2(training_stats_file, tmp_path, capsys):
    (tmp_path / "log").mkdir()
    code, _ = _skew(str(tmp_path / "log"), training_stats_file, tmp_path / "out")
    assert code == EXIT_USAGE
    assert "no logged requests" in capsys.readouterr().err


def test_truncated_last_record_warns_and_uses_the_rest(
    served_rows, training_stats_file, tmp_path, caplog
):
    log_dir = str(tmp_path / "log")
    write_log(log_dir, [csv_row_to_instance(r) for r in served_rows[:400]])
    (path,) = request_log_files(log_dir)
    # A hard-killed writer: the last record cut in the middle, the file still in progress.
    data = open(path, "rb").read()
    os.remove(path)
    with open(path + ".inprogress", "wb") as fh:
        fh.write(data[:-30])
    with caplog.at_level(logging.WARNING):
        code, verdict = _skew(log_dir, training_stats_file, tmp_path / "out")
    assert code == EXIT_OK
    assert verdict["sides"]["serving"]["examples"] == 399
    assert "incomplete last record" in caplog.text


def test_statistics_of_another_schema_exit_2(clean_log, tmp_path, capsys):
    import tensorflow_data_validation as tfdv

    other = tmp_path / "other.csv"
    other.write_text("species,petal_length\nsetosa,1.4\nvirginica,5.5\n")
    stats_path = tmp_path / "other_stats.pbtxt"
    tfdv.write_stats_text(tfdv.generate_statistics_from_csv(str(other)), str(stats_path))
    code, _ = _skew(clean_log, str(stats_path), tmp_path / "out")
    assert code == EXIT_USAGE
    assert "do not match the schema" in capsys.readouterr().err
