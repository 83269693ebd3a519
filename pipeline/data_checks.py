"""Checks the input CSV files before ExampleGen reads them.

CsvExampleGen takes a file's first line as the column names and Python's `csv` module for
the rest. Some inputs go wrong there without a word (a second column of the same name: the
last one wins, so a `fare` column holding the tips becomes the label) and others fail deep in
Beam with a Python error that names neither the file nor the line (a byte that is not UTF-8,
a field over the `csv` module's field limit). Each is found here first and named in one line
with the file and, where it can be known, the line and column.

The files are read once, in chunks, through `tf.io.gfile` (so `gs://` input works), with the
per-byte work done by `bytes` methods: a pass costs a fraction of ExampleGen's own.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import os
import posixpath
import re
from typing import Any

import tensorflow as tf
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2

from pipeline.config import Config

_CHUNK_BYTES = 4 << 20
_BOM = codecs.BOM_UTF8


class DataCheckError(Exception):
    """The input is not the CSV it claims to be; the message names the file and the line."""


class DataReadError(Exception):
    """The input cannot be read at all (permissions, a missing bucket); names the path."""


_NOT_NUMBERED = re.compile(r"Cannot find (span|version) number from (\S+) based on")


def input_files(cfg: Config, data_root: str) -> list[str]:
    """The files CsvExampleGen will read: the pattern's matches (the latest span's).

    Raises:
      DataCheckError: a file or folder the pattern's {SPAN} or {VERSION} matches is not
        named by a number (ExampleGen would fail on it deep in the run).
      DataReadError: the pattern matches a link to nothing.
    """
    split = example_gen_pb2.Input.Split(name="single_split", pattern=cfg.data.pattern or "*")
    any_span = split.pattern.replace("{SPAN}", "*").replace("{VERSION}", "*")
    local = "://" not in data_root  # only a local folder has links
    for path in fileio.glob(os.path.join(data_root, any_span)) if local else []:
        # Listed but not there: a link to nothing (TFX's fingerprint fails on it, unnamed).
        if not os.path.exists(path):
            raise DataReadError(f"data.input: cannot read {path}: no such file (a broken link?)")
    # Replaces {SPAN}/{VERSION} in `split.pattern` with the latest span, as ExampleGen does.
    try:
        _, span, _ = example_gen_utils.calculate_splits_fingerprint_span_and_version(
            data_root, [split]
        )
    except ValueError as e:
        match = _NOT_NUMBERED.search(str(e))
        if match is None:
            raise DataCheckError(f"data.pattern {split.pattern!r}: {e}") from None
        kind, path = match.groups()
        raise DataCheckError(
            f"{path}: not named by a {kind} number, which data.pattern {split.pattern!r} needs"
            f" (the {{{kind.upper()}}} part must be digits); rename or move it"
        ) from None
    if "{SPAN}" in (cfg.data.pattern or ""):
        _check_no_newer_empty_span(data_root, cfg.data.pattern or "", int(span))
    files = sorted(fileio.glob(os.path.join(data_root, split.pattern)))
    return [p for p in files if not fileio.isdir(p)]


def _check_no_newer_empty_span(data_root: str, pattern: str, span: int) -> None:
    """Refuses a span folder newer than the span ExampleGen picked that matches no file.

    ExampleGen takes the newest span that has files: a month's folder created before its
    files arrive would silently train (and check drift) on the month before. The run stops
    instead, naming the folder, so that a late delivery is seen, not papered over.
    """
    parts = pattern.split("/")
    spanned = [i for i, part in enumerate(parts[:-1]) if "{SPAN}" in part]
    if not spanned:
        return
    depth = spanned[0]
    folder_pattern = "/".join(parts[: depth + 1])
    number = re.compile(
        re.escape(folder_pattern).replace(re.escape("{SPAN}"), r"(\d+)").replace(
            re.escape("{VERSION}"), r"\d+"
        ) + "$"
    )
    glob_pattern = folder_pattern.replace("{SPAN}", "*").replace("{VERSION}", "*")
    for folder in fileio.glob(os.path.join(data_root, glob_pattern)):
        relative = folder[len(data_root.rstrip("/")) + 1 :]
        match = number.match(relative)
        if match is None or int(match.group(1)) <= span or not fileio.isdir(folder):
            continue
        rest = "/".join(parts[depth + 1 :])
        if not fileio.glob(os.path.join(folder, rest)):
            raise DataCheckError(
                f"{folder}: the newest span folder holds no file matching {rest!r}; ExampleGen"
                f" would read span {span} instead. Add its files, or move the empty folder"
                " away to train on the previous span"
            )


def check_file_name(path: str, pattern: str) -> None:
    """Refuses a file that is not a plain CSV file by its name.

    ExampleGen reads every file its pattern matches (hidden ones too) as CSV: a `.DS_Store`,
    a README or a gzip file would fail it deep in the run, or blame another file's header.

    Raises:
      DataCheckError: a hidden file, a gzip-compressed one, or one not named `*.csv`.
    """
    name = posixpath.basename(path)
    hint = f"data.pattern {pattern!r} matches it: remove it from the input folder or narrow"
    hint += " data.pattern (e.g. '*.csv')"
    if name.startswith("."):
        raise DataCheckError(f"{path}: a hidden file among the input CSV files; {hint}")
    if name.lower().endswith(".gz"):
        raise DataCheckError(
            f"{path}: gzip-compressed CSV is not supported; decompress it (gunzip)"
        )
    if not name.lower().endswith(".csv"):
        raise DataCheckError(f"{path}: not a CSV file (its name does not end in .csv); {hint}")


def _parse_one(text: str) -> list[str]:
    """One CSV record, whatever the length of its fields (a NUL byte read as a character)."""
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))
    try:
        return next(csv.reader(io.StringIO(text.replace("\0", "?"))), [])
    finally:
        csv.field_size_limit(limit)


def _where(path: str, line: int, column: int | None = None, name: str | None = None) -> str:
    where = f"{path}: line {line}"
    if column is not None:
        where += f", column {column}" + (f" ({name!r})" if name else "")
    return where


def _check_header(path: str, first_line: bytes) -> list[str]:
    if first_line.startswith(_BOM):
        raise DataCheckError(
            f"{_where(path, 1)}: the file starts with a UTF-8 byte-order mark (EF BB BF), which"
            " would become part of the first column's name; save it as UTF-8 without a BOM"
        )
    try:
        text = first_line.decode("utf-8")
    except UnicodeDecodeError as e:
        _raise_not_utf8(path, 1, first_line, e)
    names = _parse_one(text.rstrip("\r\n"))
    seen: dict[str, int] = {}
    for column, name in enumerate(names, start=1):
        if name in seen:
            raise DataCheckError(
                f"{_where(path, 1, column)}: the column name {name!r} appears twice (columns"
                f" {seen[name]} and {column}); ExampleGen would keep only the last"
            )
        if not name.strip():
            raise DataCheckError(f"{_where(path, 1, column)}: an empty column name")
        seen[name] = column
    return names


def _raise_not_utf8(path: str, line: int, data: bytes, error: UnicodeDecodeError) -> None:
    before = data[: error.start].decode("utf-8", errors="replace")
    column = max(len(_parse_one(before)), 1)
    raise DataCheckError(
        f"{path}: line {line}, character {len(before) + 1} (column {column}): not UTF-8 text"
        f" (byte 0x{data[error.start]:02X}); save the file as UTF-8"
    )


def _check_long_line(path: str, line_no: int, line: bytes, names: list[str], limit: int) -> None:
    fields = _parse_one(line.decode("utf-8"))
    for column, value in enumerate(fields, start=1):
        if len(value) > limit:
            name = names[column - 1] if column <= len(names) else None
            raise DataCheckError(
                f"{_where(path, line_no, column, name)}: a field of {len(value):,} characters,"
                f" over the CSV field limit of {limit:,}"
            )


def check_csv_file(path: str, line_hashes: list | None = None) -> tuple[list[str], int]:
    """Checks one CSV file; returns its column names and its number of non-blank data lines.

    Raises:
      DataCheckError: the file is empty, starts with a byte-order mark, is not UTF-8 text
        (or holds a NUL byte), has a duplicate or empty column name, or a field over the CSV
        field limit.

    Args:
      path: the file.
      line_hashes: when given, an array of the 64-bit hashes of the file's data lines (line
        ends aside) is appended per chunk read, to count duplicate rows across files.
    """
    limit = csv.field_size_limit()
    names: list[str] | None = None
    rows = 0
    line_no = 0  # lines before the current chunk's first
    carry = b""
    with tf.io.gfile.GFile(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK_BYTES)
            data = carry + chunk
            if not chunk:
                lines = [data] if data else []
                carry = b""
            else:
                lines = data.split(b"\n")
                carry = lines.pop()
            if b"\0" in data:
                # Python's csv module (ExampleGen's reader) stops at a NUL byte.
                line = line_no + data.count(b"\n", 0, data.find(b"\0")) + 1
                raise DataCheckError(
                    f"{_where(path, line)}: a NUL byte (0x00): not a text CSV file"
                )
            if names is None and lines:
                names = _check_header(path, lines[0])
                line_no += 1
                lines = lines[1:]
            if lines:
                block = b"\n".join(lines)
                try:
                    block.decode("utf-8")
                except UnicodeDecodeError as e:
                    index = block.count(b"\n", 0, e.start)
                    bad = lines[index]
                    offset = e.start - (block.rfind(b"\n", 0, e.start) + 1)
                    error = UnicodeDecodeError("utf-8", bad, offset, offset + 1, e.reason)
                    _raise_not_utf8(path, line_no + index + 1, bad, error)
                if max(map(len, lines)) > limit:
                    for index, line in enumerate(lines):
                        if len(line) > limit:
                            _check_long_line(path, line_no + index + 1, line, names or [], limit)
                empty = _EMPTY_ROW.search(block)
                if empty is not None:
                    line = line_no + block.count(b"\n", 0, empty.start()) + 1
                    raise DataCheckError(
                        f"{_where(path, line)}: a row of empty cells (only commas); remove it"
                    )
                rows += len(lines) - lines.count(b"") - lines.count(b"\r")
                if line_hashes is not None:
                    line_hashes.append(_line_hashes(lines))
                line_no += len(lines)
            if not chunk:
                break
    if names is None:
        raise DataCheckError(f"{path}: the file is empty (no header line)")
    return names, rows


def _line_hashes(lines: list[bytes]) -> Any:
    import numpy as np

    return np.fromiter(
        (hash(line.rstrip(b"\r")) for line in lines if line.strip()), dtype=np.int64
    )


def _check_one(path: str, line_hashes: list | None = None) -> tuple[list[str], int]:
    """`check_csv_file`, with a file that cannot be read named (a dangling link, no access)."""
    try:
        return check_csv_file(path, line_hashes)
    except (OSError, tf.errors.OpError) as e:
        message = getattr(e, "message", None) or getattr(e, "strerror", None) or str(e)
        detail = " ".join(message.split()) or type(e).__name__
        if not tf.io.gfile.exists(path):
            detail = "no such file (a broken link?)"
        raise DataReadError(f"data.input: cannot read {path}: {detail}") from e


@dataclasses.dataclass(frozen=True)
class InputReport:
    """What the check of the input found besides faults."""

    rows: int  # data lines in all files
    duplicate_rows: int  # lines that repeat an earlier line exactly (any file)
    files: int

    @property
    def duplicate_share(self) -> float:
        """Duplicate lines as a share of all data lines."""
        return self.duplicate_rows / self.rows if self.rows else 0.0


def check_input_report(cfg: Config, data_root: str) -> InputReport:
    """Checks every file ExampleGen will read; returns what it counted.

    Raises:
      DataCheckError: a file fails `check_csv_file`, the files' headers differ, or there is
        not one data line in all of them.
    """
    try:
        return _check_files(cfg, data_root)
    except (OSError, tf.errors.OpError) as e:
        message = getattr(e, "message", None) or str(e)
        detail = " ".join(message.split())
        raise DataReadError(f"data.input: cannot read {data_root}: {detail}") from e


# A line of only commas (and blanks): a row whose every cell is empty.
_EMPTY_ROW = re.compile(rb"(?m)^[ \t]*,[ ,\t]*\r?$")


def required_columns(cfg: Config) -> list[str]:
    """The columns the curated schema needs in training data (a presence it requires: a value
    in every trip, or the column at least): a file without one would fail at the gate only
    after ExampleGen and StatisticsGen (minutes on a large input), so the header check names
    it at once."""
    if cfg.schema_config.source != "curated" or cfg.vertex is not None:
        return []
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    from pipeline.curated_schema import curated_schema_file

    path = curated_schema_file(cfg)
    with tf.io.gfile.GFile(path) as fh:
        text = fh.read()
    try:
        schema = text_format.Parse(text, schema_pb2.Schema())
    except text_format.ParseError:
        # Not a schema: ImportSchemaGen stops the run on it with its own message and
        # traceback in the run's log; the header check has nothing to go by.
        return []
    return [
        feature.name
        for feature in schema.feature
        if (feature.presence.min_fraction > 0 or feature.presence.min_count > 0)
        and feature.lifecycle_stage != schema_pb2.LifecycleStage.DEPRECATED
    ]


def _check_required_columns(cfg: Config, path: str, header: list[str]) -> None:
    missing = [name for name in required_columns(cfg) if name not in header]
    if missing:
        raise DataCheckError(
            f"{_where(path, 1)}: no column {', '.join(repr(m) for m in missing)}, which the"
            " schema needs (schema.path to use another schema)"
        )


def earlier_window_files(cfg: Config, data_root: str) -> list[list[str]]:
    """The files of the training window's earlier spans (data.train_spans > 1), one list per
    span, oldest first: each span is read by an ExampleGen of its own (pipeline/dag.py), so
    its files are checked as the newest span's are."""
    if cfg.data.train_spans == 1 or "{SPAN}" not in (cfg.data.pattern or ""):
        return []
    from pipeline.data_source import DataSourceError, files_by_span

    try:
        spans = files_by_span(cfg, data_root)
    except DataSourceError as e:
        raise DataCheckError(str(e)) from None
    window = sorted(spans)[-cfg.data.train_spans :]
    return [sorted(spans[span]) for span in window[:-1]]


