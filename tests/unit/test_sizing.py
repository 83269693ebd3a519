"""Work sized to the data: the split's buckets from the input's size, the training length
from the train split's size; and the defaults that leave the 15k-trip sample as it was."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline import dag, runs, summary
from pipeline.config import load_config
from pipeline.data_source import input_size_bytes, tfx_sample_dir
from pipeline.split_sizing import describe_recorded, plan_split
from taxifare_modules.hparams import TrainingSettings
from taxifare_modules.trainer import training_length

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _buckets(example_gen) -> list[tuple[str, int]]:
    """ExampleGen's split as TFX holds it (its output_config, as JSON)."""
    config = json.loads(example_gen.exec_properties["output_config"])
    return [(s["name"], s["hash_buckets"]) for s in config["split_config"]["splits"]]


@pytest.mark.parametrize("name", ["local.yaml", "smoke.yaml"])
def test_the_sample_keeps_its_configured_split(name):
    cfg = load_config(CONFIGS / name, ["root=/tmp/taxifare-unit-sizing"])
    plan = dag.split_plan(cfg, tfx_sample_dir())
    assert (plan.train_buckets, plan.eval_buckets, plan.test_buckets) == (3, 1, 1)
    assert not plan.sized
    assert plan.estimated_rows == pytest.approx(15_002, rel=0.02)
    assert "as configured" in plan.reason and "within their caps" in plan.reason
    # ExampleGen is given exactly those buckets.
    pipeline = dag.create_pipeline(cfg, tfx_sample_dir())
    example_gen = next(c for c in pipeline.components if c.id == dag.EXAMPLE_GEN_ID)
    assert _buckets(example_gen) == [("train", 3), ("eval", 1), ("test", 1)]


