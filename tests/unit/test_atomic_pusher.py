"""The atomic Pusher: a version folder appears complete or not at all, and agrees with MLMD."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import path_utils, proto_utils

from pipeline import names
from pipeline.components import atomic_pusher as ap
from pipeline.mlmd_run import open_store

PADDING_BYTES = 2 << 20  # a model bigger than the small file system below


def _tree(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder` with its content's hash: "byte for byte"."""
    if not folder.exists():
        return {}
    found = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        found[key] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def _save_model(path: Path) -> None:
    """A real SavedModel, with an asset that makes it a few megabytes."""

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return 2.0 * x

    tf.saved_model.save(Doubler(), str(path))
    (path / "assets").mkdir(exist_ok=True)
    (path / "assets" / "padding.bin").write_bytes(os.urandom(PADDING_BYTES))


@pytest.fixture
def pusher_io(tmp_path):
    """The Pusher's input and output artifacts, and a serving directory with one version."""
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "pipeline" / "Trainer" / "model" / "7")
    model_path = Path(
        path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    )
    _save_model(model_path)
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "pipeline" / "Evaluator" / "blessing" / "8")
    blessing.set_int_custom_property("blessed", 1)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pipeline" / "Pusher" / "pushed_model" / "9")
    return {
        "model": model,
        "model_path": model_path,
        "blessing": blessing,
        "pushed": pushed,
        "pipeline_root": str(tmp_path / "pipeline"),
    }


def _existing_version(model_dir: Path) -> None:
    (model_dir / "1000" / "variables").mkdir(parents=True)
    (model_dir / "1000" / "saved_model.pb").write_bytes(b"an earlier model")
    (model_dir / "1000" / "variables" / "variables.index").write_bytes(b"its variables")


def _do(io: dict, model_dir: Path) -> None:
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(model_dir))
    )
    ap.Executor().Do(
        {"model": [io["model"]], "model_blessing": [io["blessing"]]},
        {"pushed_model": [io["pushed"]]},
        {"push_destination": proto_utils.proto_to_json(destination)},
    )


def _store(tmp_path: Path):
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(tmp_path / "metadata.sqlite")
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    )
    from ml_metadata import metadata_store

    metadata_store.MetadataStore(config)
    return open_store(str(tmp_path / "metadata.sqlite"))


def test_a_push_puts_a_complete_version_and_leaves_nothing_beside_it(pusher_io, tmp_path):
    model_dir = tmp_path / "serving" / "taxifare"
    _existing_version(model_dir)
    _do(pusher_io, model_dir)
    pushed = pusher_io["pushed"]
    version = pushed.get_string_custom_property(names.PUSHED_VERSION_PROPERTY)
    assert pushed.get_int_custom_property(names.PUSHED_PROPERTY) == 1
    assert int(version) > 1000
    assert pushed.get_string_custom_property(names.PUSHED_DESTINATION_PROPERTY) == str(
        model_dir / version
    )
    assert _tree(model_dir / version) == _tree(pusher_io["model_path"])
    assert _tree(Path(pushed.uri)) == _tree(pusher_io["model_path"])  # the archive copy
    assert tf.saved_model.load(str(model_dir / version))(tf.constant([2.0])).numpy().tolist() == [
        4.0
    ]
    # Until the run has recorded it in MLMD, only the pending record is left beside it.
    staging = Path(ap.staging_dir(str(model_dir)))
    assert sorted(p.name for p in staging.iterdir()) == [f"pending-{version}.json"]


def test_a_push_not_blessed_writes_nothing(pusher_io, tmp_path):
    model_dir = tmp_path / "serving" / "taxifare"
    _existing_version(model_dir)
    before = _tree(model_dir.parent)
    pusher_io["blessing"].set_int_custom_property("blessed", 0)
    _do(pusher_io, model_dir)
    assert pusher_io["pushed"].get_int_custom_property(names.PUSHED_PROPERTY) == 0
    assert _tree(model_dir.parent) == before


@pytest.fixture
def full_serving_root(tmp_path):
    """A serving root that cannot take the model: a 1 MiB tmpfs (as root), else a blocked path."""
    serving = tmp_path / "serving"
    serving.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(serving)], check=True)
        yield serving, "No space left on device"
        subprocess.run(["umount", str(serving)], check=True)
    else:
        # A file where the staging folder goes: the write fails like on a broken disk.
        yield serving, "staging"


