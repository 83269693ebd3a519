"""Everyday mistakes of an operator: one line naming what and where, the documented exit code.

Each case stops before anything runs (config, input files) or is the rule a component
applies (too few trips), checked without a pipeline run.
"""

from __future__ import annotations

import csv
import gzip
import io
import sqlite3
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.config import ConfigError, DataConfig, load_config
from pipeline.mlmd_store import (
    StoreError,
    backup_path,
    backup_store,
    check_store,
    count_runs,
)

SMOKE = str(Path(__file__).parents[2] / "configs" / "smoke.yaml")
LOCAL = str(Path(__file__).parents[2] / "configs" / "local.yaml")


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# --- --set values and ranges -------------------------------------------------------------


def test_a_set_value_that_is_not_yaml_is_text_where_the_key_takes_text():
    cfg = load_config(SMOKE, ["data.pattern=*.csv"])
    assert cfg.data.pattern == "*.csv"


def test_a_set_value_that_is_not_yaml_names_the_key_and_value_elsewhere(tmp_path, capsys):
    code = cli.main(
        ["run", "--config", SMOKE, "--set", f"root={tmp_path}", "--set",
         "training.model.hidden_units=[64,"]
    )  # fmt: skip
    err = _errors(capsys)
    assert code == cli.EXIT_USAGE
    assert "Traceback" not in "\n".join(err)
    [line] = [x for x in err if "hidden_units" in x]
    assert "training.model.hidden_units: --set value '[64,' is not valid YAML" in line
    assert not (tmp_path / "metadata.sqlite").exists()


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_out_of_range_is_refused_at_load(seed):
    with pytest.raises(ConfigError, match=r"training\.seed: Input should be"):
        load_config(SMOKE, [f"training.seed={seed}"])


def test_the_seed_range_ends_where_tensorflow_s_does():
    assert load_config(SMOKE, ["training.seed=0"]).training.seed == 0
    assert load_config(SMOKE, [f"training.seed={2**32 - 1}"]).training.seed == 2**32 - 1


# --- the minimum of data ---------------------------------------------------------------------


def test_the_default_minimums_are_for_a_model_worth_serving():
    assert DataConfig().min_train_trips >= 2000 and DataConfig().min_test_trips >= 300
    local = load_config(LOCAL).data
    assert (local.min_train_trips, local.min_test_trips) == (2000, 300)
    with pytest.raises(ConfigError, match="min_test_trips"):
        load_config(SMOKE, ["data.min_test_trips=-1"])


def test_every_trip_excluded_is_named_as_such():
    from pipeline.components.fare_filter import TooFewTripsError, check_enough_trips

    with pytest.raises(TooFewTripsError) as e:
        check_enough_trips({"train": 0, "eval": 0, "test": 0}, 15002, 0.0, 250.0, 0, 0)
    assert str(e.value).startswith("all 15,002 trips were excluded by data.min_fare/max_fare")


def test_too_few_trips_say_how_many_were_found_and_needed():
    from pipeline.components.fare_filter import TooFewTripsError, check_enough_trips

    kept = {"train": 60, "eval": 20, "test": 18}
    with pytest.raises(TooFewTripsError) as e:
        check_enough_trips(kept, 100, 0.0, 250.0, 2000, 300)
    message = str(e.value)
    assert "train has 60 (data.min_train_trips: 2,000)" in message
    assert "test has 18 (data.min_test_trips: 300)" in message and "of 100 read" in message
    # Without a test split, the Evaluator tests on eval: that is the split counted.
    with pytest.raises(TooFewTripsError, match=r"eval has 20 \(data.min_test_trips: 300\)"):
        check_enough_trips({"train": 5000, "eval": 20}, 5020, 0.0, 250.0, 2000, 300)
    check_enough_trips({"train": 2000, "eval": 300}, 2300, 0.0, 250.0, 2000, 300)


def test_a_data_fault_is_found_behind_beam_s_wrapping():
    from pipeline.components.csv_example_gen import CsvCellError
    from pipeline.runner import data_fault_of

    try:
        try:
            raise CsvCellError("t.csv: line 3, column 'fare': 'x' is not FLOAT")
        except CsvCellError as inner:
            raise RuntimeError("a worker failed") from inner
    except RuntimeError as outer:
        assert data_fault_of(outer) == "t.csv: line 3, column 'fare': 'x' is not FLOAT"
    # From a worker process only the text of its traceback comes back.
    remote = RuntimeError(
        "Traceback (most recent call last):\n  ...\npipeline.components.fare_filter."
        "TooFewTripsError: all 9 trips were excluded by data.min_fare/max_fare"
        " [while running 'Run[FareFilter]']"
    )
    assert data_fault_of(remote) == "all 9 trips were excluded by data.min_fare/max_fare"
    assert data_fault_of(RuntimeError("ValueError: something else")) is None
    assert data_fault_of(None) is None


