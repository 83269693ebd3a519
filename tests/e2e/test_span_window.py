"""A window of spans on a real run: three tiny spans of real trips, `data.train_spans: 2`.

Transform and the Trainer must learn from the two latest spans, and the Evaluator test on the
newest span's test split alone; span 1 is never read.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import pytest

from pipeline import cli, dag
from pipeline.mlmd_run import custom_value
from pipeline.names import ROWS_EXCLUDED_PROPERTY, ROWS_READ_PROPERTY
from pipeline.runs import artifact_span, load_run
from tests.e2e.runs import smoke_run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# Rows per span: different sizes, so each count names the span it came from; the newest
# holds enough train and test trips for the FareFilter to let the run go on.
SPAN_ROWS = {1: 500, 2: 3_500, 3: 4_000}


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# Both executors ExampleGen may run: TFX's (small inputs) and the streaming one (large ones).
@pytest.fixture(scope="module", params=["tfx", "streaming"])
def window(request, sample_rows, tmp_path_factory) -> dict:
    """One run over three spans of real trips with a window of two."""
    rows = random.Random(5).sample(sample_rows, sum(SPAN_ROWS.values()))
    base = tmp_path_factory.mktemp("window")
    data, root = base / "trips", base / "root"
    start = 0
    for span, count in SPAN_ROWS.items():
        _write_csv(data / f"span-{span}" / "trips.csv", rows[start : start + count])
        start += count
    code, summary = smoke_run(
        root,
        f"data.input={data}",
        "data.pattern=span-{SPAN}/*.csv",
        "data.train_spans=2",
        f"data.example_gen={request.param}",
        "training.train_steps=100",
    )
    record, nodes = load_run(str(root))
    return {"code": code, "summary": summary, "record": record, "nodes": nodes, "root": root}


def _kept(artifact, split: str) -> int:
    """Examples of a split the FareFilter kept."""
    read = custom_value(artifact, f"{split}_{ROWS_READ_PROPERTY}")
    return int(read - custom_value(artifact, f"{split}_{ROWS_EXCLUDED_PROPERTY}"))


def test_the_trainer_learns_from_the_two_latest_spans(window):
    assert window["code"] == cli.EXIT_OK, window["summary"]
    nodes = window["nodes"]
    learned = nodes[dag.TRANSFORM_ID].inputs["examples"]
    assert sorted(artifact_span(a) for a in learned) == [2, 3]
    by_span = {artifact_span(a): a for a in learned}
    assert {s: custom_value(a, ROWS_READ_PROPERTY) for s, a in by_span.items()} == {
        2: SPAN_ROWS[2],
        3: SPAN_ROWS[3],
    }
    # The Trainer took what Transform made of both spans, and trained on both train splits.
    transformed = nodes[dag.TRANSFORM_ID].outputs["transformed_examples"]
    trained = nodes[dag.TRAINER_ID].inputs["examples"]
    assert len(transformed) == 2
    assert sorted(a.id for a in trained) == sorted(a.id for a in transformed)
    model_run = nodes[dag.TRAINER_ID].outputs["model_run"][0]
    with open(os.path.join(model_run.uri, "training.json")) as fh:
        training = json.load(fh)
    assert training["train_examples"] == _kept(by_span[2], "train") + _kept(by_span[3], "train")
    # Span 1 is outside the window: nothing read it.
    read = [
        artifact_span(a)
        for node in nodes.values()
        if node.node_id.startswith(dag.EXAMPLE_GEN_ID)
        for a in node.outputs.get("examples", [])
    ]
    assert sorted(read) == [2, 3]


def test_the_evaluator_tests_on_the_newest_span_alone(window):
    nodes = window["nodes"]
    tested = nodes[dag.EVALUATOR_ID].inputs["examples"]
    assert [artifact_span(a) for a in tested] == [3]
    assert window["record"].metrics_split == dag.TEST_SPLIT
    assert window["record"].example_count == _kept(tested[0], dag.TEST_SPLIT)
    # Statistics, validation and drift describe the newest span too.
    statistics = nodes[dag.STATISTICS_GEN_ID].inputs["examples"]
    assert [artifact_span(a) for a in statistics] == [3]


def test_the_summary_and_runs_name_the_spans(window, capsys):
    summary = window["summary"]
    assert summary["train_spans"] == [2, 3] and summary["span"] == 3
    assert summary["rows_read"] == SPAN_ROWS[3]
    assert window["record"].train_spans == [2, 3] and window["record"].span == 3
    capsys.readouterr()
    assert cli.main(["runs", "--root", str(window["root"])]) == cli.EXIT_OK
    table = capsys.readouterr().out.splitlines()
    assert "2..3" in table[1].split()
