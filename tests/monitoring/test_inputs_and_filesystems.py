"""Bad inputs to `taxifare skew` / `drift` (exit 2, the file named, before the long work), and
every input and output on a filesystem that is not the local disk.

TensorFlow's `ram://` filesystem stands in for `gs://`: plain Python file calls cannot reach
it, so any `open`, `os.path` or `shutil` left on an artifact or a command's path fails here as
it would on Cloud Storage.
"""

from __future__ import annotations

import csv
import json
import os
import random
import uuid

import pytest

from pipeline.monitoring.cli import EXIT_FOUND, EXIT_OK, EXIT_USAGE, main
from pipeline.serving.client import csv_row_to_instance
from pipeline.serving.request_log import request_log_files
from taxifare_modules import features as f
from tests.monitoring.conftest import write_log

pytestmark = [pytest.mark.timeout(900)]


def _skew(log_dir: str, stats: str, out: str, *extra: str) -> int:
    return main(
        ["skew", "--serving-logs", log_dir, "--training-stats", stats, "--out", out, *extra]
    )


@pytest.fixture()
def small_log(served_rows, tmp_path) -> str:
    log_dir = str(tmp_path / "log")
    write_log(log_dir, [csv_row_to_instance(r) for r in served_rows[:200]])
    return log_dir


def test_random_bytes_named_tfrecord_is_not_a_tfrecord_file(
    small_log, training_stats_file, tmp_path, capsys
):
    bogus = os.path.join(small_log, "zz-bogus.tfrecord")
    with open(bogus, "wb") as fh:
        fh.write(random.Random(0).randbytes(50_000))
    code = _skew(small_log, training_stats_file, str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert f"{bogus} is not a TFRecord file" in err
    assert not (tmp_path / "out").exists()


def test_corrupt_record_in_the_middle_is_named_with_its_offset(
    small_log, training_stats_file, tmp_path, capsys
):
    (path,) = request_log_files(small_log)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside some record
    with open(path, "wb") as fh:
        fh.write(bytes(data))
    code = _skew(small_log, training_stats_file, str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert path in err and "corrupt record at byte" in err


def test_text_file_given_as_statistics(small_log, tmp_path, capsys):
    text = tmp_path / "stats.pb"
    text.write_text("this is not a statistics file\n")
    code = _skew(small_log, str(text), str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and f"{text} is not a TFDV statistics file" in err


def test_out_that_is_a_file(small_log, training_stats_file, tmp_path, capsys):
    out = tmp_path / "out.html"
    out.write_text("keep me")
    code = _skew(small_log, training_stats_file, str(out))
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and f"--out {out} is a file" in err
    assert out.read_text() == "keep me"


@pytest.mark.parametrize(
    "content, message",
    [("", "is empty"), (",".join(f.RAW_FEATURE_KEYS) + "\n", "has a header line and no rows")],
    ids=["empty", "header-only"],
)
def test_drift_on_an_empty_csv(sample_csv, tmp_path, capsys, content, message):
    current = tmp_path / "current.csv"
    current.write_text(content)
    code = main(
        ["drift", "--baseline", sample_csv, "--current", str(current), "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and f"{current} {message}" in err


# ---- a filesystem that is not the local disk ----


@pytest.fixture()
def ram() -> str:
    """A fresh folder on TensorFlow's in-memory filesystem."""
    return f"ram://taxifare-{uuid.uuid4().hex[:8]}"


def _copy_tree(local: str, remote: str) -> None:
    import tensorflow as tf

    for folder, _, files in os.walk(local):
        target = remote + folder[len(local) :]
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(folder, name), f"{target}/{name}", overwrite=True)


def _read(path: str) -> str:
    import tensorflow as tf

    with tf.io.gfile.GFile(path) as fh:
        return fh.read()


@pytest.mark.slow
def test_skew_reads_and_writes_a_non_local_filesystem(
    clean_log, training_stats_file, ram, tmp_path
):
    import tensorflow as tf

    _copy_tree(clean_log, f"{ram}/log")
    tf.io.gfile.copy(training_stats_file, f"{ram}/train.pb")
    code = _skew(f"{ram}/log", f"{ram}/train.pb", f"{ram}/out")
    remote = json.loads(_read(f"{ram}/out/verdict.json"))
    assert code == EXIT_OK and remote["verdict"] == "no_skew"
    assert "<svg" in _read(f"{ram}/out/report.html")
    # The same numbers as from the local disk.
    _skew(clean_log, training_stats_file, str(tmp_path / "local"))
    local = json.loads((tmp_path / "local" / "verdict.json").read_text())
    assert [x["distance"] for x in remote["features"]] == [x["distance"] for x in local["features"]]


def _write_csv(path, rows) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.slow
def test_drift_reads_csv_from_a_non_local_filesystem(sample_rows, ram, tmp_path):
    rows = random.Random(4).sample(sample_rows, 4000)
    shifted = [{**r, f.HOUR_KEY: str((int(r[f.HOUR_KEY]) + 8) % 24)} for r in rows[2000:]]
    _write_csv(tmp_path / "base.csv", rows[:2000])
    os.makedirs(tmp_path / "current")
    _write_csv(tmp_path / "current" / "part-0.csv", shifted)
    _copy_tree(str(tmp_path), ram)
    code = main(
        [
            "drift",
            "--baseline",
            f"{ram}/base.csv",
            "--current",
            f"{ram}/current",
            "--out",
            f"{ram}/out",
        ]
    )
    verdict = json.loads(_read(f"{ram}/out/verdict.json"))
    assert code == EXIT_FOUND and verdict["failed_features"] == [f.HOUR_KEY]
