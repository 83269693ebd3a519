"""The whole pipeline on the real sample, then on corrupted data that the gate must stop."""

from __future__ import annotations

import csv
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipeline import cli, dag
from taxifare_modules import features as f
from tests.e2e.runs import serving_state as _serving_state
from tests.e2e.runs import smoke_run as _run
from tests.trips import row_to_example, rows_to_named_tensors

pytestmark = pytest.mark.e2e

UPSTREAM = [
    dag.EXAMPLE_GEN_ID,
    dag.FARE_FILTER_ID,
    dag.STATISTICS_GEN_ID,
    dag.SCHEMA_GEN_ID,
    dag.EXAMPLE_VALIDATOR_ID,
    dag.TRANSFORM_ID,
    dag.TRAINER_ID,
]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def first_run(root):
    return _run(root)


def test_every_component_ran_and_a_model_was_pushed(first_run, root):
    code, summary = first_run
    assert code == cli.EXIT_OK, summary
    assert summary["components"] == {
        node: "COMPLETE"
        for node in UPSTREAM
        + [dag.ANOMALY_GATE_ID, dag.MODEL_RESOLVER_ID, dag.EVALUATOR_ID, dag.PUSHER_ID]
        + [dag.DRIFT_CHECK_ID, dag.MONITORING_GATE_ID]
    }
    # One span only (the sample): nothing to compare, and the summary says so.
    assert summary["drift"]["verdict"] == "not_compared"
    assert summary["skew"] is None
    assert summary["rows_read"] == 15_002
    assert summary["rows_excluded"] > 0  # the sample has zero fares
    assert summary["anomalies"] == []
    assert summary["blessed"] is True
    assert 0 < summary["eval_rmse"] < 20 and 0 < summary["eval_mae"] < summary["eval_rmse"]
    # Scored on the test split: a fifth of the sample's plausible trips.
    assert summary["eval_count"] > 2500
    pushed = Path(summary["pushed_to"])
    assert pushed.parent == root / "serving" / "taxifare"
    assert pushed.name.isdigit()  # a TF Serving version folder
    assert (pushed / "saved_model.pb").is_file()
    # What training did, from the Trainer's own record: whole epochs of the train split.
    training = summary["training"]
    assert 1 <= training["best_epoch"] <= training["epochs_run"]
    steps, batch = training["steps_per_epoch"], training["batch_size"]
    assert steps * batch <= training["train_examples"] < (steps + 1) * batch
    assert training["examples_trained"] == (
        training["epochs_run"] * training["steps_per_epoch"] * training["batch_size"]
    )
    assert summary["tuning_trials"] is None  # tuning is off by default


def test_pushed_model_serves_raw_fields_and_examples_alike(first_run, sample_rows):
    _, summary = first_run
    model = tf.saved_model.load(summary["pushed_to"])
    rows = sample_rows[:200]
    assert any(not r[f.DROPOFF_LATITUDE_KEY] for r in sample_rows[:2000])
    rows += [r for r in sample_rows[:2000] if not r[f.DROPOFF_LATITUDE_KEY]][:20]
    rows += [r for r in sample_rows[:2000] if not r[f.COMPANY_KEY]][:20]
    by_name = model.signatures[f.SERVING_DEFAULT_SIGNATURE](**rows_to_named_tensors(rows))
    by_example = model.signatures[f.SERVING_TF_EXAMPLE_SIGNATURE](
        examples=tf.constant([row_to_example(r) for r in rows])
    )
    a = by_name[f.PREDICTION_KEY].numpy()
    b = by_example[f.PREDICTION_KEY].numpy()
    assert a.shape == (len(rows),)
    assert np.all(np.isfinite(a)) and np.all(a > 0)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    # Not a constant: the fare depends on the trip.
    assert np.std(a) > 1.0


def test_second_run_is_served_from_cache(first_run, root):
    code, summary = _run(root)
    assert code == cli.EXIT_OK
    for node in UPSTREAM:
        assert summary["components"][node] == "CACHED", node