def test_a_full_disk_leaves_the_serving_dir_byte_for_byte_and_says_so(pusher_io, full_serving_root):
    serving, cause = full_serving_root
    model_dir = serving / "taxifare"
    _existing_version(model_dir)
    if cause == "staging":
        Path(ap.staging_dir(str(model_dir))).write_text("in the way")
    before = _tree(serving)
    with pytest.raises(ap.PushError) as error:
        _do(pusher_io, model_dir)
    message = str(error.value)
    assert "nothing was pushed" in message and str(model_dir) in message
    if cause != "staging":
        assert cause in message
    assert _tree(serving) == before
    assert names.PUSHED_PROPERTY not in pusher_io["pushed"].mlmd_artifact.custom_properties


_KILLED_PUSH = textwrap.dedent(
    """
    import sys
    from tfx.proto import pusher_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils
    from pipeline.components import atomic_pusher as ap

    model_uri, pushed_uri, model_dir = sys.argv[1:4]
    model = standard_artifacts.Model()
    model.uri = model_uri
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = pushed_uri + "-blessing"
    blessing.set_int_custom_property("blessed", 1)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = pushed_uri
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=model_dir))
    ap.Executor().Do({"model": [model], "model_blessing": [blessing]}, {"pushed_model": [pushed]},
                     {"push_destination": proto_utils.proto_to_json(destination)})
    """
)


def test_a_push_killed_mid_copy_leaves_the_serving_dir_byte_for_byte(pusher_io, tmp_path):
    model_dir = tmp_path / "serving" / "taxifare"
    _existing_version(model_dir)
    before = _tree(model_dir)
    # A named pipe in the model: the archive copy reads it once (a writer below feeds it),
    # the copy into the staging folder then blocks on it, part way through the model.
    fifo = pusher_io["model_path"] / "variables" / "zz-slow-disk"
    os.mkfifo(fifo)

    def feed_once() -> None:
        with open(fifo, "wb") as fh:
            fh.write(b"x" * 1000)

    feeder = threading.Thread(target=feed_once, daemon=True)
    feeder.start()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _KILLED_PUSH,
            pusher_io["model"].uri,
            pusher_io["pushed"].uri,
            str(model_dir),
        ],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        stderr=subprocess.PIPE,
    )
    staging = Path(ap.staging_dir(str(model_dir)))
    try:
        deadline = time.monotonic() + 120
        while not list(staging.glob("*/variables/variables.index")):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the push never reached the staging copy"
            time.sleep(0.05)
        time.sleep(0.2)  # blocked on the pipe now, mid-copy
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    (partial,) = [p for p in staging.iterdir() if p.is_dir()]
    assert (partial / "assets" / "padding.bin").is_file() and not (
        partial / "saved_model.pb"
    ).exists()
    assert _tree(model_dir) == before
    # The next run clears the half copy away and says so; the serving dir stays as it was.
    messages = ap.reconcile_pushes(str(model_dir), pusher_io["pipeline_root"], _store(tmp_path))
    assert messages == [f"removed an unfinished push copy: {partial}"]
    assert not staging.exists()
    assert _tree(model_dir) == before


def _pending(model_dir: Path, version: str, artifact_uri: str) -> None:
    staging = Path(ap.staging_dir(str(model_dir)))
    staging.mkdir(parents=True, exist_ok=True)
    (model_dir / version).mkdir(parents=True)
    (model_dir / version / "saved_model.pb").write_bytes(b"model")
    ap._write_record(str(staging), version, str(model_dir / version), artifact_uri)


def _record_push(store, uri: str, pushed: int) -> None:
    type_id = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="PushedModel"))
    artifact = metadata_store_pb2.Artifact(type_id=type_id, uri=uri)
    artifact.custom_properties[names.PUSHED_PROPERTY].int_value = pushed
    store.put_artifacts([artifact])


