"""An operator's mistakes and the machine's faults on a root that already serves a model.

Each bad run must stop with one line naming what is wrong, its documented exit code, and
leave the served model and the history of the root as they were.
"""

from __future__ import annotations

import csv
import shutil
import sqlite3
from pathlib import Path

import pytest

from pipeline import cli, dag
from pipeline.mlmd_run import open_store
from pipeline.mlmd_store import backup_path, count_runs
from tests.e2e.runs import tree_digest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

SMOKE = str(Path(__file__).parents[2] / "configs" / "smoke.yaml")
LOCAL = str(Path(__file__).parents[2] / "configs" / "local.yaml")


def _write_csv(folder: Path, rows: list[dict[str, str]], name: str = "trips.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def _pushes(root: Path) -> list[str]:
    store = open_store(str(root / "metadata.sqlite"))
    return sorted(
        a.custom_properties["pushed_destination"].string_value
        for a in store.get_artifacts_by_type("PushedModel")
        if "pushed_destination" in a.custom_properties
    )


def _messages(stderr: str) -> list[str]:
    """The run's own lines on stderr, without its start and Beam mode lines."""
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("taxifare: ")
        and not line.startswith("taxifare: running pipeline")
        and not line.startswith("taxifare: Beam DirectRunner")
    ]


def _run(config: str, root: Path, *overrides: str) -> int:
    args = ["run", "--config", config, "--set", f"root={root}"]
    for o in overrides:
        args += ["--set", o]
    return cli.main(args)


@pytest.fixture(scope="module")
def served(tmp_path_factory, sample_rows) -> Path:
    """A root whose first run on 3,000 real trips pushed a model."""
    base = tmp_path_factory.mktemp("operator")
    data = _write_csv(base / "good", sample_rows[:3000])
    root = base / "root"
    code = _run(SMOKE, root, f"data.input={data}")
    assert code == cli.EXIT_OK
    assert _pushes(root)
    return root


@pytest.fixture
def unchanged(served):
    """Asserts after the test that the served model and the pushes MLMD records stayed."""
    serving, pushes = tree_digest(served / "serving"), _pushes(served)
    yield served
    assert tree_digest(served / "serving") == serving
    assert _pushes(served) == pushes


def test_every_trip_excluded_stops_after_fare_filter(unchanged, sample_rows, tmp_path, capsys):
    rows = [{**r, "fare": "0"} for r in sample_rows[:600]]
    data = _write_csv(tmp_path / "zero", rows)
    code = _run(SMOKE, unchanged, f"data.input={data}")
    err = _messages(capsys.readouterr().err)
    assert code == cli.EXIT_ANOMALIES, err
    assert len(err) == 1, err
    assert "all 600 trips were excluded by data.min_fare/max_fare" in err[0]
    assert f"stopped at {dag.FARE_FILTER_ID}" in err[0]
    assert "Traceback" not in err[0]


@pytest.mark.parametrize("count", [100, 10])
def test_too_few_trips_stop_before_transform_saying_how_many(
    unchanged, sample_rows, tmp_path, capsys, count
):
    data = _write_csv(tmp_path / "few", sample_rows[:count])
    code = _run(SMOKE, unchanged, f"data.input={data}")
    err = _messages(capsys.readouterr().err)
    assert code == cli.EXIT_ANOMALIES, err
    assert len(err) == 1, err
    assert "too few trips to train and test a model on" in err[0], err
    assert "(data.min_train_trips: 200)" in err[0] and f"of {count:,} read" in err[0]


def test_the_default_minimum_refuses_what_smoke_accepts(unchanged, sample_rows, tmp_path, capsys):
    # 1,000 trips: enough for the smoke config's test minimums, not for configs/local.yaml's.
    data = _write_csv(tmp_path / "small", sample_rows[:1000])
    code = _run(LOCAL, unchanged, f"data.input={data}")
    err = _messages(capsys.readouterr().err)
    assert code == cli.EXIT_ANOMALIES, err
    assert "(data.min_train_trips: 2,000)" in err[0], err


def test_a_bad_cell_is_exit_3_with_the_streaming_example_gen(
    unchanged, sample_rows, tmp_path, capsys
):
    rows = [dict(r) for r in sample_rows[:600]]
    rows[10]["trip_start_hour"] = "noon"
    data = _write_csv(tmp_path / "bad", rows)
    code = _run(SMOKE, unchanged, f"data.input={data}", "data.example_gen=streaming")
    err = _messages(capsys.readouterr().err)
    assert code == cli.EXIT_ANOMALIES, err
    assert len(err) == 1, err
    assert "trips.csv: line 12" in err[0] and "'noon'" in err[0], err
    assert f"stopped at {dag.EXAMPLE_GEN_ID}" in err[0]


def test_each_run_backs_up_the_store_first(served, sample_rows, tmp_path):
    store = served / "metadata.sqlite"
    runs = count_runs(str(store))
    _run(SMOKE, served, f"data.input={_write_csv(tmp_path / 'few', sample_rows[:10])}")
    # A consistent copy of the store as it was before the run: every run but that one.
    assert count_runs(str(store)) == runs + 1
    assert count_runs(backup_path(str(store), 1)) == runs


@pytest.fixture
def copy_of_served(served, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(served, copy)
    return copy


def _damage_and_run(root: Path, damage, capsys) -> tuple[int, list[str]]:
    store = root / "metadata.sqlite"
    damage(store)

    def state() -> tuple:
        return tree_digest(root / "serving"), tree_digest(root / "pipeline"), store.read_bytes()

    before = state()
    code = _run(SMOKE, root)
    err = _messages(capsys.readouterr().err)
    assert state() == before
    return code, err


def test_an_emptied_store_stops_up_front_naming_it(copy_of_served, capsys):
    code, err = _damage_and_run(copy_of_served, lambda p: p.write_bytes(b""), capsys)
    store = copy_of_served / "metadata.sqlite"
    assert code == cli.EXIT_USAGE, err
    assert len(err) == 1, err
    assert err[0].startswith(f"taxifare: {store} is empty (0 bytes) but the root holds"), err
    assert "restore the latest backup" in err[0] and "nothing was run" in err[0]
    # What the message says to do works: the backup restores the history.
    shutil.copyfile(backup_path(str(store), 1), store)
    assert count_runs(str(store)) > 0


def test_a_store_without_runs_stops_up_front(copy_of_served, capsys):
    def new_store(path: Path) -> None:
        path.unlink()
        sqlite3.connect(path).execute("CREATE TABLE Type (id INTEGER)").connection.commit()

    code, err = _damage_and_run(copy_of_served, new_store, capsys)
    assert code == cli.EXIT_USAGE, err
    assert "records no pipeline run" in err[0], err


def test_a_corrupt_store_is_exit_2_naming_it(copy_of_served, capsys):
    def corrupt(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 8192] = b"\xff" * 8192
        path.write_bytes(bytes(data))

    code, err = _damage_and_run(copy_of_served, corrupt, capsys)
    assert code == cli.EXIT_USAGE, err
    assert len(err) == 1, err
    store = copy_of_served / "metadata.sqlite"
    assert err[0].startswith(f"taxifare: {store}: the root's ML Metadata store cannot be read")
