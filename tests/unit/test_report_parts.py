"""The pieces of `taxifare runs` and the run report that need no pipeline run."""

from __future__ import annotations

import re

from pipeline.report import svg
from pipeline.runs import COMPLETED, STOPPED_AT_GATE, RunRecord, format_table


def _record(run_id: str, status: str, **fields) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        started=1_796_200_000.0,
        status=status,
        failed_component=None,
        components={},
        seconds={},
        **fields,
    )


def test_the_table_has_one_aligned_line_per_run_with_its_figures():
    records = [
        _record("b", STOPPED_AT_GATE, rows_read=3000, hyperparameters={"train_steps": 300}),
        _record(
            "a",
            COMPLETED,
            rows_read=15_002,
            rmse=4.1234,
            mae=1.88,
            blessed=True,
            pushed_version="1796209720",
            metrics_split="test",
            hyperparameters={"train_steps": 300},
            training={"epochs_run": 9, "steps_per_epoch": 69},
        ),
    ]
    lines = format_table(records).splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("b ") and STOPPED_AT_GATE in lines[1]
    for text in ("15,002", "$4.12", "$1.88", "yes", "1796209720", "test", "9x69"):
        assert text in lines[2], text
    # The stopped run trained nothing: no step count, although one was configured.
    assert "300" not in lines[1]
    # Columns line up: each header starts where its values start.
    start = lines[0].index("status")
    assert lines[1][start:].startswith(STOPPED_AT_GATE) and lines[2][start:].startswith(COMPLETED)


def test_charts_have_labelled_axes_and_one_mark_per_value():
    bars = [(str(h), [float(h), h / 2], f"hour {h}") for h in range(24)]
    chart = svg.bar_chart(bars, "hour of day (0-23)", "RMSE (US dollars)", "RMSE by hour")
    assert chart.count("<rect") == 48
    assert ">hour of day (0-23)</text>" in chart and ">RMSE (US dollars)</text>" in chart
    line = svg.line_chart(
        {"train": [(0, 5.0), (100, 3.0)], "validation": [(0, 6.0), (100, 4.0)]},
        "training step",
        "RMSE (US dollars)",
        "rmse",
    )
    assert line.count("<polyline") == 2 and ">training step</text>" in line
    points = [(float(x), float(x) * 0.9) for x in range(1, 50)]
    scatter = svg.scatter(points, "actual fare (US dollars)", "predicted fare (US dollars)", "p")
    assert scatter.count("<circle") == len(points)
    # Every mark lies inside the plot area.
    for cx, cy in re.findall(r'cx="([\d.]+)" cy="([\d.]+)"', scatter):
        assert 0 < float(cx) < 720 and 0 < float(cy) < 280
