"""`python -m bench --scale`: the resumable runs, the report writer on saved runs (tables,
ratios, targets, memory curves), the memory-cap watcher and the training-budget arithmetic."""

from __future__ import annotations

import gzip
import json
import os
import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest

from bench import measure, memory_svg, scale
from bench.measure import Measurement
from bench.tree_sampler import Sample, TreePeak, decimate

GIB = 2**30
SVG_NS = "{http://www.w3.org/2000/svg}"


def _run(tmp_path: Path) -> scale.ScaleRun:
    measurement = Measurement(
        name="ours-2000000",
        command=("python", "-m", "pipeline", "run"),
        returncode=0,
        wall_seconds=1234.5,
        max_rss_bytes=3 * 2**30,
        cpu_seconds=2000.25,
        other_cpu_seconds=12.0,
        tree=TreePeak(total_bytes=5 * 2**30, largest_process_bytes=3 * 2**30, max_processes=4,
                      samples=2400),
        stdout_path=tmp_path / "out.log",
        stderr_path=tmp_path / "err.log",
    )  # fmt: skip
    return scale.ScaleRun(
        "ours, 2,000,000 rows", 2_000_000, measurement, {"Trainer": 300.0}, 3.4, 3.3, 5_985_920
    )


def test_a_saved_run_is_reported_instead_of_run_again(tmp_path):
    path = tmp_path / "ours-2000000.json"
    first = scale._saved_or_run(path, lambda: _run(tmp_path))
    assert path.exists()

    def must_not_run() -> scale.ScaleRun:
        raise AssertionError("the saved run was run again")

    notes: list[str] = []
    again = scale._saved_or_run(path, must_not_run, notes)
    assert again == first
    # The report says the figures are an earlier run's.
    assert len(notes) == 1 and notes[0].startswith("ours, 2,000,000 rows: measured by an earlier")
    lines = scale.render_section([again], {}, [])
    assert any(
        "| ours, 2,000,000 rows | 1,234 s | 1,620 | 3.00 GiB | 5.00 GiB |" in x for x in lines
    )
    assert "| examples trained (steps x batch) | 5,985,920 |" in lines


def test_reused_synthetic_data_keeps_the_time_its_synthesis_took(tmp_path, monkeypatch):
    calls: list[int] = []

    def fake_synthesize(
        rows: int, out: Path, label_range: tuple[float, float] = scale.DEFAULT_LABEL_RANGE
    ) -> tuple[dict, float]:
        calls.append(rows)
        out.mkdir(parents=True)
        manifest = {"spans": [{"rmse_floor_label_range": 3.3}]}
        (out / "synth.json").write_text(json.dumps(manifest))
        return manifest, 7.5

    monkeypatch.setattr(scale, "synthesize", fake_synthesize)
    data = tmp_path / "synth-2000000"
    seconds: dict[int, float] = {}
    notes: list[str] = []
    first = scale._synthesized(2_000_000, data, tmp_path, seconds, notes)
    assert (calls, seconds, notes) == ([2_000_000], {2_000_000: 7.5}, [])

    seconds, notes = {}, []
    again = scale._synthesized(2_000_000, data, tmp_path, seconds, notes)
    assert again == first and calls == [2_000_000]
    assert seconds == {2_000_000: 7.5}
    assert len(notes) == 1 and notes[0].startswith("Synthesis of 2,000,000 rows: timed by an")
    lines = scale.render_section([_run(tmp_path)], seconds, notes)
    assert any("2,000,000 rows in 7.5 s" in line for line in lines)

    # Data left by a run before the time was kept: said to be untimed, not given a time.
    (tmp_path / "synth-2000000.seconds.json").unlink()
    seconds, notes = {}, []
    scale._synthesized(2_000_000, data, tmp_path, seconds, notes)
    assert seconds == {} and notes == [] and calls == [2_000_000]
    lines = scale.render_section([_run(tmp_path)], seconds, notes)
    assert any("not timed here" in line for line in lines)

    # A synthesis stopped half-way (files, no manifest) is done again, not reused.
    (data / "synth.json").unlink()
    scale._synthesized(2_000_000, data, tmp_path, {}, [])
    assert calls == [2_000_000, 2_000_000]


# --- The report writer on saved runs, written by hand as `--scale` saves them -------------


def _series(seconds: float, peak_gib: float, largest_gib: float, points: int = 50) -> list:
    """[seconds, tree bytes, largest bytes] rising to the peaks at the end."""
    return [
        [round(seconds * i / (points - 1), 2), int(peak_gib * GIB * (i + 1) / points),
         int(largest_gib * GIB * (i + 1) / points)]
        for i in range(points)
    ]  # fmt: skip


def _run_json(name: str, wall: float, largest_gib: float, tree_gib: float, **extra) -> dict:
    return {
        "name": name, "command": ["python"], "returncode": extra.pop("returncode", 0),
        "wall_seconds": wall, "max_rss_bytes": int(largest_gib * GIB), "cpu_seconds": wall,
        "other_cpu_seconds": 1.0,
        "tree": {"total_bytes": int(tree_gib * GIB),
                 "largest_process_bytes": int(largest_gib * GIB), "max_processes": 4,
                 "samples": int(wall * 2)},
        "stdout_path": "out.log", "stderr_path": "err.log",
        "rss_series": _series(wall, tree_gib, largest_gib), **extra,
    }  # fmt: skip


