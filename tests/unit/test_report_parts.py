"""The pieces of `taxifare runs` and the run report that need no pipeline run."""

from __future__ import annotations

import re

import pytest

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


def test_epochs_are_ticked_as_the_summary_numbers_them():
    series = {"train": [(e, 5.0 - e / 4) for e in range(1, 8)], "validation": [(1, 6.0), (7, 4.1)]}
    chart = svg.line_chart(
        series, "epoch", "RMSE (US dollars)", "rmse", integer_x=True, marker=(5, "best: epoch 5")
    )
    ticks = re.findall(r'text-anchor="middle">([^<]*)</text>', chart)
    assert [t for t in ticks if t != "epoch"] == [str(e) for e in range(1, 8)]
    assert "train: epoch 1, 4.75" in chart and ">best: epoch 5</text>" in chart
    many = svg.line_chart({"train": [(e, 1.0) for e in range(1, 31)]}, "epoch", "y", "t", True)
    labels = [t for t in re.findall(r'text-anchor="middle">([^<]*)</text>', many) if t != "epoch"]
    assert labels == ["1", "5", "10", "15", "20", "25", "30"]


def test_tick_labels_are_the_values_they_mark():
    # A top of 50 puts grid lines at 12.5 and 37.5: rounding them to 12 and 38 would mislabel.
    chart = svg.bar_chart([("a", [50.0], "a")], "x", "y", "t")
    assert [float(v) for v in re.findall(r'text-anchor="end">([^<]*)</text>', chart)] == [
        0,
        12.5,
        25,
        37.5,
        50,
    ]


def test_long_identifiers_are_labelled_in_full():
    tracts = [(str(17031081400 + i), [10.0], "") for i in range(8)]
    chart = svg.bar_chart(tracts, "census tract", "share (%)", "t")
    for label, _, _ in tracts:
        assert f">{label}</text>" in chart
    assert "rotate(" in chart  # eleven digits do not fit side by side under eight bars


def test_a_histogram_draws_bars_between_its_edges_on_a_log_axis():
    edges = [0.0, 0.5, 2.0, 10.0, 100.0]
    chart = svg.histogram(
        edges, {"train": [40.0, 30.0, 20.0, 10.0]}, "miles", "share (%)", "t", log_offset=0.1
    )
    rects = re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)" height="([\d.]+)"', chart)
    heights = [float(h) for _, _, h in rects]
    assert heights == sorted(heights, reverse=True) and heights[0] == 4 * heights[3]
    ticks = re.findall(r'text-anchor="middle">([^<]*)</text>', chart)
    assert "miles (log scale)" in ticks and {"0", "1", "10", "100"} <= set(ticks)


def test_training_curves_number_epochs_from_one(tmp_path):
    import tensorflow as tf

    from pipeline.report import reads

    for side, offset in (("train", 0.0), ("validation", 1.0)):
        writer = tf.summary.create_file_writer(str(tmp_path / side))
        with writer.as_default():
            for epoch in range(3):  # Keras' TensorBoard callback counts epochs from 0
                tf.summary.scalar("epoch_rmse", 5.0 - epoch + offset, step=epoch)
                tf.summary.scalar("batch_rmse", 9.0, step=epoch * 100)
        writer.close()
    curves = reads.read_training_curves(str(tmp_path))
    assert list(curves) == ["rmse"]
    assert curves["rmse"]["train"] == [(1, 5.0), (2, 4.0), (3, 3.0)]
    assert [e for e, _ in curves["rmse"]["validation"]] == [1, 2, 3]


def _stats_file(folder, features: dict[str, dict]) -> None:
    """A StatisticsGen split's FeatureStats.pb with numeric features built from `features`."""
    import tensorflow as tf
    from tensorflow_metadata.proto.v0 import statistics_pb2

    stats = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = stats.datasets.add(num_examples=100)
    for name, spec in features.items():
        feature = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.FLOAT)
        feature.path.step.append(name)
        num = feature.num_stats
        num.mean = spec.get("mean", 0.0)
        num.common_stats.num_non_missing = 100
        num.common_stats.tot_num_values = spec["values"]
        num.common_stats.max_num_values = 1 if spec["values"] else 0
        histogram = num.histograms.add(type=statistics_pb2.Histogram.STANDARD)
        for low, high, count in spec.get("buckets", []):
            histogram.buckets.add(low_value=low, high_value=high, sample_count=count)
    tf.io.gfile.makedirs(str(folder))
    with tf.io.gfile.GFile(str(folder / "FeatureStats.pb"), "wb") as fh:
        fh.write(stats.SerializeToString())


def test_statistics_without_quantiles_or_values_are_shown_for_what_they_are(tmp_path):
    from pipeline.report import page, reads

    equal_width = [(i * 10.0, (i + 1) * 10.0, c) for i, c in enumerate([90, 6, 4] + [0] * 7)]
    _stats_file(
        tmp_path / "Split-train",
        {"tips": {"values": 100, "mean": 7.0, "buckets": equal_width}},
    )
    # TFDV gives a feature present without values a mean of 0.
    _stats_file(tmp_path / "Split-eval", {"tips": {"values": 0, "mean": 0.0}})
    (x,) = reads.read_feature_splits(str(tmp_path), ["train", "eval"])
    assert x.with_values == {"train": 100, "eval": 0} and x.mean == {"train": 7.0, "eval": None}
    # The bars span the values (0 to 30), not the histogram's empty buckets up to 100.
    assert x.quantile_buckets == 0 and x.edges[0] == 0 and 30 <= x.edges[-1] < 40
    shares = [s["train"] for _, s in x.bins]
    below_10 = sum(s for s, hi in zip(shares, x.edges[1:], strict=True) if hi <= 10)
    assert below_10 == pytest.approx(0.9) and sum(shares) == pytest.approx(1.0)
    assert "eval" not in {s for _, shares in x.bins for s in shares}
    section = "\n".join(page.feature_figures([x], ["train", "eval"]))
    assert "<td>tips</td>" in section and "100% (no values)" in section
    assert ">no values</td>" in section and ">0</td>" not in section
    assert "equal-width histogram" in section and "No values in eval." in section
