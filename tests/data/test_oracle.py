"""The floor is a floor: the generator's floor against the oracle E[fare | booking-time
fields] on the same trips, a better-informed model against the oracle, the label range."""

from __future__ import annotations

import glob
import json
import math

import numpy as np
import pytest

from pipeline import cli
from pipeline.data import oracle
from pipeline.data.synth import SynthSpec
from taxifare_modules import features as f
from tests.data.conftest import read_rows, synth


def _span_rows(folder, manifest) -> list[dict[str, str]]:
    span = manifest["spans"][-1]
    return [r for p in sorted(glob.glob(str(folder / span["folder"] / "*.csv"))) for r in
            read_rows(p)]  # fmt: skip


def _column(rows, key: str, missing: float = math.nan) -> np.ndarray:
    return np.array([float(r[key]) if r[key] != "" else missing for r in rows])


def _inputs(world, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fares, miles, mph) from the CSV fields alone, as a client would book."""
    coordinates = {k: _column(rows, k) for k in f.COORDINATE_KEYS}
    hour = _column(rows, f.HOUR_KEY).astype(np.int64)
    miles, mph = oracle.booking_inputs(world, coordinates, hour)
    return _column(rows, f.LABEL_KEY), miles, mph


@pytest.mark.parametrize("label_range", [(0.0, 250.0), (5.0, 40.0)])
def test_floor_and_oracle_agree_within_sampling_error(city, tmp_path, label_range):
    low, high = label_range
    manifest = synth(
        city, tmp_path / "s", rows=200_000, months=1, seed=3, min_fare=low, max_fare=high
    )
    span = manifest["spans"][0]
    for suffix in ("", "_label_range"):
        floor, oracle_rmse = span[f"rmse_floor{suffix}"], span[f"rmse_oracle{suffix}"]
        floor_se, oracle_se = span[f"rmse_floor{suffix}_se"], span[f"rmse_oracle{suffix}_se"]
        assert 0 < floor_se < 0.05 * floor and 0 < oracle_se < 0.1 * oracle_rmse, span
        z = (oracle_rmse - floor) / math.hypot(floor_se, oracle_se)
        assert abs(z) < 3, (suffix, span)
        assert span[f"oracle_vs_floor_z{suffix}"] == pytest.approx(z, abs=0.01)
    # The oracle's realized error on a span is far noisier than the floor: the long tail of
    # fares (meters left running) inside the label range.
    assert span["rmse_oracle_label_range_se"] > 2 * span["rmse_floor_label_range_se"]


def test_no_better_informed_model_beats_the_oracle(city, tmp_path):
    from sklearn.ensemble import HistGradientBoostingRegressor

    # A scenario that moves the traffic by hour: the oracle must draw with the scenario's.
    manifest = synth(
        city, tmp_path / "s", rows=400_000, months=1, seed=7, scenario="rush-hour-moved"
    )
    rows = _span_rows(tmp_path / "s", manifest)
    world = oracle.world_of(manifest, city)
    fares, miles, mph = _inputs(world, rows)

    def codes(key: str) -> np.ndarray:
        names: dict[str, int] = {}
        return np.array([names.setdefault(r[key], len(names)) for r in rows], dtype=float)

    timestamp = _column(rows, f.TIMESTAMP_KEY)
    # Every booking-time field the CSV has, the generator's hidden ones included (the
    # minute of the hour, the day of the month, the company), and the straight-line miles.
    x = np.column_stack(
        [_column(rows, k) for k in f.COORDINATE_KEYS]
        + [miles]
        + [_column(rows, k, -1.0) for k in (*f.AREA_KEYS, f.HOUR_KEY, f.DAY_KEY)]
        + [timestamp % 3600 // 60, timestamp // 86400 % 31]
        + [codes(f.COMPANY_KEY), codes(f.PAYMENT_TYPE_KEY)]
    )
    keep = (fares > 0) & (fares <= 250)
    x, fares, miles, mph = x[keep], fares[keep], miles[keep], mph[keep]
    train, test = slice(0, 250_000), slice(250_000, None)
    model = HistGradientBoostingRegressor(
        max_iter=300, categorical_features=[x.shape[1] - 2, x.shape[1] - 1], random_state=0
    ).fit(x[train], fares[train])
    predicted = model.predict(x[test])

    score, moments = oracle.score_rows(
        world, fares[test], miles[test], mph[test], (0.0, 250.0), draws=64, seed=1
    )
    assert score.rows_scored == len(predicted) > 140_000
    model_error = (fares[test] - predicted) ** 2
    oracle_error = (fares[test] - moments.mean) ** 2 - moments.variance / moments.count
    assert math.sqrt(oracle_error.mean()) == pytest.approx(score.rmse_oracle, rel=1e-9)
    # The model learned the fare (a constant scores about $9)...
    assert math.sqrt(model_error.mean()) < 1.1 * score.rmse_oracle
    # ...and does not beat the oracle on the same rows, paired row by row (the shared long
    # tail cancels), nor beyond three of the oracle's standard errors.
    difference = model_error - oracle_error
    assert difference.mean() > -3 * difference.std() / math.sqrt(len(difference))
    model_rmse = math.sqrt(model_error.mean())
    assert model_rmse > score.rmse_oracle - 3 * score.rmse_oracle_se
    # Against the floor, which is an expectation over trips, a split can be lucky: the
    # comparison that made a model look better than the best possible one.
    assert abs(score.rmse_oracle - score.rmse_floor) < 3 * math.hypot(
        score.rmse_oracle_se, score.rmse_floor_se
    )


def _write_examples(rows, path: str) -> None:
    """The rows as CsvExampleGen writes them: gzipped TFRecords of tf.Examples, an empty cell
    a feature with no values."""
    import tensorflow as tf

    floats = {*f.COORDINATE_KEYS, f.LABEL_KEY}
    ints = {*f.INT_FEATURE_KEYS}
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for row in rows:
            feature = {}
            for key in floats | ints:
                text = row.get(key, "")
                if key in floats:
                    values = [float(text)] if text else []
                    feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
                else:
                    values = [int(text)] if text else []
                    feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def test_oracle_of_a_split_of_tf_examples_read_through_gfile(city, tmp_path, capsys):
    import tensorflow as tf

    manifest = synth(city, tmp_path / "s", rows=6000, months=1, seed=11, min_fare=5.0)
    rows = _span_rows(tmp_path / "s", manifest)
    assert any(r[f.DROPOFF_LATITUDE_KEY] == "" for r in rows)  # missing points, drawn as such
    folder = "ram://oracle-split/Split-test"
    tf.io.gfile.makedirs(folder)
    _write_examples(rows[:3000], f"{folder}/data_tfrecord-00000-of-00002.gz")
    _write_examples(rows[3000:], f"{folder}/data_tfrecord-00001-of-00002.gz")
    with tf.io.gfile.GFile("ram://oracle-split/synth.json", "w") as fh:
        fh.write(json.dumps(manifest))

    got = oracle.score_examples([f"{folder}/*"], manifest, draws=32, seed=5, city=city)
    world = oracle.world_of(manifest, city)
    expected, _ = oracle.score_rows(world, *_inputs(world, rows), (5.0, 250.0), draws=32, seed=5)
    in_range = sum(5.0 < float(r[f.LABEL_KEY]) <= 250.0 for r in rows)
    assert got.rows_read == 6000 and got.rows_scored == expected.rows_scored == in_range < 6000
    assert got.label_range == (5.0, 250.0)
    # The same rows and draws; the tf.Example holds the coordinates as float32.
    assert got.rmse_oracle == pytest.approx(expected.rmse_oracle, rel=2e-3)
    assert got.rmse_floor == pytest.approx(expected.rmse_floor, rel=2e-3)

    # The command prints the same as one JSON line.
    code = cli.main(["data", "oracle", "--examples", f"{folder}/*", "--synth",
                     "ram://oracle-split", "--draws", "32", "--seed", "5"])  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed == got.as_dict()

    # Bad input: one line naming what and where, exit 2.
    cases = [
        (["--examples", "ram://oracle-split/none-*", "--synth", "ram://oracle-split"],
         "ram://oracle-split/none-*: no files match"),
        (["--examples", f"{folder}/*", "--synth", "ram://nowhere"],
         "ram://nowhere: no synth.json"),
        (["--examples", f"{folder}/*", "--synth", "ram://oracle-split", "--max-fare", "5"],
         "label range (5, 5] is empty"),
    ]  # fmt: skip
    no_hour = [dict(rows[0]), {**rows[1], f.HOUR_KEY: ""}]
    _write_examples(no_hour, "ram://oracle-bad/data.gz")
    cases.append(
        (["--examples", "ram://oracle-bad/*", "--synth", "ram://oracle-split"],
         f"ram://oracle-bad/data.gz: record 1 has no {f.HOUR_KEY}")
    )  # fmt: skip
    _write_examples([{**rows[0], f.HOUR_KEY: "30"}], "ram://oracle-late/data.gz")
    cases.append(
        (["--examples", "ram://oracle-late/*", "--synth", "ram://oracle-split"],
         f"ram://oracle-late/data.gz: record 0: {f.HOUR_KEY} 30, expected 0-23")
    )  # fmt: skip
    for args, message in cases:
        assert cli.main(["data", "oracle", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_the_floor_is_on_the_label_range_the_pipeline_trains_on(city, tmp_path):
    from bench import scale
    from pipeline.config import DataConfig
    from taxifare_modules import task

    data = DataConfig()
    spec = SynthSpec(rows=1, out="")
    assert (spec.min_fare, spec.max_fare) == (data.min_fare, data.max_fare)
    assert (task.DEFAULT_MIN_FARE, task.DEFAULT_MAX_FARE) == (data.min_fare, data.max_fare)
    # The benchmark synthesizes with the label range of the config it runs, and scores the
    # oracle with it.
    config = tmp_path / "narrow.yaml"
    config.write_text("data:\n  min_fare: 4.0\n  max_fare: 60.0\n")
    assert scale.config_label_range(str(config)) == (4.0, 60.0)
    command = scale.synth_command(1000, tmp_path / "out", (4.0, 60.0))
    assert command[command.index("--min-fare") + 1] == "4.0"
    assert command[command.index("--max-fare") + 1] == "60.0"

    # The floor of the label range is over exactly the written fares in it.
    manifest = synth(city, tmp_path / "s", rows=20_000, months=1, min_fare=4.0, max_fare=60.0)
    fares = _column(_span_rows(tmp_path / "s", manifest), f.LABEL_KEY)
    span = manifest["spans"][0]
    assert manifest["label_range"] == [4.0, 60.0]
    assert span["rows_in_label_range"] == int(((fares > 4.0) & (fares <= 60.0)).sum()) < 20_000
    assert span["rmse_floor_label_range"] < 0.8 * span["rmse_floor"]


def test_the_scale_bench_scores_the_oracle_on_the_rows_the_evaluator_scored(city, tmp_path):
    import tensorflow as tf

    from bench import scale
    from bench.measure import Measurement
    from bench.tree_sampler import TreePeak

    data = tmp_path / "synth-3000"
    manifest = synth(city, data, rows=3000, months=1, seed=12)
    rows = _span_rows(data, manifest)
    examples = "ram://bench-run/FareFilter/filtered_examples/7"
    tf.io.gfile.makedirs(f"{examples}/Split-test")
    test_rows = [r for r in rows[:1000] if 2.0 < float(r[f.LABEL_KEY]) <= 80.0]
    _write_examples(test_rows, f"{examples}/Split-test/data_tfrecord-00000-of-00001.gz")
    _write_examples(rows[1000:], "ram://bench-run/FareFilter/filtered_examples/7/Split-eval/x.gz")
    config = tmp_path / "config.yaml"
    config.write_text("data:\n  min_fare: 2.0\n  max_fare: 80.0\n")
    measurement = Measurement(
        name="ours-3000", command=("python",), returncode=0, wall_seconds=10.0,
        max_rss_bytes=2**30, cpu_seconds=10.0, other_cpu_seconds=0.0,
        tree=TreePeak(total_bytes=2**30, largest_process_bytes=2**30, max_processes=1, samples=1),
        stdout_path=tmp_path / "out.log", stderr_path=tmp_path / "err.log",
    )  # fmt: skip
    run = scale.ScaleRun("ours, 2,000,000 rows", 2_000_000, measurement, eval_rmse=4.0, floor=3.3)
    summary = {"examples_uri": examples, "eval_split": "test"}
    scale.score_oracle(run, summary, data, str(config))

    expected = oracle.score_examples([f"{examples}/Split-test/*"], manifest, (2.0, 80.0), city=city)
    assert run.oracle_rows == expected.rows_scored == len(test_rows)
    assert (run.oracle_rmse, run.oracle_se) == (expected.rmse_oracle, expected.rmse_oracle_se)
    # Saved and reloaded, as a later --scale on the same folder reports it.
    run.save(tmp_path / "ours.json")
    again = scale.ScaleRun.load(tmp_path / "ours.json")
    assert again == run
    lines = scale.render_section([again], {}, [])
    ratio = f"{4.0 / run.oracle_rmse:.3f}"
    assert any(
        f"| {run.oracle_rmse:.3f} +- {run.oracle_se:.3f} | {4.0 / run.oracle_rmse:.2f} | 3.300 |"
        in line
        for line in lines
    ), lines
    assert any(line.startswith("| eval RMSE / oracle RMSE on the same test rows") and ratio in line
               for line in lines)  # fmt: skip
    # A run saved before the oracle was scored says so instead of dividing by the floor.
    lines = scale.render_section([scale.ScaleRun(run.name, run.rows, measurement, eval_rmse=4.0,
                                                 floor=3.3)], {}, [])  # fmt: skip
    assert any("to be re-measured" in line for line in lines)