OURS_2M = {"CsvExampleGen": 80.0, "FareFilter": 20.0, "StatisticsGen": 36.0,
           "Transform": 100.0, "Trainer": 140.0, "Evaluator": 100.0, "Pusher": 1.0}  # fmt: skip
REF_2M = {"CsvExampleGen": 226.0, "StatisticsGen": 40.0, "SchemaGen": 1.0,
          "Transform": 125.0, "Trainer": 24.0, "Evaluator": 111.0, "Pusher": 1.0}  # fmt: skip
ROUNDS = {"epochs_run": 7, "best_epoch": 4, "steps_per_epoch": 3907, "batch_size": 128,
          "examples_trained": 3_500_672, "validation": "examples",
          "round_examples": 500_096}  # fmt: skip


def _saved_runs(folder: Path) -> list[scale.ScaleRun]:
    """Six runs as `--scale` saves them: ours at 200k, 2M and 20M, ours at the example's
    budget, TFX's example at 2M and its CsvExampleGen alone, stopped at the cap, at 20M."""
    figures = {
        "ours-200000": {
            "name": "ours, 200,000 rows", "rows": 200_000, "kind": "ours",
            "run": _run_json("ours-200000", 130.0, 1.3, 1.4),
            "components": {k: v / 8 for k, v in OURS_2M.items()}, "eval_rmse": 3.9,
            "floor": 3.33, "examples_trained": 599_040, "oracle_rmse": 3.8, "oracle_se": 0.1,
            "oracle_rows": 39_867,
            "training": {"epochs_run": 5, "best_epoch": 2, "steps_per_epoch": 936,
                         "batch_size": 128, "examples_trained": 599_040,
                         "validation": "epoch", "round_examples": None},
        },
        "ours-2000000": {
            "name": "ours, 2,000,000 rows", "rows": 2_000_000, "kind": "ours",
            "run": _run_json("ours-2000000", 500.0, 1.2, 2.5), "components": OURS_2M,
            "eval_rmse": 3.40, "floor": 3.30, "examples_trained": 3_500_672,
            "oracle_rmse": 3.30, "oracle_se": 0.05, "oracle_rows": 199_000, "training": ROUNDS,
        },
        "ours-2000000-budget": {
            "name": "ours at the TFX example's training budget, 2,000,000 rows",
            "rows": 2_000_000, "kind": "ours-budget",
            "run": _run_json("ours-2000000-budget", 150.0, 1.0, 1.5),
            "components": {"LatestBlessedModelResolver": 0.1, "Trainer": 20.0,
                           "Evaluator": 95.0, "Pusher": 0.5},
            "eval_rmse": 3.9, "floor": 3.30, "examples_trained": 40_064,
            "oracle_rmse": 3.30, "oracle_se": 0.05, "oracle_rows": 199_000,
            "training": {**ROUNDS, "epochs_run": 1, "best_epoch": 1, "steps_per_epoch": 313,
                         "examples_trained": 40_064},
            "budget": {"steps": 313, "batch_size": 128, "reference_examples": 40_000,
                       "cached": {k: OURS_2M[k] for k in ("CsvExampleGen", "FareFilter",
                                                          "StatisticsGen", "Transform")},
                       "states": {"CsvExampleGen": "CACHED", "FareFilter": "CACHED",
                                  "StatisticsGen": "CACHED", "Transform": "CACHED",
                                  "LatestBlessedModelResolver": "COMPLETE",
                                  "Trainer": "COMPLETE", "Evaluator": "COMPLETE",
                                  "Pusher": "COMPLETE"},
                       "baseline_evaluated": True, "full_wall_seconds": 500.0},
        },
        "reference-2000000": {
            "name": "TFX example, 2,000,000 rows", "rows": 2_000_000, "kind": "reference",
            "run": _run_json("reference-2000000", 800.0, 5.4, 9.0), "components": REF_2M,
            "eval_rmse": None, "floor": None, "examples_trained": 40_000,
            "training": {"steps": 1000, "batch_size": 40},
        },
        "ours-20000000": {
            "name": "ours, 20,000,000 rows", "rows": 20_000_000, "kind": "ours",
            "run": _run_json("ours-20000000", 4000.0, 3.5, 6.0),
            "components": {k: v * 8 for k, v in OURS_2M.items()}, "eval_rmse": 3.35,
            "floor": 3.31, "examples_trained": 6_000_000, "oracle_rmse": 3.3,
            "oracle_se": 0.05, "oracle_rows": 200_000, "training": ROUNDS,
        },
        "reference-example-gen-20000000": {
            "name": "TFX example's CsvExampleGen alone, 20,000,000 rows", "rows": 20_000_000,
            "kind": "reference-example-gen",
            "run": _run_json(
                "reference-example-gen-20000000", 900.0, 9.5, 16.2, returncode=None,
                stopped="memory cap", max_rss_sampled=True,
                limit_reached={"seconds": 899.5, "total_bytes": int(16.2 * GIB),
                               "limit_bytes": 16 * GIB},
            ),
            "components": {}, "eval_rmse": None, "floor": None,
            "stood": {"elapsed_seconds": 900.0, "stopped": "memory cap", "returncode": None,
                      "cap_bytes": 16 * GIB, "cap_seconds": 3600.0,
                      "cap_passed_at_seconds": 899.5, "peak_tree_bytes": int(16.2 * GIB),
                      "peak_largest_process_bytes": int(9.5 * GIB), "mlmd_state": "RUNNING",
                      "output_files": 2, "output_bytes": 3 * 2**20, "output_records": 12_345,
                      "output_final_files": 0, "output_final_records": 0},
        },
    }  # fmt: skip
    runs = []
    for stem, run in figures.items():
        path = folder / f"{stem}.json"
        path.write_text(json.dumps(run))
        runs.append(scale.ScaleRun.load(path))
    return runs


