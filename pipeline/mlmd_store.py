"""The root's ML Metadata store: checked before a run, and backed up before it writes.

MLMD takes an empty or missing `metadata.sqlite` for a new store. On a root that already
holds artifacts or served versions, that is a store that was lost (truncated, deleted,
overwritten): a run would start the history over, reuse artifact ids and folders, push a
version beside ones MLMD no longer records, and lose the baseline. Such a root, and a store
SQLite cannot read, stop the run before anything runs, naming the file and what to do.

Before each run the store is copied beside itself with SQLite's online backup API (a
consistent copy even of a store being written), and the last `KEEP_BACKUPS` copies are kept:
`metadata.sqlite.backup-1` is the newest.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3

# How many backups of the store a root keeps (backup-1 newest).
KEEP_BACKUPS = 3
BACKUP_SUFFIX = ".backup-"
_RUN_CONTEXT_TYPE = "pipeline_run"
_VERSION = re.compile(r"^\d+$")


class StoreError(Exception):
    """The root's MLMD store cannot be used; the message names the file and what to do."""


def backup_path(store_path: str, number: int) -> str:
    """The path of backup `number` (1: the newest) of the store at `store_path`."""
    return f"{store_path}{BACKUP_SUFFIX}{number}"


def _restore_hint(store_path: str) -> str:
    newest = backup_path(store_path, 1)
    if os.path.exists(newest):
        return (
            f"restore the latest backup (cp {newest} {store_path}; see docs/operations.md)"
            " or use a new root"
        )
    return "restore it from a backup of the root, or use a new root"


def _has_entries(folder: str) -> bool:
    from tfx.dsl.io import fileio  # artifacts and served versions may be on gs://

    return fileio.exists(folder) and fileio.isdir(folder) and bool(fileio.listdir(folder))


def _served_versions(model_dir: str) -> list[str]:
    from tfx.dsl.io import fileio

    if not (fileio.exists(model_dir) and fileio.isdir(model_dir)):
        return []
    return [n.rstrip("/") for n in fileio.listdir(model_dir) if _VERSION.match(n.rstrip("/"))]


def count_runs(store_path: str) -> int:
    """How many pipeline runs the store at `store_path` records.

    Raises:
      StoreError: SQLite cannot read it (not a database, a damaged or truncated one).
    """
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
        ) as connection:
            # quick_check reads every page: a truncated or damaged file is found here, not
            # half way through a run.
            verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({verdict})")
            tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
            if not {"Context", "Type"} <= tables:
                return 0
            return connection.execute(
                "SELECT COUNT(*) FROM Context JOIN Type ON Context.type_id = Type.id"
                " WHERE Type.name = ?",
                (_RUN_CONTEXT_TYPE,),
            ).fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise StoreError(
            f"{store_path}: the root's ML Metadata store cannot be read ({e});"
            f" {_restore_hint(store_path)}"
        ) from None


def check_store(store_path: str, pipeline_root: str, serving_model_dir: str) -> None:
    """Checks that the store at `store_path` can carry on the history of its root.

    Args:
      store_path: the root's `metadata.sqlite`.
      pipeline_root: where the root's artifacts are (`<root>/pipeline`).
      serving_model_dir: the folder of the served versions.

    Raises:
      StoreError: the store cannot be read, or it is missing, empty or records no run while
        the root holds artifacts or served versions.
    """
    size = os.path.getsize(store_path) if os.path.exists(store_path) else None
    runs = count_runs(store_path) if size else 0
    if runs:
        return
    held = []
    if _has_entries(pipeline_root):
        held.append(f"artifacts in {pipeline_root}")
    versions = _served_versions(serving_model_dir)
    if versions:
        held.append(f"served version(s) {', '.join(sorted(versions))} in {serving_model_dir}")
    if not held:
        return  # a new root
    state = (
        "is missing"
        if size is None
        else "is empty (0 bytes)"
        if size == 0
        else "records no pipeline run"
    )
    raise StoreError(
        f"{store_path} {state} but the root holds {' and '.join(held)}: its run history and"
        f" baseline are lost, and a run would reuse their ids and folders;"
        f" {_restore_hint(store_path)}"
    )


def backup_store(store_path: str, keep: int = KEEP_BACKUPS) -> str | None:
    """Copies the store beside itself (SQLite's backup API) and keeps the newest `keep`.

    Call it while holding the root's run lock. A missing or empty store (a new root) is not
    backed up.

    Returns:
      The path of the new backup, or None when there was nothing to back up.
    """
    if keep < 1 or not os.path.exists(store_path) or os.path.getsize(store_path) == 0:
        return None
    partial = f"{store_path}{BACKUP_SUFFIX}partial"
    with (
        contextlib.closing(sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)) as source,
        contextlib.closing(sqlite3.connect(partial)) as target,
    ):
        source.backup(target)
    # Oldest first, so each rename moves into a free name.
    with contextlib.suppress(FileNotFoundError):
        os.remove(backup_path(store_path, keep))
    for number in range(keep - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(backup_path(store_path, number), backup_path(store_path, number + 1))
    newest = backup_path(store_path, 1)
    os.replace(partial, newest)
    return newest