# --- the input folder --------------------------------------------------------------------------


def _trips(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _run_on(tmp_path: Path, capsys, *overrides: str) -> tuple[int, list[str]]:
    args = ["run", "--config", SMOKE, "--set", f"root={tmp_path / 'root'}"]
    for o in overrides:
        args += ["--set", o]
    code = cli.main(args)
    return code, _errors(capsys)


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        (".DS_Store", b"\0\0\0\1Bud1\0\0\x10\0", "a hidden file among the input CSV files"),
        ("README.txt", b"These are the trips of May.\n", "not a CSV file"),
        ("more.csv.gz", None, "gzip-compressed CSV is not supported; decompress it"),
    ],
)
def test_a_file_that_is_not_a_csv_is_named(tmp_path, capsys, sample_rows, name, content, said):
    data = tmp_path / "data"
    data.mkdir()
    (data / "trips.csv").write_bytes(_trips(sample_rows[:50]))
    (data / name).write_bytes(content if content is not None else gzip.compress(b"a,b\n1,2\n"))
    code, err = _run_on(tmp_path, capsys, f"data.input={data}")
    assert code == cli.EXIT_ANOMALIES, err
    assert len(err) == 1, err
    assert err[0].startswith(f"taxifare: data: {data / name}: {said}"), err


def test_a_nul_byte_in_a_csv_names_the_line(tmp_path, capsys, sample_rows):
    data = tmp_path / "data"
    data.mkdir()
    text = _trips(sample_rows[:50]).split(b"\n")
    text[3] = text[3].replace(b",", b",\0", 1)
    (data / "trips.csv").write_bytes(b"\n".join(text))
    code, err = _run_on(tmp_path, capsys, f"data.input={data}")
    assert code == cli.EXIT_ANOMALIES, err
    assert err == [
        f"taxifare: data: {data / 'trips.csv'}: line 4: a NUL byte (0x00): not a text CSV"
        " file; nothing was trained or pushed"
    ]


def test_a_span_folder_not_named_by_a_number_is_named(tmp_path, capsys, sample_rows):
    data = tmp_path / "data"
    for span in ("span-1", "span-abc"):
        (data / span).mkdir(parents=True)
        (data / span / "trips.csv").write_bytes(_trips(sample_rows[:50]))
    code, err = _run_on(tmp_path, capsys, f"data.input={data}", "data.pattern=span-{SPAN}/*.csv")
    assert code == cli.EXIT_ANOMALIES, err
    assert len(err) == 1, err
    assert f"{data / 'span-abc'}" in err[0] and "not named by a span number" in err[0], err


# --- the MLMD store ------------------------------------------------------------------------------