def _row(lines: list[str], start: str) -> list[str]:
    """The cells of the table row that starts with `start`."""
    found = [line for line in lines if line.startswith(f"| {start} |")]
    assert len(found) == 1, (start, found)
    return [cell.strip() for cell in found[0].strip("|").split("|")]


def test_the_section_reports_every_table_from_saved_runs(tmp_path):
    runs = _saved_runs(tmp_path)
    lines = scale.render_section(runs, {2_000_000: 8.0}, [])
    names = [r.name for r in runs]
    # Main table: the capped run's time is where it was stopped, its RSS the sampled one.
    capped = _row(lines, "TFX example's CsvExampleGen alone, 20,000,000 rows")
    assert capped[1:5] == ["stopped at 900 s (memory cap)", "-", "9.50 GiB (sampled)", "16.20 GiB"]
    # The budget run: cached upstream seconds of the full run (80+20+36+100) + its own 150.
    budget = _row(lines, "ours at the TFX example's training budget, 2,000,000 rows")
    assert budget[1] == "386 s (cached upstream + this run)"
    assert budget[5:9] == ["3.900", "3.300 +- 0.050", "1.18", "3.300"]

    # Seconds per component: one column per run; cached and stopped said as such.
    at = lines.index("Cost per million rows (wall seconds per 1M input rows):")
    seconds, cost = lines[:at], lines[at:]
    assert _row(seconds, "component")[1:] == names
    assert _row(seconds, "Transform") == ["Transform", "12", "100", "cached", "125", "800", "-"]
    assert _row(seconds, "CsvExampleGen")[1:] == ["10", "80", "cached", "226", "640",
                                                "stopped at 900 s"]  # fmt: skip
    trained = _row(lines, "what the Trainer ran")
    assert trained[1] == "5 epochs of 936 steps x 128 (best: epoch 2), 599,040 examples"
    assert trained[2] == (
        "7 rounds of 3,907 steps x 128 = 500,096 examples, each followed by a validation"
        " (best: round 4), 3,500,672 examples"
    )
    # At the budget, the one round is as long as train_steps made it, not the configured one.
    assert trained[3] == (
        "1 round of 313 steps x 128 = 40,064 examples, each followed by a validation"
        " (best: round 1), 40,064 examples"
    )
    assert trained[4] == "1,000 steps x 40 = 40,000 examples"
    assert not any("7 epochs" in line for line in lines)

    # Cost per million rows: complete runs only (not the budget run, not the capped one).
    assert _row(cost, "component")[1:] == [
        "ours, 200,000 rows", "ours, 2,000,000 rows", "TFX example, 2,000,000 rows",
        "ours, 20,000,000 rows",
    ]  # fmt: skip
    assert _row(cost, "Transform")[1:] == ["62.5", "50.0", "62.5", "40.0"]
    assert _row(cost, "whole run")[1:] == ["650.0", "250.0", "400.0", "200.0"]

    # Targets: measured value, goal, met.
    target = lines[lines.index("| target | measured | goal | met |") :]
    assert _row(target, "ours / TFX example, whole pipeline wall time, 2,000,000 rows")[1:] == [
        "0.62 (500 s / 800 s)", "<= 0.7", "yes"]  # fmt: skip
    assert _row(target, "ours / TFX example, StatisticsGen, 2,000,000 rows")[1:] == [
        "0.90 (36 s / 40 s)", "<= 1.0", "yes"]  # fmt: skip
    assert _row(target, "ours / TFX example, Transform, 2,000,000 rows")[1:] == [
        "0.80 (100 s / 125 s)", "<= 1.0", "yes"]  # fmt: skip
    assert _row(target, "ours / TFX example, Evaluator, 2,000,000 rows")[1:] == [
        "0.90 (100 s / 111 s)", "<= 1.0", "yes"]  # fmt: skip
    assert _row(target, "eval RMSE / oracle RMSE on the same test rows, 2,000,000 rows")[1:] == [
        "1.030 (3.400 / 3.300)",
        "<= 1.05",
        "yes",
    ]
    assert _row(target, "peak RSS of our largest process, 20,000,000 rows")[1:] == [
        "3.50 GiB", "< 4 GiB", "yes"]  # fmt: skip
    assert _row(target, "t(20,000,000) / t(2,000,000), ours")[1:] == [
        "8.00 (4,000 s / 500 s)", "<= 10", "yes"]  # fmt: skip
    trainer = "Trainer input, examples/s vs `model.fit` on the same transformed batches in memory"
    assert _row(target, trainer)[1:] == [
        "not measured: it runs after the pipeline runs", ">= 0.9x", "not measured"]  # fmt: skip

    # Where the capped run stood, and how the budget run's time is made, in the notes.
    stood = next(line for line in lines if line.startswith("- TFX example's CsvExampleGen"))
    assert "stopped by the memory cap after 900 s" in stood
    assert "MLMD execution RUNNING" in stood and "12,345 whole records" in stood
    note = next(line for line in lines if line.startswith("- ours at the TFX example's"))
    assert "training.train_steps=313" in note and "4 components cached, 4 ran" in note
    assert "(236 s) plus this run's 150 s" in note and "baseline" in note

    # The memory curves are linked, one figure per size.
    assert "![Sampled RSS over time, 2,000,000 rows](bench/figures/scale-memory-2000000.svg)" in (
        lines
    )
    assert "![Sampled RSS over time, 20,000,000 rows](bench/figures/scale-memory-20000000.svg)" in (
        lines
    )


