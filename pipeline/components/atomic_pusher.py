"""An atomic Pusher: a version folder appears in the serving directory complete or not at all.

TFX's Pusher copies the model file by file straight into `<serving dir>/<version>/`, the
folder TF Serving watches, and only then archives it under its own artifact; a kill or a full
disk part way leaves a half-written highest version for TF Serving to load, or a complete one
that MLMD never hears of. Here the model is archived first, then copied into a staging folder
beside the serving directory (TF Serving never looks there), then moved into place in one
step, and only then does the orchestrator record the push in MLMD.

On a local disk the move is a rename: atomic. On `gs://` a move is a copy: the files go to
the version folder with `saved_model.pb` last (TF Serving and TFX only treat a folder with it
as a model), and a failure part way removes what was copied.

Before the move a small record names the version and the Pusher's artifact. The run that
follows the push (see `reconcile_pushes`) deletes the record once MLMD holds the push, and
removes the version folder if MLMD does not (the process died between the move and the
record): MLMD records a push if and only if its version folder is there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from pipeline.names import (
    ALREADY_SERVING_PROPERTY,
    PUSHED_PROPERTY,
)

# The file TF Serving and TFX take as "the model is here"; copied last.
SAVED_MODEL_FILE = "saved_model.pb"
# A pending-push record is named apart from its version's folder: object stores list by
# name prefix, and `<version>.json` would be listed as part of `<version>`.
_RECORD_PREFIX = "pending-"
_RECORD_SUFFIX = ".json"
_COPY_CHUNK_BYTES = 16 << 20


class PushError(RuntimeError):
    """The push failed; nothing was pushed and the serving directory is as it was."""


def staging_dir(model_dir: str) -> str:
    """Where a push is assembled: a hidden folder beside the serving directory.

    TF Serving only loads all-digit folders inside the model directory; this folder is
    outside it, so even a crash mid-copy changes nothing TF Serving sees.
    """
    model_dir = model_dir.rstrip("/")
    parent, name = os.path.split(model_dir)
    return os.path.join(parent, f".{name}.pushing")


def _is_local(path: str) -> bool:
    return "://" not in path


def _versions(model_dir: str) -> list[int]:
    if not fileio.isdir(model_dir):
        return []
    return [int(n.rstrip("/")) for n in fileio.listdir(model_dir) if n.rstrip("/").isdigit()]


def next_version(model_dir: str, now: float | None = None) -> str:
    """A new version: the Unix time (as TFX's Pusher), above every version already there."""
    stamp = int(time.time() if now is None else now)
    return str(max([stamp, *[v + 1 for v in _versions(model_dir)]]))


def serving_version_dir(model_dir: str) -> str | None:
    """The folder of the version TF Serving serves (the highest), or None if there is none."""
    versions = _versions(model_dir)
    return os.path.join(model_dir, str(max(versions))) if versions else None


def _same_bytes(a: str, b: str) -> bool:
    with fileio.open(a, "rb") as fa, fileio.open(b, "rb") as fb:
        while True:
            chunk_a, chunk_b = fa.read(_COPY_CHUNK_BYTES), fb.read(_COPY_CHUNK_BYTES)
            if chunk_a != chunk_b:
                return False
            if not chunk_a:
                return True


def same_model(a: str, b: str) -> bool:
    """Whether two SavedModel folders hold the same files with the same bytes."""
    files = relative_files(a)
    if files != relative_files(b):
        return False
    return all(_same_bytes(os.path.join(a, p), os.path.join(b, p)) for p in files)


def relative_files(root: str) -> list[str]:
    """Every file under `root` (any file system), as '/'-separated paths relative to it,
    sorted."""
    found = []
    for dirname, _, filenames in fileio.walk(root):
        dirname = dirname.decode() if isinstance(dirname, bytes) else dirname
        for filename in filenames:
            filename = filename.decode() if isinstance(filename, bytes) else filename
            relative = os.path.relpath(os.path.join(dirname, filename), root)
            found.append(relative.replace(os.sep, "/"))
    return sorted(found)


def _copy_file(source: str, destination: str) -> None:
    # Streamed through the file system layer: works between any two file systems (a
    # server-side copy is not offered by every one of them).
    with fileio.open(source, "rb") as src, fileio.open(destination, "wb") as dst:
        while chunk := src.read(_COPY_CHUNK_BYTES):
            dst.write(chunk)


def _copy_model(source: str, target: str) -> None:
    """Copies a SavedModel folder, `saved_model.pb` last."""
    files = sorted(relative_files(source), key=lambda p: (p == SAVED_MODEL_FILE, p))
    fileio.makedirs(target)
    for relative in files:
        destination = os.path.join(target, relative)
        fileio.makedirs(os.path.dirname(destination))
        _copy_file(os.path.join(source, relative), destination)


def _remove(path: str) -> None:
    """Removes a file or folder if it is there (cleanup must not hide the first error)."""
    try:
        if fileio.isdir(path):
            fileio.rmtree(path)
        elif fileio.exists(path):
            fileio.remove(path)
    except Exception:  # noqa: BLE001 - the push error is the one to report, not this one
        pass


@dataclasses.dataclass(frozen=True)
class PendingPush:
    """The record written just before a version folder is moved into place."""

    version: str
    destination: str
    artifact_uri: str  # the PushedModel artifact MLMD will hold once the push is recorded
    record_path: str


def _record_path(staging: str, version: str) -> str:
    return os.path.join(staging, f"{_RECORD_PREFIX}{version}{_RECORD_SUFFIX}")


def _write_record(staging: str, version: str, destination: str, artifact_uri: str) -> str:
    path = _record_path(staging, version)
    with fileio.open(path, "w") as fh:
        fh.write(
            json.dumps(
                {"version": version, "destination": destination, "artifact_uri": artifact_uri}
            )
        )
    return path


def publish_version(model_path: str, model_dir: str, version: str, artifact_uri: str) -> str:
    """Puts a copy of the SavedModel at `model_dir/version`, all at once.

    Args:
      model_path: the SavedModel folder to push.
      model_dir: the serving directory (`<serving root>/<name>`).
      version: the new version's folder name.
      artifact_uri: the PushedModel artifact of this push (named in the pending record).

    Returns:
      The version folder.

    Raises:
      PushError: the copy or the move failed; what it wrote is removed again.
    """
    staging = staging_dir(model_dir)
    temporary = os.path.join(staging, version)
    destination = os.path.join(model_dir, version)
    record = None
    moved = False
    created = [d for d in (staging, model_dir) if not fileio.exists(d)]
    try:
        if fileio.exists(destination):
            raise FileExistsError(f"{destination} already exists")
        fileio.makedirs(staging)
        fileio.makedirs(model_dir)
        _remove(temporary)
        _copy_model(model_path, temporary)
        record = _write_record(staging, version, destination, artifact_uri)
        if _is_local(destination):
            # One rename(2) of the folder: complete or absent for any reader.
            fileio.rename(temporary, destination)
            moved = True
        else:
            # An object store has no folder rename: copy beside, saved_model.pb last.
            moved = True
            _copy_model(temporary, destination)
            _remove(temporary)
    except Exception as e:
        _remove(temporary)
        if moved:
            _remove(destination)
        if record is not None:
            _remove(record)
        for folder in created:
            if fileio.isdir(folder) and not fileio.listdir(folder):
                _remove(folder)
        raise PushError(
            f"push to {destination} failed ({describe_error(e)}); nothing was pushed, the serving"
            f" directory {model_dir} is as it was"
        ) from e
    return destination


def describe_error(e: BaseException) -> str:
    """An I/O error in one line: the OS error and the path, from os or from tf.io.gfile."""
    if isinstance(e, OSError) and e.errno:
        where = f": {e.filename}" if e.filename else ""
        return f"[Errno {e.errno}] {e.strerror}{where}"
    message = getattr(e, "message", None) or str(e)  # tf.errors.OpError keeps it in .message
    return f"{type(e).__name__}: {' '.join(message.split())}"


def pending_pushes(model_dir: str) -> list[PendingPush]:
    """The pending-push records left in the staging folder of `model_dir`."""
    staging = staging_dir(model_dir)
    if not fileio.isdir(staging):
        return []
    found = []
    for name in sorted(fileio.listdir(staging)):
        name = name.rstrip("/")
        if not (name.startswith(_RECORD_PREFIX) and name.endswith(_RECORD_SUFFIX)):
            continue
        path = os.path.join(staging, name)
        try:
            with fileio.open(path, "r") as fh:
                data = json.loads(fh.read())
            found.append(
                PendingPush(
                    version=str(data["version"]),
                    destination=str(data["destination"]),
                    artifact_uri=str(data["artifact_uri"]),
                    record_path=path,
                )
            )
        except (ValueError, KeyError):
            # A record cut short by a crash: its move never happened (the record comes first).
            _remove(path)
    return found


def reconcile_pushes(model_dir: str, pipeline_root: str, store: Any) -> list[str]:
    """Makes the serving directory agree with MLMD after a push that did not finish.

    Removes leftover staging copies, deletes the records of pushes MLMD holds, and removes
    the version folder of a push MLMD does not hold. Only the pushes of `pipeline_root`'s
    Pusher are touched (another pipeline may push to the same serving directory).

    Args:
      model_dir: the serving directory.
      pipeline_root: the pipeline root whose pushes to reconcile.
      store: the MLMD store of that pipeline.

    Returns:
      One message per thing it changed, for the person running the pipeline.
    """
    messages: list[str] = []
    staging = staging_dir(model_dir)
    if not fileio.isdir(staging):
        return messages
    prefix = pipeline_root.rstrip("/") + "/"
    recorded = {
        a.uri
        for a in store.get_artifacts_by_type("PushedModel")
        if a.uri.startswith(prefix)
        and PUSHED_PROPERTY in a.custom_properties
        and a.custom_properties[PUSHED_PROPERTY].int_value == 1
    }
    for pending in pending_pushes(model_dir):
        if not pending.artifact_uri.startswith(prefix):
            continue
        if pending.artifact_uri not in recorded and fileio.exists(pending.destination):
            _remove(pending.destination)
            messages.append(
                f"removed {pending.destination}: the run that pushed it stopped before"
                " MLMD recorded the push"
            )
        _remove(pending.record_path)
    for name in fileio.listdir(staging):
        name = name.rstrip("/")
        path = os.path.join(staging, name)
        if name.isdigit() and not fileio.exists(_record_path(staging, name)):
            _remove(path)
            messages.append(f"removed an unfinished push copy: {path}")
    if not fileio.listdir(staging):
        _remove(staging)
    return messages


class Executor(pusher_executor.Executor):
    """TFX's Pusher executor, pushing to a file system atomically (see the module doc)."""

    def Do(  # noqa: N802 (TFX's executor interface)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        """Pushes a blessed model to `<base_directory>/<version>/`, all at once."""
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model_path = self.GetModelPath(input_dict)
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination
        )
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError("the atomic Pusher pushes to a file system only")
        model_dir = destination.filesystem.base_directory
        serving = serving_version_dir(model_dir)
        if serving is not None and same_model(model_path, serving):
            self._MarkNotPushed(model_push)
            model_push.set_string_custom_property(ALREADY_SERVING_PROPERTY, serving)
            return
        # The archive copy comes first: if it fails (a full disk), the serving directory has
        # not been touched.
        try:
            io_utils.copy_dir(model_path, model_push.uri)
        except Exception as e:
            raise PushError(
                f"archiving the model to {model_push.uri} failed ({describe_error(e)}); nothing"
                f" was pushed, the serving directory {model_dir} is as it was"
            ) from e
        version = next_version(model_dir)
        serving_path = publish_version(model_path, model_dir, version, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)
