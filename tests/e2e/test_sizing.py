"""Work sized to the data, end to end: a synthetic input above lowered thresholds gets its
holdouts capped in rows and its training validated every so many examples, and the run
summary and `taxifare runs` say so."""

from __future__ import annotations

import json
import math
import os
import re

import pytest

from pipeline import cli
from pipeline.split_sizing import plan_split
from tests.data.conftest import city, synth  # noqa: F401 - the learned city fixture
from tests.e2e.runs import smoke_run

pytestmark = pytest.mark.e2e

_MAX_EVAL, _MAX_TEST, _ROUND = 1_000, 2_000, 4_000


def test_split_and_training_length_follow_the_input_size(city, tmp_path, capsys):  # noqa: F811
    data, root = tmp_path / "data", tmp_path / "root"
    synth(city, data, rows=20_000, months=1, seed=5)
    size = sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(data)
        for name in names
        if name.endswith(".csv")
    )
    code, summary = smoke_run(
        root,
        f"data.input={data}",
        "data.pattern=span-{SPAN}/*.csv",
        f"data.split.max_eval_rows={_MAX_EVAL}",
        f"data.split.max_test_rows={_MAX_TEST}",
        f"training.validation_examples={_ROUND}",
    )
    assert code == cli.EXIT_OK, summary
    # The split is the one documented for this input size (pipeline/split_sizing.py).
    plan = plan_split((3, 1, 1), _MAX_EVAL, _MAX_TEST, 128, size)
    assert plan.sized and plan.eval_buckets < plan.test_buckets < plan.train_buckets
    training = summary["training"]
    assert training["data_split"] == plan.to_json()
    printed = capsys.readouterr()
    # Rows per split: each split holds its share of the kept trips (a hash split: binomial
    # noise), so eval and test land near their caps and train has the rest.
    records = json.loads(_runs_json(root, capsys))
    rows = records[0]["split_rows"]
    kept = summary["rows_read"] - summary["rows_excluded"]
    assert sum(rows.values()) == kept
    for split, share in zip(("train", "eval", "test"), plan.shares, strict=True):
        expected = kept * share
        assert abs(rows[split] - expected) <= 4 * math.sqrt(expected) + 1, (split, rows)
    assert rows["eval"] < 1.15 * _MAX_EVAL and rows["test"] < 1.15 * _MAX_TEST
    assert training["train_examples"] == rows["train"]
    # A pass over ~17,000 train examples is longer than a round of 4,000: validated every
    # 63 batches of 64 (4,032 examples), the smoke config's 300-step cap bounding the rounds.
    assert training["validation"] == "examples"
    assert (training["steps_per_epoch"], training["round_examples"]) == (63, 4_032)
    assert 1 <= training["best_epoch"] <= training["epochs_run"] <= math.ceil(300 / 63)
    assert training["patience_examples"] == 4_032 * training["settings"]["early_stopping_patience"]
    # What the run printed and what `taxifare runs` shows.
    out = printed.out + printed.err
    assert "split        train " in out and "sized to the input" in out
    assert re.search(rf"training     \d+ rounds? of {4_032:,} examples", out), out
    assert cli.main(["runs", "--root", str(root)]) == cli.EXIT_OK
    table = capsys.readouterr().out
    assert " sized" in table and "x63 rounds" in table


def _runs_json(root, capsys) -> str:
    capsys.readouterr()
    assert cli.main(["runs", "--root", str(root), "--json"]) == cli.EXIT_OK
    return capsys.readouterr().out