def test_targets_not_met_and_not_measured_are_said(tmp_path):
    runs = _saved_runs(tmp_path)
    slow = scale.ScaleRun.load(tmp_path / "ours-2000000.json")
    slow.run = Measurement(**{**slow.run.__dict__, "wall_seconds": 700.0})
    slow.components = {**slow.components, "Evaluator": 150.0}
    slow.eval_rmse = 3.6
    by_kind = [slow if r.name == slow.name else r for r in runs]
    target = scale.targets(by_kind, None, "skipped")
    assert _row(target, "ours / TFX example, whole pipeline wall time, 2,000,000 rows")[1:] == [
        "0.88 (700 s / 800 s)", "<= 0.7", "no"]  # fmt: skip
    assert _row(target, "ours / TFX example, Evaluator, 2,000,000 rows")[-1] == "no"
    assert _row(target, "eval RMSE / oracle RMSE on the same test rows, 2,000,000 rows")[-1] == "no"
    assert _row(target, "t(20,000,000) / t(2,000,000), ours")[1] == "5.71 (4,000 s / 700 s)"

    # Only the 200k run: every target is there, not measured.
    only_small = scale.targets(runs[:1], None, "skipped")
    assert len(only_small) == 2 + 7 + 1
    for line in only_small[2:-1]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == cells[3] == "not measured", line


def test_the_memory_curves_are_well_formed_svg_with_the_series_points(tmp_path):
    runs = _saved_runs(tmp_path)
    figures = scale.memory_figures(runs)
    assert set(figures) == {
        Path("bench/figures/scale-memory-200000.svg"),
        Path("bench/figures/scale-memory-2000000.svg"),
        Path("bench/figures/scale-memory-20000000.svg"),
    }
    root = ET.fromstring(figures[Path("bench/figures/scale-memory-20000000.svg")])
    assert root.tag == f"{SVG_NS}svg"
    lines = root.findall(f".//{SVG_NS}polyline")
    titles = [line.find(f"{SVG_NS}title").text for line in lines]
    assert titles == [
        "ours, 20,000,000 rows, process tree", "ours, 20,000,000 rows, largest process",
        "TFX example's CsvExampleGen alone, 20,000,000 rows, process tree",
        "TFX example's CsvExampleGen alone, 20,000,000 rows, largest process",
    ]  # fmt: skip
    # Each line has one point per sample, in time order, higher RSS drawn higher (smaller y).
    for line in lines:
        points = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
        assert len(points) == 50
        assert [x for x, _ in points] == sorted(x for x, _ in points)
        assert points[-1][1] < points[0][1]
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert "memory cap 16 GiB" in texts and "RSS (GiB)" in texts
    assert "time since the run started (min)" in texts  # 4,000 s is drawn in minutes
    # The budget run (three components re-run) is not drawn beside the full ones.
    at_2m = ET.fromstring(figures[Path("bench/figures/scale-memory-2000000.svg")])
    drawn = {line.find(f"{SVG_NS}title").text for line in at_2m.iter(f"{SVG_NS}polyline")}
    assert not any("budget" in name for name in drawn) and len(drawn) == 4

    written = scale.write_figures(tmp_path / "BENCHMARKS.md", runs)
    assert sorted(p.name for p in written) == [
        "scale-memory-200000.svg",
        "scale-memory-2000000.svg",
        "scale-memory-20000000.svg",
    ]
    ET.parse(tmp_path / "bench" / "figures" / "scale-memory-2000000.svg")


