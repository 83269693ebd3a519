"""`python -m bench --scale` keeps each finished run in its `--scale-dir`, so a long
benchmark that stops half-way goes on from the runs it finished."""

from __future__ import annotations

import json
from pathlib import Path

from bench import scale
from bench.measure import Measurement
from bench.tree_sampler import TreePeak


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
    assert seconds == {} and notes == []
    lines = scale.render_section([_run(tmp_path)], seconds, notes)
    assert any("not timed here" in line for line in lines)
