"""The root of a run: checked up front, and one run at a time.

One run per root: an exclusive lock on a file under the root, held for the whole run.

The lock is an `flock` on `<root>/run.lock`: the kernel releases it when the process that
holds it ends, however it ends, so a killed run never leaves the root locked. The file also
names the holder (pid, run id, start time) for the message the next run prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator

LOCK_FILE = "run.lock"
# Less free space than this on the root's file system stops a run before it starts (a run of
# the sample writes tens of megabytes; this only catches a file system that is full).
MIN_FREE_BYTES = 16 << 20


class RootError(Exception):
    """A root (or serving root) that cannot be used; the message names the path and why."""


def _existing_ancestor(path: str) -> str:
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_writable_dir(path: str, key: str, min_free_bytes: int = 0) -> None:
    """Checks that `path` is, or can be created as, a writable folder with free space.

    A serving root is checked with no minimum: how much a push needs is known only when it
    runs, and the Pusher fails cleanly when it does not fit.

    Raises:
      RootError: a file is in the way, or the folder or its nearest existing parent is not
        writable (e.g. a read-only file system), or its file system is full.
    """
    existing = _existing_ancestor(path)
    if not os.path.isdir(existing):
        what = "is" if existing == path else f"cannot be created: {existing} is"
        raise RootError(f"{key}: {path} {what} a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        readonly = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        why = "[Errno 30] Read-only file system" if readonly else "[Errno 13] Permission denied"
        raise RootError(f"{key}: cannot write to {existing}: {why}")
    stats = os.statvfs(existing)
    free = stats.f_bavail * stats.f_frsize
    if free < min_free_bytes:
        raise RootError(
            f"{key}: {existing} has {free // 1024:,} KiB free: [Errno 28] No space left on"
            f" device (a run needs at least {min_free_bytes >> 20} MiB)"
        )


def check_outside_input(path: str, data_root: str, key: str) -> None:
    """Checks that a run's folder `path` is not inside the input folder `data_root`.

    ExampleGen reads what its pattern matches under the input folder: a root in it would
    feed the run its own files (and each run's files to the next).

    Raises:
      RootError: `path` is the input folder or inside it (both local).
    """
    if "://" in path or "://" in data_root or not os.path.isabs(data_root):
        return  # remote, or not a folder (a BigQuery query)
    inside, folder = os.path.realpath(path), os.path.realpath(data_root)
    if os.path.commonpath([inside, folder]) == folder:
        raise RootError(
            f"{key}: {path} is inside the input folder data.input ({data_root}), whose files"
            " ExampleGen reads; put it elsewhere"
        )


def prepare_root(root: str) -> None:
    """Checks a run's root and creates it with its lock file.

    Raises:
      RootError: as check_writable_dir, or the root or its lock file cannot be created.
    """
    check_writable_dir(root, "root", MIN_FREE_BYTES)
    try:
        os.makedirs(root, exist_ok=True)
        os.close(os.open(os.path.join(root, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as e:
        where = e.filename or root
        raise RootError(f"root: cannot write to {where}: [Errno {e.errno}] {e.strerror}") from e


class RootBusyError(RuntimeError):
    """Another run holds the root and the caller chose not to wait."""


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return "another run"
    if not data:
        return "another run"
    return f"run {data.get('run_id')} (pid {data.get('pid')}, started {data.get('started')})"


@contextlib.contextmanager
def hold_root(
    root: str,
    run_id: str,
    wait: bool = True,
    notify: Callable[[str], None] | None = None,
) -> Iterator[str]:
    """Holds the run lock of `root` for the `with` block.

    Args:
      root: the (local, existing) root folder.
      run_id: this run's id, written into the lock file for the next run's message.
      wait: wait for another run to finish (True) or raise RootBusyError at once.
      notify: called once with a message when this run has to wait.

    Yields:
      The lock file's path.

    Raises:
      RootBusyError: the root is in use and `wait` is False.
      OSError: the lock file cannot be created (the root is not writable).
    """
    path = os.path.join(root, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise RootBusyError(
                    f"{root} is in use by {holder}; nothing was run"
                    " (one run per root: wait for it, or use another root)"
                ) from None
            if notify is not None:
                notify(f"{root} is in use by {holder}; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        holder = {"pid": os.getpid(), "run_id": run_id, "started": started}
        os.write(fd, json.dumps(holder).encode())
        try:
            yield path
        finally:
            # Unlocked by close as well; truncating tells a reader nobody holds it.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
