"""The pipeline as an operator runs it: from other directories, twice at once, killed, full.

One root goes through these in order (each run after the first reuses its cached steps).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import cli, dag
from pipeline.mlmd_run import ABANDONED_PROPERTY, open_store, read_run, run_context
from tests.e2e.runs import tree_digest

pytestmark = pytest.mark.e2e

SMOKE = str(Path(__file__).parents[2] / "configs" / "smoke.yaml")


def _summary(root: Path, run_id: str) -> dict:
    with open(root / "runs" / run_id / "summary.json") as fh:
        return json.load(fh)


def _start(root: Path, *overrides: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "pipeline", "run", "--config", SMOKE, "--set", f"root={root}"]
    for o in overrides:
        args += ["--set", o]
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a kill reaches every process of it
    )


def _run_id(stderr: str) -> str:
    line = next(x for x in stderr.splitlines() if x.startswith("taxifare: running pipeline"))
    return line.rsplit(" run ", 1)[1].strip()


def _messages(stderr: str) -> list[str]:
    """What the run said on stderr: its own messages, without the start line, the Beam mode
    line, the progress lines (indented) and Keras' epoch lines (not its own)."""
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("taxifare: ")
        and not line.startswith("taxifare: running pipeline")
        and not line.startswith("taxifare: Beam DirectRunner")
    ]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("failsafe")


@pytest.fixture(scope="module")
def root(base) -> Path:
    return base / "a" / "rel" / "root"


@pytest.fixture(scope="module")
def first_run(base, root):
    """The first run, started in `base/a` with a relative root."""
    (base / "a").mkdir()
    cwd = os.getcwd()
    os.chdir(base / "a")
    try:
        code = cli.main(["run", "--config", SMOKE, "--set", "root=rel/root"])
    finally:
        os.chdir(cwd)
    with open(root / "summary.json") as fh:
        return code, json.load(fh)


def test_a_relative_root_is_recorded_absolute_and_works_from_another_directory(
    base, root, first_run, capsys
):
    code, summary = first_run
    assert code == cli.EXIT_OK, summary
    assert summary["pushed_to"].startswith(str(root))
    store = open_store(str(root / "metadata.sqlite"))
    uris = [a.uri for a in store.get_artifacts()]
    assert uris and all(u.startswith(str(root)) for u in uris), uris
    # From another directory, the same root by another relative path: the Evaluator finds
    # the last blessed model where MLMD says it is.
    (base / "b").mkdir()
    cwd = os.getcwd()
    os.chdir(base / "b")
    try:
        code = cli.main(["run", "--config", SMOKE, "--set", "root=../a/rel/root"])
    finally:
        os.chdir(cwd)
    with open(root / "summary.json") as fh:
        again = json.load(fh)
    assert code == cli.EXIT_OK, again
    assert again["components"][dag.EVALUATOR_ID] == "COMPLETE"
    assert again["baseline_rmse"] is not None
    # The same model (its Trainer was cached): blessed, and already the serving version.
    assert again["blessed"] is True and again["pushed_to"] is None
    assert again["already_serving"] == summary["pushed_to"]
    assert again["run_id"] != summary["run_id"]


def test_two_runs_at_once_each_report_their_own_outcome_one_after_the_other(root, first_run):
    # Two outcomes that differ: the first blesses and pushes, the second is not blessed.
    runs = [_start(root, "evaluation.max_rmse=19.5"), _start(root, "evaluation.max_rmse=0.5")]
    outputs = [p.communicate(timeout=1800) for p in runs]
    codes = [p.returncode for p in runs]
    assert codes == [cli.EXIT_OK, cli.EXIT_NOT_BLESSED], outputs
    ids = [_run_id(err) for _, err in outputs]
    assert ids[0] != ids[1]
    # One of them waited for the other, and said so once.
    waited = [err.count("waiting for it to finish") for _, err in outputs]
    assert sorted(waited) == [0, 1], outputs
    summaries = [_summary(root, run_id) for run_id in ids]
    for (out, _), run_id, summary in zip(outputs, ids, summaries, strict=True):
        assert summary["run_id"] == run_id
        assert f"run          {run_id}" in out
    blessed, refused = summaries
    # Blessed; its model (the Trainer was cached) is the one already served: not pushed again.
    assert blessed["blessed"] is True and blessed["already_serving"] == first_run[1]["pushed_to"]
    assert "this model is already the serving version" in outputs[0][0]
    assert refused["blessed"] is False and refused["pushed_to"] is None
    assert "blessed      NO: root_mean_squared_error" in outputs[1][0]
    # MLMD: the two runs' executions do not overlap; at most one pushed at a time.
    store = open_store(str(root / "metadata.sqlite"))
    spans = []
    for run_id in ids:
        nodes = read_run(store, run_context(store, run_id))
        assert nodes[dag.PUSHER_ID].state == "COMPLETE"
        executions = [n.execution for n in nodes.values()]
        spans.append(
            (
                min(e.create_time_since_epoch for e in executions),
                max(e.last_update_time_since_epoch for e in executions),
            )
        )
    first, second = sorted(spans)
    assert first[1] <= second[0], spans


