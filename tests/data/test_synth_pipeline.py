"""The whole pipeline on 50,000 synthetic trips in three monthly spans: it reads the latest."""

from __future__ import annotations

import json

import pytest

from pipeline import cli, dag
from tests.data.conftest import synth

pytestmark = pytest.mark.e2e


def test_pipeline_runs_on_the_latest_of_several_spans(city, tmp_path, capsys):
    data, root = tmp_path / "data", tmp_path / "root"
    manifest = synth(city, data, rows=50_000, months=3, shards=2, seed=21)
    spans = manifest["spans"]
    assert len(spans) == 3 and all(s["rows"] > 10_000 for s in spans)
    latest = spans[-1]
    code = cli.main(
        ["run", "--config", "configs/smoke.yaml", "--set", f"root={root}",
         "--set", f"data.input={data}", "--set", "data.pattern=span-{SPAN}/*.csv",
         "--set", "training.train_steps=200",
         # The streaming ExampleGen that auto picks for millions of rows, end to end here.
         "--set", "data.example_gen=streaming"]
    )  # fmt: skip
    summary = json.loads((root / "summary.json").read_text())
    assert code == cli.EXIT_OK, summary
    # Only the latest span was read, and ExampleGen recorded it as the span.
    assert summary["rows_read"] == latest["rows"]
    assert summary["rows_excluded"] == latest["rows"] - latest["rows_in_label_range"]
    from pipeline.mlmd_run import open_store

    store = open_store(str(root / "metadata.sqlite"))
    examples = [
        a for a in store.get_artifacts_by_type("Examples") if f"/{dag.EXAMPLE_GEN_ID}/" in a.uri
    ]
    assert [a.custom_properties["span"].int_value for a in examples] == [latest["span"]]
    # ...by the streaming executor (the execution type is the component's class).
    producers = store.get_executions_by_id(
        [e.execution_id for e in store.get_events_by_artifact_ids([examples[0].id])]
    )
    types = {t.name for t in store.get_execution_types_by_id([e.type_id for e in producers])}
    assert "pipeline.components.csv_example_gen.CsvExampleGen" in types, types
    # No model beats the oracle on the rows it was evaluated on (beyond sampling error).
    from pipeline.data.oracle import score_examples

    split = summary["eval_split"]
    best = score_examples([f"{summary['examples_uri']}/Split-{split}/*"], manifest, city=city)
    assert best.rows_scored == summary["eval_count"]
    assert summary["eval_rmse"] > best.rmse_oracle - 3 * best.rmse_oracle_se
    assert summary["pushed_to"]
    # The run said which Beam mode it chose for this input (small: in memory).
    assert "Beam DirectRunner in_memory" in capsys.readouterr().err