def test_a_moved_version_mlmd_never_recorded_is_taken_back(tmp_path):
    root = tmp_path / "pipeline"
    model_dir = tmp_path / "serving" / "taxifare"
    _existing_version(model_dir)
    before = _tree(model_dir)
    store = _store(tmp_path)
    _pending(model_dir, "2000", str(root / "Pusher" / "pushed_model" / "9"))  # killed before MLMD
    _pending(model_dir, "3000", str(root / "Pusher" / "pushed_model" / "12"))  # recorded
    _pending(model_dir, "4000", str(tmp_path / "other" / "Pusher" / "pushed_model" / "3"))
    _record_push(store, str(root / "Pusher" / "pushed_model" / "12"), pushed=1)
    messages = ap.reconcile_pushes(str(model_dir), str(root), store)
    killed = model_dir / "2000"
    assert messages == [
        f"removed {killed}: the run that pushed it stopped before MLMD recorded the push"
    ]
    assert sorted(p.name for p in model_dir.iterdir()) == ["1000", "3000", "4000"]
    assert {k: v for k, v in _tree(model_dir).items() if k.startswith("1000")} == before
    # Another pipeline's pending push is that pipeline's to settle.
    staging = Path(ap.staging_dir(str(model_dir)))
    assert sorted(p.name for p in staging.iterdir()) == ["pending-4000.json"]


def test_a_push_to_an_object_store_copies_then_moves(pusher_io):
    # ram:// is TensorFlow's in-memory file system: a file system without a folder rename.
    model_dir = "ram://serving/taxifare"
    destination = ap.publish_version(
        str(pusher_io["model_path"]), model_dir, "5", pusher_io["pushed"].uri
    )
    assert destination == f"{model_dir}/5"
    copied = ap.relative_files(destination)
    assert copied == ap.relative_files(str(pusher_io["model_path"]))
    assert not tf.io.gfile.exists(f"{ap.staging_dir(model_dir)}/5")
    with tf.io.gfile.GFile(f"{destination}/assets/padding.bin", "rb") as fh:
        assert len(fh.read()) == PADDING_BYTES


def test_next_version_is_above_every_version_there(tmp_path):
    model_dir = tmp_path / "taxifare"
    (model_dir / "1900000000").mkdir(parents=True)
    (model_dir / "notes").mkdir()
    assert ap.next_version(str(model_dir), now=1_800_000_000) == "1900000001"
    assert ap.next_version(str(tmp_path / "absent"), now=1_800_000_000) == "1800000000"


def test_the_model_already_served_is_not_pushed_again(pusher_io, tmp_path):
    model_dir = tmp_path / "serving" / "taxifare"
    _do(pusher_io, model_dir)
    first = pusher_io["pushed"].get_string_custom_property(names.PUSHED_DESTINATION_PROPERTY)
    before = _tree(model_dir)
    again = standard_artifacts.PushedModel()
    again.uri = str(tmp_path / "pipeline" / "Pusher" / "pushed_model" / "10")
    _do({**pusher_io, "pushed": again}, model_dir)
    assert again.get_int_custom_property(names.PUSHED_PROPERTY) == 0
    assert again.get_string_custom_property(names.ALREADY_SERVING_PROPERTY) == first
    assert _tree(model_dir) == before  # no new version for the servers to load
    assert not Path(again.uri).exists()


def test_a_different_model_is_pushed_above_the_served_one(pusher_io, tmp_path):
    model_dir = tmp_path / "serving" / "taxifare"
    _existing_version(model_dir)
    assert not ap.same_model(str(pusher_io["model_path"]), str(model_dir / "1000"))
    _do(pusher_io, model_dir)
    assert pusher_io["pushed"].get_int_custom_property(names.PUSHED_PROPERTY) == 1
    assert not pusher_io["pushed"].get_string_custom_property(names.ALREADY_SERVING_PROPERTY)
    # Same files, one byte changed: a different model.
    served = Path(ap.serving_version_dir(str(model_dir)))
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in served.rglob("*"):
        target = copy / p.relative_to(served)
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.write_bytes(p.read_bytes())
    assert ap.same_model(str(copy), str(served))
    padding = copy / "assets" / "padding.bin"
    data = bytearray(padding.read_bytes())
    data[-1] ^= 1
    padding.write_bytes(bytes(data))
    assert not ap.same_model(str(copy), str(served))