def _check_span_files(cfg: Config, data_root: str, files: list[str], hashes: list | None) -> int:
    """Checks the files one ExampleGen reads (one span); returns their data lines."""
    header: list[str] | None = None
    total = 0
    for path in files:
        check_file_name(path, cfg.data.pattern or "*")
    for path in files:
        names, rows = _check_one(path, hashes)
        if header is None:
            header = names
        elif names != header:
            raise DataCheckError(
                f"{_where(path, 1)}: the header differs from {files[0]}'s (ExampleGen needs"
                " one header in all files of a split)"
            )
        total += rows
    if header is not None:
        _check_required_columns(cfg, files[0], header)
    if total == 0:
        which = files[0] if len(files) == 1 else f"{len(files)} files under {data_root}"
        raise DataCheckError(f"{which}: a header line and no data rows; nothing to train on")
    return total


def _check_files(cfg: Config, data_root: str) -> InputReport:
    files = input_files(cfg, data_root)
    if not files:
        raise DataCheckError(f"{data_root}: no input file matches {cfg.data.pattern or '*'!r}")
    hashes: list = []
    total = _check_span_files(cfg, data_root, files, hashes)
    # The window's earlier spans: the same checks; their duplicates are not counted (the
    # summary's share is of the newest span's rows, the ones FareFilter reports).
    for span_files in earlier_window_files(cfg, data_root):
        _check_span_files(cfg, data_root, span_files, None)
    import numpy as np

    every = np.concatenate(hashes) if hashes else np.zeros(0, np.int64)
    duplicates = int(every.size - np.unique(every).size)
    return InputReport(rows=total, duplicate_rows=duplicates, files=len(files))