def _store_with_runs(path: Path, runs: int) -> None:
    """A file with MLMD's Type and Context tables holding `runs` pipeline_run contexts."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS Type (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS Context (id INTEGER PRIMARY KEY, type_id INT)")
        db.execute("INSERT OR IGNORE INTO Type VALUES (1, 'pipeline_run')")
        db.execute("DELETE FROM Context")
        db.executemany("INSERT INTO Context (type_id) VALUES (?)", [(1,)] * runs)


def test_backups_are_consistent_copies_and_the_newest_three_are_kept(tmp_path):
    store = tmp_path / "metadata.sqlite"
    assert backup_store(str(store)) is None  # a new root: nothing to back up
    for runs in range(1, 6):
        _store_with_runs(store, runs)
        assert backup_store(str(store)) == backup_path(str(store), 1)
    kept = [count_runs(backup_path(str(store), n)) for n in (1, 2, 3)]
    assert kept == [5, 4, 3]
    assert not Path(backup_path(str(store), 4)).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "metadata.sqlite",
        "metadata.sqlite.backup-1",
        "metadata.sqlite.backup-2",
        "metadata.sqlite.backup-3",
    ]


def test_a_lost_store_on_a_root_with_history_is_refused(tmp_path):
    store, artifacts, models = tmp_path / "metadata.sqlite", tmp_path / "pipeline", tmp_path / "m"
    check_store(str(store), str(artifacts), str(models))  # a new root
    store.write_bytes(b"")
    check_store(str(store), str(artifacts), str(models))  # still nothing to lose
    (models / "1796209720").mkdir(parents=True)
    with pytest.raises(StoreError, match=r"is empty \(0 bytes\) but the root holds served"):
        check_store(str(store), str(artifacts), str(models))
    store.unlink()
    with pytest.raises(StoreError, match="is missing but the root holds"):
        check_store(str(store), str(artifacts), str(models))
    _store_with_runs(store, 0)
    with pytest.raises(StoreError, match="records no pipeline run"):
        check_store(str(store), str(artifacts), str(models))
    _store_with_runs(store, 2)
    check_store(str(store), str(artifacts), str(models))


def test_a_damaged_store_is_named(tmp_path):
    store = tmp_path / "metadata.sqlite"
    store.write_bytes(b"SQLite format 3\0" + b"\xff" * 4000)
    with pytest.raises(StoreError, match="the root's ML Metadata store cannot be read"):
        check_store(str(store), str(tmp_path / "pipeline"), str(tmp_path / "m"))


def test_a_row_of_only_commas_is_named_by_its_line(tmp_path, capsys, sample_rows):
    data = tmp_path / "data"
    data.mkdir()
    (data / "trips.csv").write_bytes(_trips(sample_rows[:50]) + b",,,,,,,,,,,,,,,,,\r\n")
    code, err = _run_on(tmp_path, capsys, f"data.input={data}")
    assert code == cli.EXIT_ANOMALIES, err
    assert err == [
        f"taxifare: data: {data / 'trips.csv'}: line 52: a row of empty cells (only commas);"
        " remove it; nothing was trained or pushed"
    ]


def test_a_broken_link_is_named(tmp_path, capsys, sample_rows):
    data = tmp_path / "data"
    data.mkdir()
    (data / "trips.csv").write_bytes(_trips(sample_rows[:50]))
    (data / "more.csv").symlink_to(tmp_path / "gone.csv")
    code, err = _run_on(tmp_path, capsys, f"data.input={data}")
    assert code == cli.EXIT_USAGE, err
    assert err == [
        f"taxifare: data.input: cannot read {data / 'more.csv'}: no such file (a broken"
        " link?); nothing was run"
    ]


def test_a_root_inside_the_input_folder_is_refused(tmp_path, capsys, sample_rows):
    data = tmp_path / "data"
    data.mkdir()
    (data / "trips.csv").write_bytes(_trips(sample_rows[:50]))
    code = cli.main(["run", "--config", SMOKE, "--set", f"root={data / 'root'}",
                     "--set", f"data.input={data}"])  # fmt: skip
    err = _errors(capsys)
    assert code == cli.EXIT_USAGE, err
    assert len(err) == 1 and "inside the input folder data.input" in err[0], err
    assert sorted(p.name for p in data.iterdir()) == ["trips.csv"]


@pytest.mark.parametrize("command", ["run", "infer-schema"])
def test_a_root_whose_store_was_emptied_is_refused_by_every_command_that_runs(
    tmp_path, capsys, command
):
    root = tmp_path / "root"
    (root / "pipeline" / "CsvExampleGen" / "examples" / "1").mkdir(parents=True)
    (root / "metadata.sqlite").write_bytes(b"")
    args = [command, "--config", SMOKE, "--set", f"root={root}"]
    if command == "infer-schema":
        args += ["--output", str(tmp_path / "schema.pbtxt")]
    code = cli.main(args)
    err = [x for x in _errors(capsys) if not x.startswith("taxifare: running pipeline")]
    assert code == cli.EXIT_USAGE, err
    assert err[-1].startswith(f"taxifare: {root / 'metadata.sqlite'} is empty (0 bytes)"), err
    assert (root / "metadata.sqlite").stat().st_size == 0
    assert not (root / "runs").exists() or not any((root / "runs").rglob("summary.json"))


def test_a_run_log_on_a_full_disk_prints_no_tracebacks(tmp_path, capfd):
    import errno
    import logging

    from pipeline.runner import _run_log

    def full(_text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with _run_log(str(tmp_path / "runs" / "r" / "run.log"), verbose=False) as handler:
        handler.stream.write = full
        for i in range(20):
            logging.getLogger("tfx.run").error("record %d", i)
    err = capfd.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err, err
    assert "No space left on device" in str(handler.failure)