@pytest.fixture
def small_serving_root(base):
    """A serving root too small for the model (a 512 KiB tmpfs), with one version in it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (the unit tests inject the error)")
    point = base / "small-serving"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(point)], check=True)
    (point / "taxifare" / "7").mkdir(parents=True)
    (point / "taxifare" / "7" / "saved_model.pb").write_bytes(b"the model being served")
    yield point
    subprocess.run(["umount", str(point)], check=True)


def test_a_push_to_a_full_disk_changes_nothing_and_says_so_in_one_line(
    root, first_run, small_serving_root, capsys
):
    before = tree_digest(small_serving_root)
    code = cli.main(
        [
            "run",
            "--config",
            SMOKE,
            "--set",
            f"root={root}",
            "--set",
            f"serving_root={small_serving_root}",
        ]
    )
    err = _messages(capsys.readouterr().err)
    assert code == cli.EXIT_FAILED
    assert len(err) == 1, err
    assert err[0].startswith("taxifare: Pusher failed: ") and "No space left on device" in err[0]
    assert "nothing was pushed" in err[0]
    log_path = err[0].rsplit("(full log: ", 1)[1].rstrip(")")
    with open(log_path) as fh:
        log = fh.read()
    assert "Traceback (most recent call last)" in log and "PushError" in log
    assert tree_digest(small_serving_root) == before
    with open(root / "summary.json") as fh:
        summary = json.load(fh)
    assert summary["failed_node"] == dag.PUSHER_ID and summary["pushed_to"] is None
    store = open_store(str(root / "metadata.sqlite"))
    nodes = read_run(store, run_context(store, summary["run_id"]))
    assert nodes[dag.PUSHER_ID].state == "FAILED"
    destinations = [
        a.custom_properties["pushed_destination"].string_value
        for a in store.get_artifacts_by_type("PushedModel")
        if "pushed_destination" in a.custom_properties
    ]
    assert not [d for d in destinations if d.startswith(str(small_serving_root))]


def _running(root: Path, node: str) -> bool:
    store = open_store(str(root / "metadata.sqlite"))
    for ctx in store.get_contexts_by_type("node"):
        if ctx.name.endswith(f".{node}"):
            for e in store.get_executions_by_context(ctx.id):
                if e.last_known_state == e.RUNNING:
                    return True
    return False


def test_a_killed_run_is_marked_abandoned_and_the_next_run_pushes(root, first_run):
    # Other training steps: the Trainer runs again (it is not served from the cache).
    overrides = ["training.train_steps=250"]
    killed = _start(root, *overrides)
    deadline = time.monotonic() + 1800
    while not _running(root, dag.TRAINER_ID):
        assert killed.poll() is None, killed.communicate()
        assert time.monotonic() < deadline, "the Trainer never started"
        time.sleep(0.5)
    os.killpg(killed.pid, signal.SIGKILL)
    _, err = killed.communicate()
    killed_id = _run_id(err)

    rerun = _start(root, *overrides)
    out, err = rerun.communicate(timeout=1800)
    assert rerun.returncode == cli.EXIT_OK, (out, err)
    assert "waiting" not in err  # the killed run left no lock behind
    said = [line for line in err.splitlines() if "abandoned" in line]
    assert len(said) == 1 and f"{dag.TRAINER_ID} (run {killed_id})" in said[0], err
    summary = _summary(root, _run_id(err))
    assert summary["pushed_to"] and Path(summary["pushed_to"], "saved_model.pb").is_file()
    store = open_store(str(root / "metadata.sqlite"))
    trainer = read_run(store, run_context(store, killed_id))[dag.TRAINER_ID].execution
    assert trainer.last_known_state == trainer.CANCELED
    assert summary["run_id"] in trainer.custom_properties[ABANDONED_PROPERTY].string_value


def test_anomalies_are_listed_once(root, first_run, sample_rows, tmp_path, capsys):
    rows = [dict(r) for r in sample_rows[:2000]]
    for r in rows[::20]:
        r["payment_type"] = "Bitcoin"
    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / "trips.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code = cli.main(
        [
            "run",
            "--config",
            SMOKE,
            "--set",
            f"root={root}",
            "--set",
            f"data.input={tmp_path / 'data'}",
        ]
    )
    captured = capsys.readouterr()
    assert code == cli.EXIT_ANOMALIES
    output = captured.out + captured.err
    listed = [line for line in output.splitlines() if "payment_type" in line]
    # One line per split (train, eval, test) in the list, and nowhere else.
    assert len(listed) == 3, output
    assert "Traceback" not in output


def test_a_failed_component_is_one_line_and_its_traceback_is_in_the_log(tmp_path, capsys):
    schema = tmp_path / "schema.pbtxt"
    schema.write_text("feature { name: 'fare' type: NOT_A_TYPE }\n")
    code = cli.main(
        [
            "run",
            "--config",
            SMOKE,
            "--set",
            f"root={tmp_path / 'root'}",
            "--set",
            f"schema.path={schema}",
        ]
    )
    captured = capsys.readouterr()
    err = _messages(captured.err)
    assert code == cli.EXIT_FAILED
    assert len(err) == 1, err
    assert err[0].startswith(f"taxifare: {dag.SCHEMA_GEN_ID} failed: ") and "NOT_A_TYPE" in err[0]
    assert "[while running" not in err[0]
    assert "Traceback" not in captured.out + captured.err
    log_path = err[0].rsplit("(full log: ", 1)[1].rstrip(")")
    assert log_path.startswith(str(tmp_path / "root" / "runs"))
    with open(log_path) as fh:
        log = fh.read()
    assert "Traceback (most recent call last)" in log and "NOT_A_TYPE" in log