def test_the_chart_puts_each_sample_where_its_values_are():
    samples = [Sample(0.0, 0, 0), Sample(50.0, 2 * GIB, GIB), Sample(100.0, 4 * GIB, 3 * GIB)]
    root = ET.fromstring(memory_svg.memory_chart([memory_svg.Curve("run", samples)], "t"))
    tree, largest = root.findall(f".//{SVG_NS}polyline")
    tree_points = [tuple(map(float, p.split(","))) for p in tree.get("points").split()]
    largest_points = [tuple(map(float, p.split(","))) for p in largest.get("points").split()]
    # Linear axes: the middle sample is halfway in x, and at half the top sample's height.
    (x0, y0), (x1, y1), (x2, y2) = tree_points
    assert x1 - x0 == pytest.approx(x2 - x1) and y0 - y1 == pytest.approx(y1 - y2)
    assert largest_points[2][1] > tree_points[2][1]  # 3 GiB below 4 GiB
    # Round ends (100 s, 5 GiB above the 4 GiB peak), ticked at round values.
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert {"20", "40", "60", "80", "100", "2.5", "5"} <= set(texts)
    assert "time since the run started (s)" in texts
    assert memory_svg.memory_chart([memory_svg.Curve("empty", [])], "t") == ""


def test_runs_saved_before_kinds_and_series_load_and_say_so(tmp_path):
    old = {
        "name": "TFX example, 2,000,000 rows", "rows": 2_000_000,
        "run": {k: v for k, v in _run_json("reference-2000000", 543.0, 5.4, 8.0).items()
                if k != "rss_series"},
        "components": REF_2M, "eval_rmse": None, "floor": None,
    }  # fmt: skip
    path = tmp_path / "reference-2000000.json"
    path.write_text(json.dumps(old))
    run = scale.ScaleRun.load(path)
    assert run.kind == scale.KIND_REFERENCE and run.run.rss_series == ()
    assert run.run.stopped is None and not run.run.max_rss_sampled
    lines = scale.render_section([run], {}, [])
    assert (
        "2,000,000 rows: no RSS series kept for TFX example, 2,000,000 rows (measured before"
        " the series were saved)." in lines
    )
    assert scale.memory_figures([run]) == {}
    # Saved again, the same figures come back.
    run.save(path)
    assert scale.ScaleRun.load(path) == run


def test_the_section_replaces_the_one_under_its_former_title(tmp_path):
    report = tmp_path / "BENCHMARKS.md"
    report.write_text(
        "# Bench\n\n## Scale: synthetic trips, 200k and 2M rows\n\nold figures\n\n## Next\n\nkept\n"
    )
    scale.write_section(report, [scale.SECTION_TITLE, "", "new figures"])
    text = report.read_text()
    assert "old figures" not in text and "200k and 2M rows" not in text
    assert text.count(scale.SECTION_TITLE) == 1 and "new figures" in text
    assert text.endswith("## Next\n\nkept\n")


# --- The training budget, the timeout and the row counts ------------------------------


def test_budget_steps_cover_the_examples_budget_with_the_fewest_steps():
    assert scale.budget_steps(40_000, 40) == 1_000  # the example's own 1,000 x 40
    assert scale.budget_steps(40_000, 128) == 313  # 313 x 128 = 40,064
    assert 312 * 128 < 40_000 <= 313 * 128
    assert scale.budget_steps(128, 128) == 1 and scale.budget_steps(129, 128) == 2
    with pytest.raises(ValueError, match="batch size"):
        scale.budget_steps(40_000, 0)
    # Wall time: own seconds plus the cached components' seconds in the full run.
    assert scale.budget_wall_seconds(150.0, {"Transform": 100.0, "StatisticsGen": 36.5}) == 286.5
    assert scale.budget_wall_seconds(150.0, {"SchemaGen": None}) == 150.0


def test_the_timeout_grows_with_the_rows_and_row_counts_are_checked():
    assert scale.timeout_for(200_000, 3600.0) == 3600.0
    assert scale.timeout_for(2_000_000, 3600.0) == 3600.0
    assert scale.timeout_for(20_000_000, 3600.0) == 36_000.0
    assert scale.parse_rows("20000000,2000000,200000,2000000") == [200_000, 2_000_000, 20_000_000]
    assert scale.parse_rows(None) == list(scale.ROWS)
    with pytest.raises(ValueError, match="'2M' is not a whole number"):
        scale.parse_rows("200000,2M")
    with pytest.raises(ValueError, match="at least 1"):
        scale.parse_rows("0")


def test_which_components_a_run_took_from_the_cache_is_read_from_mlmd(tmp_path):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = str(tmp_path / "metadata.sqlite")
    store = metadata_store.MetadataStore(config)
    types = {}
    for name in ("pipeline_run", "node"):
        types[name] = store.put_context_type(pb.ContextType(name=name))
    execution_type = store.put_execution_type(pb.ExecutionType(name="component"))
    nodes = {}
    for node in ("Transform", "Trainer"):
        nodes[node] = store.put_contexts([pb.Context(type_id=types["node"],
                                                     name=f"taxifare.{node}")])[0]  # fmt: skip
    for run, states in (("full", ("COMPLETE", "COMPLETE")), ("budget", ("CACHED", "COMPLETE"))):
        [run_id] = store.put_contexts([pb.Context(type_id=types["pipeline_run"], name=run)])
        for node, state in zip(("Transform", "Trainer"), states, strict=True):
            execution = pb.Execution(
                type_id=execution_type, last_known_state=pb.Execution.State.Value(state)
            )
            store.put_execution(execution, [], store.get_contexts_by_id([run_id, nodes[node]]))
    budget = scale.run_executions(tmp_path / "metadata.sqlite", "budget")
    assert {n: state for n, (state, _) in budget.items()} == {
        "Transform": "CACHED", "Trainer": "COMPLETE"}  # fmt: skip
    full = scale.run_executions(tmp_path / "metadata.sqlite", "full")
    assert {n: state for n, (state, _) in full.items()} == {
        "Transform": "COMPLETE", "Trainer": "COMPLETE"}  # fmt: skip
    with pytest.raises(RuntimeError, match="no pipeline run 'other'"):
        scale.run_executions(tmp_path / "metadata.sqlite", "other")


