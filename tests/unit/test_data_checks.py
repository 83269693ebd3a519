"""Input files that are not the CSV they claim to be stop `taxifare run` before any component."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from pipeline import cli, data_checks
from taxifare_modules import features as f

ROWS = 300


def _csv_text(rows: list[dict[str, str]], columns: list[str] | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = columns or list(rows[0])
    writer.writerow(columns)
    for r in rows:
        writer.writerow([r[c] for c in columns])
    return out.getvalue()


def _run(tmp_path: Path, data: Path, capsys) -> tuple[int, list[str]]:
    root = tmp_path / "root"
    code = cli.main(
        ["run", "--config", "configs/smoke.yaml", "--set", f"root={root}", "--set",
         f"data.input={data}"]
    )  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    # Nothing ran: no pipeline artifacts, no MLMD, nothing pushed.
    assert not (root / "pipeline").exists() and not (root / "metadata.sqlite").exists()
    assert not (root / "serving").exists()
    return code, err


def _write(folder: Path, name: str, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


def test_a_second_fare_column_is_named_and_stops_the_run(tmp_path, sample_rows, capsys):
    # The tips under a second `fare` heading: ExampleGen would keep it as the label.
    rows = [{**r, "fare_2": r["tips"]} for r in sample_rows[:ROWS]]
    text = _csv_text(rows).splitlines()
    header = text[0].split(",")
    header[-1] = f.LABEL_KEY
    text[0] = ",".join(header)
    path = _write(tmp_path / "data", "trips.csv", ("\n".join(text) + "\n").encode())
    code, err = _run(tmp_path, path.parent, capsys)
    assert code == cli.EXIT_ANOMALIES
    assert len(err) == 1, err
    first = header.index(f.LABEL_KEY) + 1
    assert str(path) in err[0] and "line 1" in err[0]
    assert f"'{f.LABEL_KEY}' appears twice (columns {first} and {len(header)})" in err[0]


def test_a_header_only_file_is_named(tmp_path, sample_rows, capsys):
    path = _write(
        tmp_path / "data", "trips.csv", _csv_text(sample_rows[:1]).split("\n")[0].encode() + b"\n"
    )
    code, err = _run(tmp_path, path.parent, capsys)
    assert code == cli.EXIT_ANOMALIES
    assert len(err) == 1 and str(path) in err[0] and "no data rows" in err[0], err


def test_a_byte_that_is_not_utf8_is_named_with_line_and_column(tmp_path, sample_rows, capsys):
    rows = [dict(r) for r in sample_rows[:ROWS]]
    columns = list(rows[0])
    text = _csv_text(rows, columns).encode()
    lines = text.split(b"\n")
    # Line 101 of the file (row 100): a Latin-1 "é" in the company name.
    lines[100] = lines[100].replace(b",", b",Caf\xe9 Cabs", 1)
    path = _write(tmp_path / "data", "trips.csv", b"\n".join(lines))
    code, err = _run(tmp_path, path.parent, capsys)
    assert code == cli.EXIT_ANOMALIES
    assert len(err) == 1, err
    assert str(path) in err[0] and "line 101" in err[0] and "(column 2)" in err[0]
    assert "not UTF-8" in err[0] and "0xE9" in err[0]


def test_a_field_over_the_csv_field_limit_is_named(tmp_path, sample_rows, capsys):
    rows = [dict(r) for r in sample_rows[:ROWS]]
    rows[41][f.COMPANY_KEY] = "x" * (csv.field_size_limit() + 10)
    path = _write(tmp_path / "data", "trips.csv", _csv_text(rows).encode())
    code, err = _run(tmp_path, path.parent, capsys)
    assert code == cli.EXIT_ANOMALIES
    column = list(rows[0]).index(f.COMPANY_KEY) + 1
    assert len(err) == 1, err
    assert f"{path}: line 43, column {column} ('{f.COMPANY_KEY}')" in err[0]
    assert "over the CSV field limit" in err[0]


def test_a_byte_order_mark_is_named(tmp_path, sample_rows, capsys):
    path = _write(
        tmp_path / "data", "trips.csv", b"\xef\xbb\xbf" + _csv_text(sample_rows[:ROWS]).encode()
    )
    code, err = _run(tmp_path, path.parent, capsys)
    assert code == cli.EXIT_ANOMALIES
    assert len(err) == 1 and str(path) in err[0] and "byte-order mark" in err[0], err


def test_files_with_different_headers_are_named(tmp_path, sample_rows, capsys):
    rows = sample_rows[:ROWS]
    columns = list(rows[0])
    _write(tmp_path / "data", "a.csv", _csv_text(rows, columns).encode())
    other = _write(tmp_path / "data", "b.csv", _csv_text(rows, columns[::-1]).encode())
    code, err = _run(tmp_path, other.parent, capsys)
    assert code == cli.EXIT_ANOMALIES
    assert len(err) == 1 and str(other) in err[0] and "header differs" in err[0], err


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_line_numbers_hold_across_read_chunks(tmp_path, sample_rows, monkeypatch, chunk):
    monkeypatch.setattr(data_checks, "_CHUNK_BYTES", chunk)
    rows = [dict(r) for r in sample_rows[:50]]
    good = _write(tmp_path, "good.csv", _csv_text(rows).encode())
    names, count = data_checks.check_csv_file(str(good))
    assert names == list(rows[0]) and count == 50
    lines = _csv_text(rows).encode().split(b"\n")
    lines[37] = b"\xff" + lines[37]
    bad = _write(tmp_path, "bad.csv", b"\n".join(lines))
    with pytest.raises(data_checks.DataCheckError, match=r"line 38, character 1 \(column 1\)"):
        data_checks.check_csv_file(str(bad))


def test_the_real_sample_passes(sample_csv):
    names, count = data_checks.check_csv_file(sample_csv)
    assert f.LABEL_KEY in names and count == 15_002


def test_only_the_latest_span_is_checked(tmp_path, sample_rows):
    from pipeline.config import load_config

    rows = sample_rows[:20]
    _write(tmp_path / "trips" / "span-1", "part-0.csv", b"\xff not even text")
    _write(tmp_path / "trips" / "span-2", "part-0.csv", _csv_text(rows).encode())
    _write(tmp_path / "trips" / "span-2", "part-1.csv", _csv_text(rows).encode())
    cfg = load_config(
        "configs/smoke.yaml", [f"data.input={tmp_path / 'trips'}", "data.pattern=span-{SPAN}/*.csv"]
    )
    files = data_checks.input_files(cfg, cfg.data.input)
    assert [Path(p).relative_to(tmp_path / "trips") for p in files] == [
        Path("span-2/part-0.csv"),
        Path("span-2/part-1.csv"),
    ]
    assert data_checks.check_input_report(cfg, cfg.data.input).rows == 40


def _window_data(tmp_path: Path, sample_rows, older: bytes) -> Path:
    data = tmp_path / "trips"
    _write(data / "span-1", "part-0.csv", _csv_text(sample_rows[:20]).encode())
    _write(data / "span-2", "part-0.csv", older)
    _write(data / "span-3", "part-0.csv", _csv_text(sample_rows[20:40]).encode())
    return data


@pytest.mark.parametrize(
    ("older", "expected"),
    [
        (b"\xff not even text", "span-2/part-0.csv: line 1"),
        ("HEADER_ONLY", "span-2/part-0.csv: a header line and no data rows"),
        ("NO_FARE", "no column 'fare'"),
    ],
)
def test_every_span_of_a_training_window_is_checked(tmp_path, sample_rows, older, expected):
    # data.train_spans: 2 reads span 2 with an ExampleGen of its own: its faults must stop
    # the run before anything runs, as the newest span's do.
    from pipeline.config import load_config

    if older == "NO_FARE":
        columns = [c for c in sample_rows[0] if c != f.LABEL_KEY]
        older = _csv_text(sample_rows[:20], columns).encode()
    elif older == "HEADER_ONLY":
        older = _csv_text(sample_rows[:1]).splitlines(keepends=True)[0].encode()
    data = _window_data(tmp_path, sample_rows, older)
    overrides = [f"data.input={data}", "data.pattern=span-{SPAN}/*.csv"]
    window = load_config("configs/smoke.yaml", [*overrides, "data.train_spans=2"])
    with pytest.raises(data_checks.DataCheckError, match=expected.replace(".", r"\.")):
        data_checks.check_input_report(window, str(data))
    # Outside the window (one span, or a window of two that ends before it) it is no concern.
    single = load_config("configs/smoke.yaml", overrides)
    assert data_checks.check_input_report(single, str(data)).rows == 20


def test_the_newest_spans_rows_and_duplicates_are_reported_for_a_window(tmp_path, sample_rows):
    from pipeline.config import load_config

    data = _window_data(tmp_path, sample_rows, _csv_text(sample_rows[:20] * 2).encode())
    cfg = load_config(
        "configs/smoke.yaml",
        [f"data.input={data}", "data.pattern=span-{SPAN}/*.csv", "data.train_spans=3"],
    )
    report = data_checks.check_input_report(cfg, str(data))
    # The summary's share is of the newest span's rows (FareFilter's count).
    assert (report.rows, report.duplicate_rows, report.files) == (20, 0, 1)
    assert [len(files) for files in data_checks.earlier_window_files(cfg, str(data))] == [1, 1]


@pytest.mark.parametrize("column", [f.LABEL_KEY, f.TIMESTAMP_KEY, f.COMPANY_KEY])
def test_a_missing_required_column_is_named_before_anything_runs(
    tmp_path, sample_rows, capsys, column
):
    columns = [c for c in sample_rows[0] if c != column]
    _write(tmp_path / "data", "trips.csv", _csv_text(sample_rows[:ROWS], columns).encode())
    code, err = _run(tmp_path, tmp_path / "data", capsys)
    assert code == cli.EXIT_ANOMALIES
    assert len(err) == 1 and f"no column {column!r}" in err[0] and "trips.csv: line 1" in err[0]


def test_the_required_columns_are_the_schemas_less_the_deprecated_ones():
    from pipeline.config import load_config

    required = data_checks.required_columns(load_config("configs/smoke.yaml"))
    assert {f.LABEL_KEY, f.HOUR_KEY, f.COMPANY_KEY, f.DROPOFF_LATITUDE_KEY} <= set(required)
    assert not set(required) & set(f.IGNORED_KEYS)  # census tracts: DEPRECATED
    inferred = load_config("configs/smoke.yaml", ["schema.source=inferred"])
    assert data_checks.required_columns(inferred) == []


def test_an_empty_newest_span_folder_stops_the_run_instead_of_using_the_one_before(
    tmp_path, sample_rows, capsys
):
    data = tmp_path / "data"
    _write(data / "span-201611", "trips.csv", _csv_text(sample_rows[:ROWS]).encode())
    (data / "span-201612").mkdir()
    root = tmp_path / "root"
    code = cli.main(
        ["run", "--config", "configs/smoke.yaml", "--set", f"root={root}", "--set",
         f"data.input={data}", "--set", "data.pattern=span-{SPAN}/*.csv"]
    )  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == cli.EXIT_ANOMALIES
    assert len(err) == 1 and "span-201612" in err[0] and "would read span 201611" in err[0]
    assert not (root / "metadata.sqlite").exists()


def test_an_older_empty_span_folder_is_no_concern(tmp_path, sample_rows):
    from pipeline.config import load_config

    data = tmp_path / "data"
    _write(data / "span-201612", "trips.csv", _csv_text(sample_rows[:ROWS]).encode())
    (data / "span-201611").mkdir()
    cfg = load_config(
        "configs/smoke.yaml", [f"data.input={data}", "data.pattern=span-{SPAN}/*.csv"]
    )
    files = data_checks.input_files(cfg, str(data))
    assert [Path(p).parent.name for p in files] == ["span-201612"]


def test_exact_duplicate_rows_are_counted_across_files_and_warned_about(
    tmp_path, sample_rows, capsys
):
    from pipeline.config import load_config

    rows = sample_rows[:ROWS]
    data = tmp_path / "data"
    _write(data, "a.csv", _csv_text(rows).encode())
    # A second file re-sends 90 of the first file's trips (30%), one of them twice.
    _write(data, "b.csv", _csv_text(rows[:90] + rows[:1]).encode())
    cfg = load_config("configs/smoke.yaml", [f"data.input={data}"])
    report = data_checks.check_input_report(cfg, str(data))
    assert report.rows == ROWS + 91 and report.duplicate_rows == 91
    args = cli.build_parser().parse_args(
        ["run", "--config", "configs/smoke.yaml", "--set", f"data.input={data}",
         "--set", f"root={tmp_path / 'root'}"]
    )  # fmt: skip
    plan = cli._plan(args)
    assert plan.input == report
    err = capsys.readouterr().err
    assert "91 of 391 rows (23.3%) repeat another row exactly" in err
    args.overrides.append("data.warn_duplicate_share=0.5")
    assert cli._plan(args).input == report and "repeat" not in capsys.readouterr().err


def test_the_sample_has_no_duplicate_rows(tmp_path):
    from pipeline.config import load_config
    from pipeline.data_source import resolve_input

    cfg = load_config("configs/local.yaml")
    report = data_checks.check_input_report(cfg, resolve_input(cfg))
    assert report.rows == 15_002 and report.duplicate_rows == 0


def test_the_summary_says_how_many_rows_repeat_and_warns_above_the_share():
    from pipeline.config import load_config
    from pipeline.summary import RunSummary, render

    cfg = load_config("configs/smoke.yaml")
    summary = RunSummary(components={}, durations={}, rows_read=1000, rows_excluded=0)
    summary.duplicate_rows = 300
    text = render(summary, cfg)
    assert "WARNING: 300 rows (30.0%) repeat another row exactly" in text
    summary.duplicate_rows = 5
    text = render(summary, cfg)
    assert "5 rows (0.5%) repeat" in text and "WARNING" not in text