def test_the_sample_trains_as_long_as_before():
    # The sample's train split (about 9,000 examples) is far below validation_examples:
    # an epoch is still one pass, as many epochs as configured.
    settings = TrainingSettings()
    for rows, batch in ((8_900, 128), (9_000, 64)):
        assert training_length(rows, batch, settings) == (30, rows // batch, None)
    # With the smoke config's step cap too.
    capped = TrainingSettings(epochs=3, train_steps=300, batch_size=64)
    assert training_length(9_000, 64, capped) == (3, 140, None)


def test_holdouts_are_capped_in_rows_at_scale(tmp_path):
    # 20,000 rows of 128 bytes, caps lowered: eval 1,000 and test 2,000 rows.
    data = tmp_path / "trips.csv"
    data.write_bytes(b"x" * (20_000 * 128))
    cfg = load_config(
        CONFIGS / "local.yaml",
        ["root=/tmp/taxifare-unit-sizing", f"data.input={tmp_path}",
         "data.split.max_eval_rows=1000", "data.split.max_test_rows=2000"],
    )  # fmt: skip
    assert input_size_bytes(cfg, str(tmp_path)) == 20_000 * 128
    plan = dag.split_plan(cfg, str(tmp_path))
    assert plan.sized and plan.estimated_rows == 20_000
    # 5% and 10% of 20,000 rows, in 10,000 buckets (the fewest powers of ten that give each
    # capped split at least 100 buckets); the rest to train.
    assert (plan.train_buckets, plan.eval_buckets, plan.test_buckets) == (8_500, 500, 1_000)
    assert plan.ratio_text() == "train 85% : eval 5% : test 10%"
    assert "eval capped at 1,000 rows" in plan.reason and "test capped at 2,000" in plan.reason
    assert "~20,000 rows estimated" in plan.reason
    # ExampleGen gets the plan, and the Trainer's record gets it (summary, `taxifare runs`).
    pipeline = dag.create_pipeline(cfg, str(tmp_path))
    by_id = {c.id: c for c in pipeline.components}
    assert _buckets(by_id[dag.EXAMPLE_GEN_ID]) == [
        ("train", 8_500), ("eval", 500), ("test", 1_000)
    ]  # fmt: skip
    recorded = by_id[dag.TRAINER_ID].exec_properties["custom_config"]
    assert '"sized": true' in recorded and '"eval_buckets": 500' in recorded


@pytest.mark.parametrize(
    ("rows", "caps", "expected"),
    [
        # Only test over its cap: eval keeps its configured 20%.
        (50_000, (None, 5_000), (700, 200, 100)),
        # Far above the caps: finer buckets, each capped split rounded down.
        (30_000_000, (100_000, 200_000), (99_001, 333, 666)),
        # Exactly at the cap: nothing to change.
        (10_000, (2_000, 2_000), (3, 1, 1)),
    ],
)
def test_bucket_choice(rows, caps, expected):
    plan = plan_split((3, 1, 1), *caps, bytes_per_row=100, input_bytes=rows * 100)
    assert (plan.train_buckets, plan.eval_buckets, plan.test_buckets) == expected
    total = sum(expected)
    for cap, buckets in zip(caps, expected[1:], strict=True):
        if cap is not None:
            # Never above the cap on the estimated rows, and within 1% below it.
            assert rows * buckets / total <= cap
            if plan.sized and rows * 0.2 > cap:
                assert rows * buckets / total >= 0.99 * cap


def test_unknown_input_size_keeps_the_configured_buckets():
    plan = plan_split((3, 1, 1), 10, 10, 128, None)
    assert (plan.train_buckets, plan.eval_buckets, plan.test_buckets, plan.sized) == (
        3, 1, 1, False
    )  # fmt: skip
    assert "input size unknown" in plan.reason


def test_training_validates_every_so_many_examples_at_scale():
    # 10,000 train examples, batches of 100, validated every 1,000 examples: rounds of 10
    # steps, at most 3 passes' worth of them (30 rounds).
    settings = TrainingSettings(batch_size=100, epochs=3, validation_examples=1_000)
    assert training_length(10_000, 100, settings) == (30, 10, 1_000)
    # A round is whole batches: 1,050 examples ask for 11 batches of 100.
    settings = TrainingSettings(batch_size=100, epochs=3, validation_examples=1_050)
    assert training_length(10_000, 100, settings) == (math.ceil(300 / 11), 11, 1_100)
    # The step cap still caps the total.
    capped = TrainingSettings(batch_size=100, epochs=3, validation_examples=1_000, train_steps=25)
    assert training_length(10_000, 100, capped) == (3, 10, 1_000)
    # A cap below one round: one round of the capped steps, and its examples say so.
    short = TrainingSettings(batch_size=100, epochs=3, validation_examples=1_000, train_steps=4)
    assert training_length(10_000, 100, short) == (1, 4, 400)
    # null: one validation per pass, however long.
    per_pass = TrainingSettings(batch_size=100, epochs=3, validation_examples=None)
    assert training_length(10_000, 100, per_pass) == (3, 100, None)


def _training_record(**overrides) -> dict:
    plan = plan_split((3, 1, 1), 1_000, 2_000, 128, 20_000 * 128)
    record = {
        "epochs_run": 7, "best_epoch": 4, "steps_per_epoch": 10, "batch_size": 100,
        "examples_trained": 7_000, "examples_at_best": 4_000, "train_examples": 17_000,
        "validation": "examples", "round_examples": 1_000, "patience_examples": 3_000,
        "data_split": plan.to_json(),
    }  # fmt: skip
    return {**record, **overrides}


def test_summary_and_runs_show_the_split_and_the_rounds():
    record = _training_record()
    lines = summary.render_training(record)
    assert lines[0].startswith("split        train 85% : eval 5% : test 10% (sized to the input")
    assert "7 rounds of 1,000 examples (10 steps)" in lines[1]
    assert "round 4 (4,000 examples)" in lines[2] and "patience 3,000 examples" in lines[2]
    run = runs.RunRecord("r", 0.0, runs.COMPLETED, None, {}, {}, training=record)
    assert runs.split_text(run) == "85/5/10 sized"
    assert runs.training_steps(run) == "7x10 rounds"
    table = runs.format_table([run])
    assert "85/5/10 sized" in table and "7x10 rounds" in table
    assert describe_recorded(None) is None
    # One round (a step cap below a round): said in the singular.
    one = summary.render_training(_training_record(epochs_run=1, best_epoch=1))
    assert "1 round of 1,000 examples (10 steps)" in one[1]


def test_summary_of_a_pass_per_epoch_training_reads_as_before():
    record = _training_record(
        validation="epoch", round_examples=None,
        data_split=plan_split((3, 1, 1), 100_000, 200_000, 128, 1_922_812).to_json(),
    )  # fmt: skip
    lines = summary.render_training(record)
    assert lines[0].startswith("split        train 60% : eval 20% : test 20% (3:1:1 as configured")
    assert lines[1] == "training     7 epochs of 10 steps (best weights: epoch 4), 7,000 examples"
    run = runs.RunRecord("r", 0.0, runs.COMPLETED, None, {}, {}, training=record)
    assert (runs.split_text(run), runs.training_steps(run)) == ("60/20/20", "7x10")


@pytest.mark.parametrize("value", ["1000", "null"])
def test_validation_examples_reaches_run_fn(value):
    from taxifare_modules.trainer import settings_from_custom_config

    cfg = load_config(
        CONFIGS / "local.yaml",
        ["root=/tmp/taxifare-unit-sizing", f"training.validation_examples={value}"],
    )
    settings = settings_from_custom_config(dag.trainer_custom_config(cfg))
    assert settings.validation_examples == (None if value == "null" else 1000)


def test_a_window_of_spans_is_sized_by_the_average_span(tmp_path):
    # Three monthly spans of 10,000 rows each: each span's ExampleGen splits its own span,
    # so 10,000 rows are split (the window's 30,000 would give eval and test a third).
    for month in ("201610", "201611", "201612"):
        (tmp_path / f"span-{month}").mkdir()
        (tmp_path / f"span-{month}" / "trips.csv").write_bytes(b"x" * (10_000 * 128))
    cfg = load_config(
        CONFIGS / "local.yaml",
        ["root=/tmp/taxifare-unit-sizing", f"data.input={tmp_path}",
         "data.pattern=span-{SPAN}/*.csv", "data.train_spans=3",
         "data.split.max_eval_rows=1000", "data.split.max_test_rows=1000"],
    )  # fmt: skip
    plan = dag.split_plan(cfg, str(tmp_path))
    assert plan.estimated_rows == 10_000
    assert (plan.train_buckets, plan.eval_buckets, plan.test_buckets) == (800, 100, 100)
