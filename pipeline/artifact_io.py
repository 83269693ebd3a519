"""Reading artifacts from commands that must start in about a second.

`taxifare runs` and `report` read a few small files of a run's artifacts (metrics,
statistics, the Tuner's best values). Importing TensorFlow for `tf.io.gfile` costs more
than ten seconds, so a local path is read with the standard library and only a URI with a
scheme (`gs://`, `s3://`, `ram://`, ...) goes through `tf.io.gfile`, imported then.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from typing import Any

# A URI with a scheme ("gs://bucket/x"); anything else is a local path.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_local(uri: str) -> bool:
    """Whether `uri` is a path on this machine's file system (no scheme, or file://)."""
    return uri.startswith("file://") or not _SCHEME.match(uri)


def _local(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _gfile() -> Any:
    import tensorflow as tf

    return tf.io.gfile


def open_binary(uri: str) -> Any:
    """A binary reader of the file at `uri`."""
    if is_local(uri):
        return open(_local(uri), "rb")  # the caller closes it
    return _gfile().GFile(uri, "rb")


def read_bytes(uri: str) -> bytes:
    """The whole file at `uri`."""
    with open_binary(uri) as fh:
        return fh.read()


def exists(uri: str) -> bool:
    """Whether a file or folder is at `uri`."""
    if is_local(uri):
        return os.path.exists(_local(uri))
    return bool(_gfile().exists(uri))


def is_dir(uri: str) -> bool:
    """Whether a folder is at `uri`."""
    if is_local(uri):
        return os.path.isdir(_local(uri))
    return bool(_gfile().isdir(uri))


def list_dir(uri: str) -> list[str]:
    """The names in the folder at `uri`, sorted."""
    if is_local(uri):
        return sorted(os.listdir(_local(uri)))
    return sorted(name.rstrip("/") for name in _gfile().listdir(uri))


def glob_files(pattern: str) -> list[str]:
    """The files matching a glob pattern, sorted."""
    if is_local(pattern):
        return sorted(glob.glob(_local(pattern)))
    return sorted(_gfile().glob(pattern))


def iter_tfrecords(uri: str, compressed: bool | None = None) -> Iterator[bytes]:
    """The records of a TFRecord file, checksums checked.

    Args:
      uri: the file.
      compressed: GZIP-compressed (as ExampleGen writes); None: when the name ends in `.gz`.
    """
    import gzip

    from pipeline.serving.request_log import scan_records

    if compressed is None:
        compressed = uri.endswith(".gz")
    with open_binary(uri) as raw:
        fh = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        for record, offset, problem in scan_records(fh):
            if record is None:
                raise OSError(f"{uri}: {problem} at byte {offset}")
            yield record


def write_text(uri: str, text: str) -> None:
    """Writes `text` (UTF-8) to the file at `uri`, making its folder first."""
    if is_local(uri):
        path = _local(uri)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    gfile = _gfile()
    gfile.makedirs(uri.rsplit("/", 1)[0])
    with gfile.GFile(uri, "w") as fh:
        fh.write(text)