# --- The memory-cap watcher ------------------------------------------------------------

GROWING_CHILD = """
import os, sys, time
open(sys.argv[1], "w").write(str(os.getpid()))
held = []
for _ in range(400):  # up to 4 GB, 10 MB at a time, unless stopped first
    held.append(bytearray(10 * 2**20))
    time.sleep(0.05)
print("grew to the end without being stopped")
"""


def test_a_run_past_its_memory_cap_is_stopped_and_where_it_stood_is_kept(tmp_path):
    cap = 200 * 2**20
    pid_file = tmp_path / "child.pid"
    run = measure.run_measured(
        "growing", [sys.executable, "-c", GROWING_CHILD, str(pid_file)], cwd=tmp_path,
        env=dict(os.environ), log_dir=tmp_path / "logs", timeout_seconds=600,
        memory_cap_bytes=cap,
    )  # fmt: skip
    assert run.stopped == measure.STOPPED_BY_MEMORY and run.returncode is None
    assert run.limit_reached is not None and run.limit_reached.limit_bytes == cap
    assert run.limit_reached.total_bytes > cap and run.tree.total_bytes > cap
    # Stopped soon after the cap, far below what the child would have reached.
    assert run.tree.total_bytes < 2 * 2**30
    # The child is gone, it never reached its end, and the log says why it was stopped.
    try:  # SIGKILL is delivered at once; the exit may take a moment to free its memory
        psutil.Process(int(pid_file.read_text())).wait(timeout=60)
    except psutil.NoSuchProcess:
        pass
    assert "grew to the end" not in run.stdout_path.read_text()
    assert "past the 0.20 GiB cap" in run.stderr_path.read_text()
    # The wrapper was killed with it: the largest process is the sampled one.
    assert run.max_rss_sampled and run.max_rss_bytes == run.tree.largest_process_bytes > 0
    # The series kept the climb up to the cap.
    assert len(run.rss_series) >= 2 and max(s.total_bytes for s in run.rss_series) > cap
    assert [s.seconds for s in run.rss_series] == sorted(s.seconds for s in run.rss_series)


def test_a_run_within_its_cap_is_measured_as_before(tmp_path):
    run = measure.run_measured(
        "small", [sys.executable, "-c", "print('ok')"], cwd=tmp_path, env=dict(os.environ),
        log_dir=tmp_path / "logs", memory_cap_bytes=4 * 2**30,
    )  # fmt: skip
    assert run.returncode == 0 and run.stopped is None and run.limit_reached is None
    assert not run.max_rss_sampled and run.max_rss_bytes > 0


def test_decimated_series_are_bounded_and_keep_their_peaks():
    series = [Sample(i * 0.5, (i % 97) * 2**20, (i % 89) * 2**20) for i in range(10_001)]
    series[7_777] = Sample(7_777 * 0.5, 5 * GIB, 3 * GIB)
    kept = decimate(series, 2000)
    assert len(kept) <= 2000
    assert max(s.total_bytes for s in kept) == 5 * GIB
    assert max(s.largest_process_bytes for s in kept) == 3 * GIB
    assert any(s.seconds == 7_777 * 0.5 for s in kept)
    assert decimate(series[:10], 2000) == series[:10]


# --- Where TFX's CsvExampleGen stood: its output files ------------------------------------


def _tfrecords(count: int) -> bytes:
    """`count` TFRecord frames (the counter reads the framing, not the CRCs)."""
    frames = b""
    for i in range(count):
        data = f"record {i}".encode()
        frames += struct.pack("<Q", len(data)) + b"\0" * 4 + data + b"\0" * 4
    return frames


