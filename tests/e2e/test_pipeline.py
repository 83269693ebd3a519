"""The whole pipeline on the real sample, then on corrupted data that the gate must stop."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipeline import cli, dag
from taxifare_modules import features as f
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


def _run(root: Path, *overrides: str) -> tuple[int, dict]:
    args = ["run", "--config", "configs/smoke.yaml", "--set", f"root={root}"]
    for o in overrides:
        args += ["--set", o]
    code = cli.main(args)
    with open(root / "summary.json") as fh:
        return code, json.load(fh)


def _serving_state(root: Path) -> dict[str, float]:
    serving = root / "serving"
    return {
        str(p.relative_to(serving)): p.stat().st_mtime for p in serving.rglob("*") if p.is_file()
    }


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
    }
    assert summary["rows_read"] == 15_002
    assert summary["rows_excluded"] > 0  # the sample has zero fares
    assert summary["anomalies"] == []
    assert summary["blessed"] is True
    assert 0 < summary["eval_rmse"] < 20 and 0 < summary["eval_mae"] < summary["eval_rmse"]
    assert summary["eval_count"] > 4000
    pushed = Path(summary["pushed_to"])
    assert pushed.parent == root / "serving" / "taxifare"
    assert pushed.name.isdigit()  # a TF Serving version folder
    assert (pushed / "saved_model.pb").is_file()


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
    if how == "missing_column":
        for r in rows:
            del r[f.HOUR_KEY]
        return rows, f.HOUR_KEY
    if how == "text_in_numeric_column":
        for r in rows[::50]:
            r[f.PICKUP_LATITUDE_KEY] = "north"
        return rows, f.PICKUP_LATITUDE_KEY
    if how == "new_payment_type":
        for r in rows[::20]:
            r[f.PAYMENT_TYPE_KEY] = "Bitcoin"
        return rows, f.PAYMENT_TYPE_KEY
    raise ValueError(how)


@pytest.mark.parametrize("how", ["missing_column", "text_in_numeric_column", "new_payment_type"])
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


def test_spans_of_sharded_csv_take_the_latest_span(sample_rows, tmp_path):
    """A folder of spans, each of several CSV shards: ExampleGen reads the newest span only."""
    data = tmp_path / "trips"
    _write_csv(data / "span-1" / "part-0.csv", sample_rows[:500])
    _write_csv(data / "span-2" / "part-0.csv", sample_rows[500:1300])
    _write_csv(data / "span-2" / "part-1.csv", sample_rows[1300:2000])
    root = tmp_path / "root"
    code, summary = _run(
        root,
        f"data.input={data}",
        "data.pattern=span-{SPAN}/*.csv",
        "orchestrator.runner=local",
    )
    # The head of the pipeline on the newest span: 1,500 rows from two shards.
    assert summary["rows_read"] == 1_500, summary
    assert code in (cli.EXIT_OK, cli.EXIT_NOT_BLESSED)
    assert summary["components"][dag.EXAMPLE_GEN_ID] == "COMPLETE"