def _corrupt(rows: list[dict[str, str]], how: str) -> tuple[list[dict[str, str]], str]:
    rows = [dict(r) for r in rows]
    if how == "text_in_numeric_column":
        for r in rows[::50]:
            r[f.PICKUP_LATITUDE_KEY] = "north"
        return rows, f.PICKUP_LATITUDE_KEY
    if how == "new_payment_type":
        for r in rows[::20]:
            r[f.PAYMENT_TYPE_KEY] = "Bitcoin"
        return rows, f.PAYMENT_TYPE_KEY
    raise ValueError(how)


# A missing column is named by the header check before any run (tests/unit/test_data_checks).
@pytest.mark.parametrize("how", ["text_in_numeric_column", "new_payment_type"])
def test_corrupted_data_stops_at_the_gate_and_pushes_nothing(
    first_run, root, sample_rows, tmp_path, how
):
    before = _serving_state(root)
    assert before, "the good run must have pushed a model"
    rows, feature = _corrupt(sample_rows[:3000], how)
    folder = tmp_path / "data"
    folder.mkdir()
    with open(folder / "trips.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, summary = _run(root, f"data.input={folder}")
    assert code == cli.EXIT_ANOMALIES
    assert summary["components"][dag.ANOMALY_GATE_ID] == "FAILED"
    for node in (dag.TRANSFORM_ID, dag.TRAINER_ID, dag.EVALUATOR_ID, dag.PUSHER_ID):
        assert node not in summary["components"], node
    assert feature in {a["feature"] for a in summary["anomalies"]}
    assert summary["pushed_to"] is None
    assert _serving_state(root) == before
    assert not math.isnan(summary["total_seconds"])
    assert os.path.isdir(root / "serving" / "taxifare")


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_log(log_dir: Path, rows: list[dict[str, str]], versions: list[int]) -> None:
    """`rows` as the server logs them, answered by `versions` in turn."""
    from pipeline.serving.client import csv_row_to_instance
    from pipeline.serving.request_log import RequestLog, log_example

    log = RequestLog(str(log_dir))
    log.write(
        log_example(csv_row_to_instance(r), 10.0, versions[i % len(versions)], f"r{i}", 0, i, "t")
        for i, r in enumerate(rows)
    )
    log.close()


def _shift_hours(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{**r, f.HOUR_KEY: str((int(r[f.HOUR_KEY]) + 8) % 24)} for r in rows]


SPAN_1_ROWS = 2_000
SPAN_2_ROWS = 1_500


@pytest.fixture(scope="module")
def spans(sample_rows, tmp_path_factory) -> dict:
    """Two spans run in turn into one root (LocalDagRunner), with the skew check on.

    Span 1 is real trips; span 2 is other real trips in two CSV shards with their start
    hours moved by 8 (drift). The request log holds real trips as served (skew against
    span 2's training data). Both runs push (the blessing bound is loose on purpose).
    """
    # The sample CSV is not in random order (its first rows differ from its last ones).
    rows = random.Random(11).sample(sample_rows, len(sample_rows))
    base = tmp_path_factory.mktemp("spans")
    data, logs, root = base / "trips", base / "requests", base / "root"
    logs.mkdir()
    _write_log(logs, rows[6_000:7_200], [1])
    overrides = [
        f"data.input={data}",
        "data.pattern=span-{SPAN}/*.csv",
        "orchestrator.runner=local",
        "training.train_steps=100",
        "evaluation.max_rmse_increase=1000",
        f"monitoring.skew.serving_logs={logs}",
    ]
    _write_csv(data / "span-1" / "part-0.csv", rows[:SPAN_1_ROWS])
    first = _run(root, *overrides)
    shifted = _shift_hours(rows[SPAN_1_ROWS : SPAN_1_ROWS + SPAN_2_ROWS])
    _write_csv(data / "span-2" / "part-0.csv", shifted[:800])
    _write_csv(data / "span-2" / "part-1.csv", shifted[800:])
    second = _run(root, *overrides)
    return {
        "root": root,
        "data": data,
        "overrides": overrides,
        "first": first,
        "second": second,
        "unseen": rows[8_000:9_000],  # real trips in neither span nor the log
    }


def _verdicts(root: Path, type_name: str) -> list:
    from pipeline.mlmd_run import open_store

    store = open_store(str(root / "metadata.sqlite"))
    return sorted(store.get_artifacts_by_type(type_name), key=lambda a: a.id)


def test_first_span_has_nothing_to_compare(spans):
    code, summary = spans["first"]
    assert code == cli.EXIT_OK, summary
    assert summary["rows_read"] == SPAN_1_ROWS
    assert summary["drift"]["verdict"] == "not_compared"
    assert "first span" in summary["drift"]["note"]
    assert summary["components"][dag.MONITORING_GATE_ID] == "COMPLETE"


def test_shifted_span_drifts_is_recorded_in_mlmd_and_only_reported(spans):
    from pipeline.components import monitoring as mon
    from pipeline.mlmd_run import custom_value

    code, summary = spans["second"]
    # The newest span only, from its two shards; the run went on to push.
    assert summary["rows_read"] == SPAN_2_ROWS, summary
    assert code == cli.EXIT_OK, summary
    assert summary["pushed_to"] and summary["pushed_to"] != spans["first"][1]["pushed_to"]
    drift = summary["drift"]
    assert drift["found"] is True and drift["stopped"] is False
    # Only the hour moved: the categorical hours and community areas, compared on the same
    # scale on both sides, flag nothing else.
    assert drift["failed_features"] == [f.HOUR_KEY]
    assert drift["note"] == "span 2 compared with span 1"
    assert os.path.isfile(drift["report"])
    with open(drift["verdict_file"]) as fh:
        verdict = json.load(fh)
    hour = next(x for x in verdict["features"] if x["name"] == f.HOUR_KEY)
    assert hour["flagged"] and hour["distance"] > hour["threshold"]
    # MLMD holds both spans' verdicts with their spans and findings.
    first, second = _verdicts(spans["root"], mon.DriftVerdict.TYPE_NAME)[-2:]
    assert custom_value(first, mon.VERDICT_PROPERTY) == "not_compared"
    assert custom_value(second, mon.VERDICT_PROPERTY) == "drift_found"
    assert (
        custom_value(second, mon.SPAN_PROPERTY),
        custom_value(second, mon.BASELINE_SPAN_PROPERTY),
    ) == (2, 1)
    assert f.HOUR_KEY in str(custom_value(second, mon.FAILED_FEATURES_PROPERTY)).split(",")


def test_drift_on_demand_gives_the_pipelines_numbers(spans, tmp_path):
    """`taxifare drift` on the statistics the pipeline judged gives its verdict exactly, and
    on the spans' CSV files (all rows, not only the train split) the same finding."""
    from pipeline.components import monitoring as mon

    _, summary = spans["second"]
    with open(summary["drift"]["verdict_file"]) as fh:
        pipeline_verdict = json.load(fh)
    verdict_dir = Path(summary["drift"]["verdict_file"]).parent
    code = cli.main(
        [
            "drift",
            "--baseline",
            str(verdict_dir / mon.BASELINE_DIR / "FeatureStats.pb"),
            "--current",
            str(verdict_dir / mon.STATISTICS_DIR / "FeatureStats.pb"),
            "--out",
            str(tmp_path / "stats"),
        ]
    )
    on_demand = json.loads((tmp_path / "stats" / "verdict.json").read_text())
    assert code == cli.EXIT_DRIFT_OR_SKEW
    for ours, theirs in zip(on_demand["features"], pipeline_verdict["features"], strict=True):
        assert (ours["name"], ours["distance"], ours["p_value"], ours["flagged"]) == (
            theirs["name"],
            theirs["distance"],
            theirs["p_value"],
            theirs["flagged"],
        )
    data = spans["data"]
    code = cli.main(
        [
            "drift",
            "--baseline",
            str(data / "span-1" / "part-0.csv"),
            "--current",
            str(data / "span-2"),
            "--out",
            str(tmp_path / "csv"),
        ]
    )
    from_csv = json.loads((tmp_path / "csv" / "verdict.json").read_text())
    assert from_csv["failed_features"] == [f.HOUR_KEY]
    hour = {x["name"]: x for x in from_csv["features"]}[f.HOUR_KEY]
    pipeline_hour = {x["name"]: x for x in pipeline_verdict["features"]}[f.HOUR_KEY]
    assert abs(hour["distance"] - pipeline_hour["distance"]) < 0.05


def test_skew_against_the_request_log_is_recorded(spans):
    from pipeline.components import monitoring as mon
    from pipeline.mlmd_run import custom_value

    # Real traffic against span 2's training data, whose hours were moved: skew on the hour.
    _, summary = spans["second"]
    skew = summary["skew"]
    assert skew["found"] is True and skew["stopped"] is False
    assert f.HOUR_KEY in skew["failed_features"]
    with open(skew["verdict_file"]) as fh:
        verdict = json.load(fh)
    assert verdict["sides"]["serving"]["examples"] == 1_200
    (latest,) = _verdicts(spans["root"], mon.SkewVerdict.TYPE_NAME)[-1:]
    assert custom_value(latest, mon.VERDICT_PROPERTY) == "skew_found"


def test_stop_mode_trains_and_pushes_nothing(spans):
    root = spans["root"]
    before = _serving_state(root)
    code, summary = _run(root, *spans["overrides"], "monitoring.drift.on_detect=stop")
    assert code == cli.EXIT_DRIFT_OR_SKEW, summary
    assert summary["monitoring_stopped"] is True
    assert summary["components"][dag.MONITORING_GATE_ID] == "FAILED"
    assert summary["drift"]["stopped"] is True
    # Skew was found too, but its on_detect is still `report`.
    assert summary["skew"]["found"] is True and summary["skew"]["stopped"] is False
    for node in (dag.TRANSFORM_ID, dag.TRAINER_ID, dag.EVALUATOR_ID, dag.PUSHER_ID):
        assert node not in summary["components"], node
    assert summary["pushed_to"] is None
    assert _serving_state(root) == before


def _skew_cli(root: Path, logs: Path, out: Path) -> tuple[int, dict | None]:
    code = cli.main(
        ["skew", "--serving-logs", str(logs), "--pipeline-root", str(root), "--out", str(out)]
    )
    if not (out / "verdict.json").is_file():
        return code, None
    with open(out / "verdict.json") as fh:
        return code, json.load(fh)


def test_skew_takes_the_training_data_of_the_version_that_served(spans, tmp_path):
    root = spans["root"]
    (_, first), (_, second) = spans["first"], spans["second"]
    v1, v2 = (int(Path(s["pushed_to"]).name) for s in (first, second))
    traffic = spans["unseen"]

    by_version = {}
    for version in (v1, v2):
        _write_log(tmp_path / f"log-{version}", traffic, [version])
        code, verdict = _skew_cli(root, tmp_path / f"log-{version}", tmp_path / f"out-{version}")
        assert verdict is not None and code in (0, 5)
        by_version[version] = verdict
    # Each version is judged against the statistics of the span it was trained on.
    assert by_version[v1]["model_uri"] == first["model_uri"]
    assert by_version[v2]["model_uri"] == second["model_uri"]
    train_1 = by_version[v1]["sides"]["training"]["examples"]
    train_2 = by_version[v2]["sides"]["training"]["examples"]
    assert train_1 > train_2  # span 1 has 2,000 trips, span 2 has 1,500
    # Real traffic: no skew on the hour against span 1, skew against the shifted span 2.
    assert f.HOUR_KEY not in by_version[v1]["failed_features"]
    assert f.HOUR_KEY in by_version[v2]["failed_features"]

    # A log of both versions: the newest is checked, on its own requests, and it says so.
    _write_log(tmp_path / "mixed", traffic, [v1, v2, v2, v2])
    code, verdict = _skew_cli(root, tmp_path / "mixed", tmp_path / "out-mixed")
    assert verdict["model_version"] == v2
    assert verdict["log_model_versions"] == {str(v1): 250, str(v2): 750}
    assert verdict["sides"]["serving"]["examples"] == 750
    assert str(v1) in verdict["notes"][0] and str(v2) in verdict["notes"][0]


def test_skew_of_a_version_never_pushed_is_a_usage_error(spans, sample_rows, tmp_path, capsys):
    _write_log(tmp_path / "log", sample_rows[:100], [123])
    code, verdict = _skew_cli(spans["root"], tmp_path / "log", tmp_path / "out")
    assert code == cli.EXIT_USAGE and verdict is None
    err = capsys.readouterr().err
    assert "model version 123" in err and "was not pushed" in err