def test_written_records_are_counted_in_whole_and_cut_short_files(tmp_path):
    examples = tmp_path / "examples" / "1"
    final = examples / "Split-train" / "data_tfrecord-00000-of-00001.gz"
    final.parent.mkdir(parents=True)
    final.write_bytes(gzip.compress(_tfrecords(1000)))
    temp = examples / "Split-eval" / "beam-temp-data_tfrecord-1" / "part.gz"
    temp.parent.mkdir(parents=True)
    whole = gzip.compress(_tfrecords(5000))
    temp.write_bytes(whole[: len(whole) // 2])  # a writer stopped half-way
    assert scale.count_tfrecords(final) == 1000
    cut = scale.count_tfrecords(temp)
    assert 0 < cut < 5000
    outputs = scale.example_outputs(tmp_path / "examples")
    assert outputs == {
        "files": 2, "bytes": final.stat().st_size + temp.stat().st_size,
        "records": 1000 + cut, "final_files": 1, "final_records": 1000,
    }  # fmt: skip
    assert scale.example_outputs(tmp_path / "nothing")["files"] == 0


def test_a_run_past_its_time_cap_is_stopped_and_said_so(tmp_path):
    run = measure.run_measured(
        "sleeping", [sys.executable, "-c", "import time; time.sleep(600)"], cwd=tmp_path,
        env=dict(os.environ), log_dir=tmp_path / "logs", timeout_seconds=1.0,
        memory_cap_bytes=4 * 2**30,
    )  # fmt: skip
    assert run.stopped == measure.STOPPED_BY_TIMEOUT and run.returncode is None
    assert run.limit_reached is None and run.max_rss_sampled
    assert "killed after the 1 s timeout" in run.stderr_path.read_text()


def test_where_a_capped_run_stood_is_said_for_each_way_it_ended(tmp_path):
    runs = _saved_runs(tmp_path)
    capped = next(r for r in runs if r.kind == scale.KIND_EXAMPLE_GEN)
    stood = dict(capped.stood)
    capped.stood = {**stood, "stopped": "timeout", "output_files": 0,
                    "mlmd_state": "no MLMD store yet"}  # fmt: skip
    capped.run = Measurement(**{**capped.run.__dict__, "stopped": "timeout"})
    lines = scale.render_section([capped], {}, [])
    assert _row(lines, capped.name)[1] == "stopped at 900 s (time cap)"
    note = next(line for line in lines if line.startswith(f"- {capped.name}"))
    assert "stopped by the time cap after 900 s" in note
    assert "MLMD: no MLMD store yet; no output written yet" in note
    capped.stood = {**stood, "stopped": None, "returncode": 0, "mlmd_state": "COMPLETE"}
    capped.run = Measurement(**{**capped.run.__dict__, "stopped": None, "returncode": 0})
    note = scale._stood_note(capped)
    assert "finished within the caps in 900 s" in note and "execution COMPLETE" in note


def test_the_caps_default_to_16_gib_and_an_hour_and_are_checked():
    from argparse import Namespace

    assert scale.caps(Namespace()) == (16 * GIB, 3600.0)
    assert scale.caps(Namespace(scale_cap_gib=0.25, scale_cap_seconds=90)) == (GIB // 4, 90.0)
    with pytest.raises(ValueError, match="--scale-cap-gib 0: the memory cap must be above 0"):
        scale.caps(Namespace(scale_cap_gib=0))
    with pytest.raises(ValueError, match="--scale-cap-seconds -1"):
        scale.caps(Namespace(scale_cap_seconds=-1))


def test_a_budget_run_that_trained_whole_epochs_past_its_steps_says_so(tmp_path):
    budget = next(r for r in _saved_runs(tmp_path) if r.kind == scale.KIND_BUDGET)
    assert "the Trainer ran" not in scale._budget_note(budget)  # 313 x 128 exactly
    budget.examples_trained = 47_104  # 4 epochs of 92 steps: train_steps rounded up
    note = scale._budget_note(budget)
    assert "(313 x 128 = 40,064 examples, the Trainer ran 47,104 in whole epochs or rounds;" in (
        note
    )


def test_a_run_saved_without_the_trainer_record_gets_it_from_its_root_once(tmp_path):
    path = tmp_path / "ours-2000000.json"
    run = _run(tmp_path)
    run.save(path)
    root = tmp_path / "ours-2000000" / "root"
    root.mkdir(parents=True)
    (root / "summary.json").write_text(json.dumps({"training": ROUNDS}))
    scale._backfill_training(run, path, tmp_path)
    assert run.training == ROUNDS and scale.ScaleRun.load(path).training == ROUNDS
    # Once the budget run has rewritten the root's summary, it is not the full run's record.
    other = _run(tmp_path)
    (tmp_path / "ours-2000000-budget.json").write_text("{}")
    scale._backfill_training(other, tmp_path / "other.json", tmp_path)
    assert other.training is None and not (tmp_path / "other.json").exists()


# --- The run order at 20M rows, and a second --scale on the same folder -------------------


def test_twenty_million_rows_reuse_the_finished_runs_and_cap_tfx_example_gen(tmp_path, monkeypatch):
    """What `--scale --scale-rows 200000,2000000,20000000` runs, with which timeout and caps,
    and that a second one on the same folder runs nothing again. The runs themselves are
    stood in for (each is measured for real by the tests above and by the benchmark)."""
    from argparse import Namespace

    (tmp_path / "saved").mkdir()
    saved = {r.run.name: r for r in _saved_runs(tmp_path / "saved")}
    calls: list[tuple] = []

    def synthesize(rows: int, out: Path, label_range: tuple[float, float]) -> tuple[dict, float]:
        out.mkdir(parents=True)
        manifest = {"label_range": list(label_range), "spans": [{"rmse_floor_label_range": 3.3}]}
        (out / "synth.json").write_text(json.dumps(manifest))
        return manifest, 1.0

    def run_ours(rows, data, workspace, config, timeout):
        calls.append(("ours", rows, timeout))
        (workspace / f"ours-{rows}" / "root").mkdir(parents=True)
        (workspace / f"ours-{rows}" / "root" / "metadata.sqlite").write_text("")
        return saved[f"ours-{rows}"]

    def run_budget(full, data, workspace, config, timeout, examples):
        calls.append(("budget", full.rows, timeout, examples))
        return saved["ours-2000000-budget"]

    def run_reference(rows, data, workspace, timeout):
        calls.append(("reference", rows, timeout))
        return saved[f"reference-{rows}"]

    def run_example_gen(rows, data, workspace, cap_bytes, cap_seconds):
        calls.append(("example-gen", rows, cap_bytes, cap_seconds))
        return saved[f"reference-example-gen-{rows}"]

    monkeypatch.setattr(scale, "synthesize", synthesize)
    monkeypatch.setattr(scale, "run_ours", run_ours)
    monkeypatch.setattr(scale, "run_budget", run_budget)
    monkeypatch.setattr(scale, "run_reference", run_reference)
    monkeypatch.setattr(scale, "run_reference_example_gen", run_example_gen)
    monkeypatch.setattr(scale.machine, "wait_until_idle", lambda: 0.0)
    monkeypatch.setattr(scale.trainer_input, "run_on_trips", lambda *a: None)
    monkeypatch.setattr(scale.trainer_input, "summary_lines", lambda run: [])
    report = tmp_path / "report" / "BENCHMARKS.md"
    report.parent.mkdir()
    args = Namespace(
        scale_rows="200000,2000000,20000000", scale_dir=tmp_path / "dir", output=report,
        config="configs/local.yaml", timeout=3600.0, skip_reference=False, keep=False,
        scale_cap_gib=12.0, scale_cap_seconds=1800.0,
    )  # fmt: skip
    assert scale.main(args) == 0
    assert calls == [
        ("ours", 200_000, 3600.0),
        ("ours", 2_000_000, 3600.0),
        ("budget", 2_000_000, 3600.0, 40_000),
        ("reference", 2_000_000, 3600.0),
        ("ours", 20_000_000, 36_000.0),
        ("example-gen", 20_000_000, 12 * GIB, 1800.0),
    ]
    text = report.read_text()
    assert "| t(20,000,000) / t(2,000,000), ours | 8.00 (4,000 s / 500 s) | <= 10 | yes |" in text
    assert (report.parent / "bench" / "figures" / "scale-memory-20000000.svg").exists()

    calls.clear()
    assert scale.main(args) == 0
    assert calls == []  # every run reused from the folder
    assert report.read_text().count("measured by an earlier `--scale` on the same folder") == 6


def test_a_capped_run_that_failed_is_recorded_with_its_error(tmp_path):
    home = tmp_path / "home"
    run = measure.run_measured(
        "failing", [sys.executable, "-c", "raise SystemExit('MemoryError: out of memory')"],
        cwd=tmp_path, env=dict(os.environ), log_dir=tmp_path / "logs", memory_cap_bytes=GIB,
    )  # fmt: skip
    stood = scale.example_gen_stood(home, run, GIB, 3600.0)
    assert stood["returncode"] == 1 and stood["stopped"] is None
    assert stood["error"] == "MemoryError: out of memory"
    assert stood["mlmd_state"] == "no MLMD store yet" and stood["output_files"] == 0
    capped = next(r for r in _saved_runs(tmp_path) if r.kind == scale.KIND_EXAMPLE_GEN)
    capped.stood = stood
    assert "ended with exit code 1 after" in scale._stood_note(capped)
    assert "(`MemoryError: out of memory`)" in scale._stood_note(capped)


def test_a_long_series_is_drawn_in_at_most_drawn_points_with_its_peak():
    samples = [Sample(i * 0.5, (i % 50) * 2**20, (i % 40) * 2**20) for i in range(2000)]
    samples[1234] = Sample(617.0, 6 * GIB, 5 * GIB)
    root = ET.fromstring(memory_svg.memory_chart([memory_svg.Curve("run", samples)], "t"))
    tree, largest = root.findall(f".//{SVG_NS}polyline")
    points = [tuple(map(float, p.split(","))) for p in tree.get("points").split()]
    assert len(points) <= memory_svg.DRAWN_POINTS
    # The 6 GiB peak is the highest point drawn (smallest y), at its time.
    top = min(points, key=lambda p: p[1])
    first, last = points[0][0], points[-1][0]
    assert top[0] == pytest.approx(first + (last - first) * 617.0 / samples[-1].seconds, abs=1.0)


def test_the_command_lines_caps_reach_the_capped_run():
    from bench.__main__ import _parse_args

    args = _parse_args(["--scale", "--scale-cap-gib", "2", "--scale-cap-seconds", "90"])
    assert scale.caps(args) == (2 * scale.GIB, 90.0)
    assert scale.caps(_parse_args(["--scale"])) == (16 * scale.GIB, 3600.0)
