"""Before and around a run: unusable roots, one run per root, killed runs, absolute paths."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline import cli, mlmd_run, root_lock
from pipeline.config import TFX_SAMPLE, load_config

SMOKE = "configs/smoke.yaml"


def _run(root: str, capsys, *extra: str) -> tuple[int, list[str]]:
    code = cli.main(["run", "--config", SMOKE, "--set", f"root={root}", *extra])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


@pytest.fixture
def mount(tmp_path):
    """Mounts a small tmpfs (root only) and unmounts it after the test."""
    mounted = []

    def _mount(name: str, options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a file system needs root")
        point = tmp_path / name
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True)
        mounted.append(point)
        return point

    yield _mount
    for point in reversed(mounted):
        subprocess.run(["umount", str(point)], check=True)


def test_a_root_that_is_a_file_stops_before_anything_runs(tmp_path, capsys):
    root = tmp_path / "root"
    root.write_text("not a folder")
    code, err = _run(str(root), capsys)
    assert code == cli.EXIT_USAGE
    assert err == [f"taxifare: root: {root} is a file, not a folder; nothing was run"]
    assert root.read_text() == "not a folder"


def test_a_root_under_a_file_stops_before_anything_runs(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, err = _run(str(tmp_path / "f" / "root"), capsys)
    assert code == cli.EXIT_USAGE
    assert len(err) == 1 and f"{tmp_path / 'f'} is a file" in err[0], err


def test_an_empty_root_is_a_config_error(capsys):
    code, err = _run("", capsys)
    assert code == cli.EXIT_USAGE
    assert any("root" in line for line in err), err


def test_a_read_only_root_stops_before_anything_runs(tmp_path, mount, capsys):
    if os.geteuid() == 0:
        read_only, why = mount("ro", "ro,size=1m"), "[Errno 30] Read-only file system"
    else:  # without root, a folder this user may not write to
        read_only, why = tmp_path / "ro", "[Errno 13] Permission denied"
        read_only.mkdir(mode=0o555)
    code, err = _run(str(read_only / "root"), capsys)
    assert code == cli.EXIT_USAGE
    assert err == [f"taxifare: root: cannot write to {read_only}: {why}; nothing was run"]


def test_a_full_root_stops_before_anything_runs(mount, capsys):
    full = mount("full", "size=256k")
    with open(full / "filler", "wb") as fh:
        with pytest.raises(OSError):
            fh.write(b"x" * (1 << 20))
            fh.flush()
    code, err = _run(str(full / "root"), capsys)
    assert code == cli.EXIT_USAGE
    assert len(err) == 1 and str(full) in err[0] and "No space left on device" in err[0], err


def test_a_read_only_serving_root_stops_before_anything_runs(mount, tmp_path, capsys):
    read_only = mount("ro", "ro,size=1m")
    code, err = _run(str(tmp_path / "root"), capsys, "--set", f"serving_root={read_only}")
    assert code == cli.EXIT_USAGE
    assert len(err) == 1 and err[0].startswith(
        f"taxifare: serving_root: cannot write to {read_only}"
    )


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pipeline.root_lock import hold_root
    with hold_root(sys.argv[1], "holder-run"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def _hold(root: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(root), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_on_a_busy_root_stops_with_the_holder_named(tmp_path, capsys):
    root = tmp_path / "root"
    root_lock.prepare_root(str(root))
    holder = _hold(root, 600)
    try:
        code, err = _run(str(root), capsys, "--no-wait")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert code == cli.EXIT_USAGE
    assert len(err) == 1, err
    assert f"{root} is in use by run holder-run (pid {holder.pid}" in err[0]
    assert "nothing was run" in err[0]
    assert not (root / "pipeline").exists() and not (root / "metadata.sqlite").exists()
    # The holder was killed: the kernel released its lock, nothing is left stuck.
    with root_lock.hold_root(str(root), "next", wait=False):
        pass


def test_a_second_run_waits_for_the_first_and_says_so_once(tmp_path):
    root = tmp_path / "root"
    root_lock.prepare_root(str(root))
    holder = _hold(root, 2)
    said: list[str] = []
    with root_lock.hold_root(str(root), "second", notify=said.append):
        # The lock is only ours once the holder has let go of it.
        assert holder.wait(timeout=60) == 0
    assert len(said) == 1 and "in use by run holder-run" in said[0] and "waiting" in said[0]


def _store(tmp_path: Path) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(tmp_path / "metadata.sqlite")
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    )
    return metadata_store.MetadataStore(config)


def _execution(store, run: str, node: str, state) -> int:
    type_id = store.put_execution_type(metadata_store_pb2.ExecutionType(name="Trainer"))
    run_type = store.put_context_type(metadata_store_pb2.ContextType(name="pipeline_run"))
    node_type = store.put_context_type(metadata_store_pb2.ContextType(name="node"))
    contexts = []
    for type_id_, name in ((run_type, run), (node_type, f"taxifare.{node}")):
        found = store.get_context_by_type_and_name(
            "pipeline_run" if type_id_ == run_type else "node", name
        )
        if found is None:
            [cid] = store.put_contexts([metadata_store_pb2.Context(type_id=type_id_, name=name)])
        else:
            cid = found.id
        contexts.append(cid)
    [eid] = store.put_executions(
        [metadata_store_pb2.Execution(type_id=type_id, last_known_state=state)]
    )
    store.put_attributions_and_associations(
        [], [metadata_store_pb2.Association(context_id=c, execution_id=eid) for c in contexts]
    )
    return eid


def test_executions_a_killed_run_left_running_are_marked_abandoned(tmp_path):
    store = _store(tmp_path)
    execution = metadata_store_pb2.Execution
    killed = _execution(store, "run-1", "Trainer", execution.RUNNING)
    done = _execution(store, "run-1", "Transform", execution.COMPLETE)
    marked = mlmd_run.abandon_unfinished(store, by_run="run-2")
    assert marked == ["Trainer (run run-1)"]
    by_id = {e.id: e for e in store.get_executions()}
    assert by_id[killed].last_known_state == execution.CANCELED
    assert "run-2" in by_id[killed].custom_properties[mlmd_run.ABANDONED_PROPERTY].string_value
    assert by_id[done].last_known_state == execution.COMPLETE
    assert mlmd_run.ABANDONED_PROPERTY not in by_id[done].custom_properties
    # Once marked, a later run has nothing more to say.
    assert mlmd_run.abandon_unfinished(store, by_run="run-3") == []


def test_relative_paths_are_made_absolute_and_remote_ones_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        Path(__file__).parents[2] / SMOKE,
        [
            "root=runs/r",
            "serving_root=../serving",
            "data.input=trips",
            "schema.path=my/schema.pbtxt",
            "monitoring.skew.serving_logs=gs://bucket/requests",
        ],
    ).with_absolute_paths()
    assert cfg.root == str(tmp_path / "runs" / "r")
    assert cfg.serving_root == str(tmp_path.parent / "serving")
    assert cfg.data.input == str(tmp_path / "trips")
    assert cfg.schema_config.path == str(tmp_path / "my" / "schema.pbtxt")
    assert cfg.monitoring.skew.serving_logs == "gs://bucket/requests"
    assert cfg.metadata_path == str(tmp_path / "runs" / "r" / "metadata.sqlite")
    sample = load_config(Path(__file__).parents[2] / SMOKE).with_absolute_paths()
    assert sample.data.input == TFX_SAMPLE


def test_the_run_id_is_the_pipeline_run_id_tfx_records(tmp_path):
    from pipeline.data_source import resolve_input
    from pipeline.runner import compile_with_run_id, new_run_id

    cfg = load_config(SMOKE, [f"root={tmp_path}"]).with_absolute_paths()
    run_id = new_run_id()
    assert run_id != new_run_id()
    ir = compile_with_run_id(cfg, run_id, data_root=resolve_input(cfg))
    assert ir.runtime_spec.pipeline_run_id.field_value.string_value == run_id
    assert time.strftime("%Y%m%d", time.gmtime()) in run_id
