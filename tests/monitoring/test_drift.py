"""`taxifare drift` between two spans built from the real sample."""

from __future__ import annotations

import csv
import json
import os
import random

import pytest

from pipeline.monitoring.cli import EXIT_FOUND, EXIT_OK, main
from taxifare_modules import features as f

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _write_csv(path, rows: list[dict[str, str]]) -> str:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def halves(sample_rows, tmp_path_factory) -> tuple[str, str, list[dict[str, str]]]:
    rows = list(sample_rows)
    random.Random(11).shuffle(rows)
    half = len(rows) // 2
    folder = tmp_path_factory.mktemp("spans")
    return (
        _write_csv(folder / "last_month.csv", rows[:half]),
        _write_csv(folder / "this_month.csv", rows[half:]),
        rows[half:],
    )


def _drift(baseline: str, current: str, out) -> tuple[int, dict]:
    code = main(["drift", "--baseline", baseline, "--current", current, "--out", str(out)])
    return code, json.loads((out / "verdict.json").read_text())


def test_two_random_halves_do_not_drift(halves, tmp_path):
    baseline, current, _ = halves
    code, verdict = _drift(baseline, current, tmp_path)
    assert verdict["failed_features"] == [], json.dumps(verdict["features"], indent=1)[:3000]
    assert code == EXIT_OK and verdict["verdict"] == "no_drift"
    assert verdict["features_checked"] == len(f.RAW_FEATURE_KEYS)
    assert (tmp_path / "report.html").exists()


def test_shifted_span_drifts_on_the_shifted_feature(halves, tmp_path):
    baseline, _, rows = halves
    shifted = [dict(r, **{f.HOUR_KEY: str((int(r[f.HOUR_KEY]) + 8) % 24)}) for r in rows]
    current = _write_csv(tmp_path / "shifted.csv", shifted)
    code, verdict = _drift(baseline, current, tmp_path / "out")
    assert code == EXIT_FOUND
    assert verdict["failed_features"] == [f.HOUR_KEY]


def test_statistics_artifact_as_baseline(halves, training_stats_file, tmp_path):
    # StatisticsGen's artifact folder (holding Split-train/FeatureStats.pb) works as a span.
    artifact = os.path.dirname(os.path.dirname(training_stats_file))
    _, current, _ = halves
    code, verdict = _drift(artifact, current, tmp_path)
    assert code == EXIT_OK, verdict["failed_features"]
    assert verdict["sides"]["baseline"]["source"].startswith("statistics ")


def test_next_month_is_not_drift_unless_the_config_compares_the_month(halves, tmp_path):
    # Two monthly spans (May, then June) of otherwise like trips: only the fields that
    # identify the span differ.
    _, _, rows = halves
    half = len(rows) // 2
    may = [dict(r, **{f.MONTH_KEY: "5"}) for r in rows[:half]]
    june = [dict(r, **{f.MONTH_KEY: "6"}) for r in rows[half:]]
    baseline = _write_csv(tmp_path / "may.csv", may)
    current = _write_csv(tmp_path / "june.csv", june)
    code, verdict = _drift(baseline, current, tmp_path / "default")
    assert code == EXIT_OK and verdict["failed_features"] == []
    assert f.MONTH_KEY in verdict["not_compared"]
    config = tmp_path / "compare_month.yaml"
    config.write_text(f"monitoring:\n  drift:\n    time_features: [{f.TIMESTAMP_KEY}]\n")
    out = tmp_path / "configured"
    code = main(
        ["drift", "--baseline", baseline, "--current", current]
        + ["--config", str(config), "--out", str(out)]
    )
    verdict = json.loads((out / "verdict.json").read_text())
    assert code == EXIT_FOUND and verdict["failed_features"] == [f.MONTH_KEY]
    assert list(verdict["not_compared"]) == [f.TIMESTAMP_KEY]
