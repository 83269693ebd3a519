"""Vertex's request-response logs read as a `taxifare serve` request log.

The rows are built from real trips of the sample in the format of Vertex's logging table
exported with `bq extract --destination_format NEWLINE_DELIMITED_JSON`; the BigQuery path
runs the real BigQuery client against a table served on loopback through the REST API the
client speaks (BIGQUERY_EMULATOR_HOST), since a real table needs Google Cloud.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.monitoring.stats import InputError, serving_statistics
from pipeline.monitoring.vertex_log import convert_vertex_log, is_vertex_log
from pipeline.serving.client import csv_row_to_instance
from pipeline.serving.request_log import read_request_log, request_log_files
from taxifare_modules import features as f
from tests.monitoring.conftest import PER_REQUEST, write_log
from tests.trips import row_to_example

ENDPOINT = "projects/123456789/locations/us-central1/endpoints/4242"
DEPLOYED_MODEL_ID = "7788990011223344"
LOGGING_TIME = "2026-12-01 10:15:30.25 UTC"
LOGGING_TIME_MS = 1_796_120_130_250


def _fares(instances: list) -> list[float]:
    # Any answer will do for the statistics of the raw fields; distinct values show that each
    # instance keeps its own.
    return [round(5.0 + 0.25 * i, 2) for i in range(len(instances))]


def vertex_row(instances: list, request_id: int, fares: list | None = None) -> dict:
    """One logged request as `bq extract` writes a row of Vertex's logging table."""
    fares = _fares(instances) if fares is None else fares
    return {
        "endpoint": ENDPOINT,
        "deployed_model_id": DEPLOYED_MODEL_ID,
        "logging_time": LOGGING_TIME,
        "request_id": str(request_id),
        "request_payload": [json.dumps({"instances": instances})],
        "response_payload": [json.dumps({"predictions": fares})],
    }


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _b64(row: dict[str, str]) -> dict[str, str]:
    return {"b64": base64.b64encode(row_to_example(row)).decode()}


def _requests(served_rows: list[dict[str, str]]) -> tuple[list[list], list[dict]]:
    """The served trips as requests of PER_REQUEST instances, every other one as tf.Examples;
    and the trips as the server would log them."""
    requests = []
    for n, start in enumerate(range(0, len(served_rows), PER_REQUEST)):
        chunk = served_rows[start : start + PER_REQUEST]
        if n % 2:
            requests.append([_b64(r) for r in chunk])
        else:
            requests.append([csv_row_to_instance(r) for r in chunk])
    return requests, [csv_row_to_instance(r) for r in served_rows]


def _exact_part(feature):
    """A feature's statistics without the float sums whose last bits depend on Beam's order."""
    copy = type(feature)()
    copy.CopyFrom(feature)
    if copy.HasField("num_stats"):  # (touching num_stats otherwise would drop string_stats)
        copy.num_stats.ClearField("mean")
        copy.num_stats.ClearField("std_dev")
    return copy


@pytest.mark.slow
def test_converted_log_has_the_statistics_of_the_same_requests_logged_by_the_server(
    served_rows, tmp_path
):
    requests, trips = _requests(served_rows)
    export = write_jsonl(
        tmp_path / "rows.jsonl", [vertex_row(r, 1000 + i) for i, r in enumerate(requests)]
    )
    assert is_vertex_log(export)
    converted = str(tmp_path / "converted")
    assert convert_vertex_log(export, converted) == len(served_rows)
    direct = str(tmp_path / "direct")
    write_log(direct, trips)

    got = serving_statistics(converted, str(tmp_path)).datasets[0]
    want = serving_statistics(direct, str(tmp_path)).datasets[0]
    assert got.num_examples == want.num_examples == len(served_rows)
    got_features = {x.path.step[0]: x for x in got.features}
    want_features = {x.path.step[0]: x for x in want.features}
    assert set(got_features) == set(want_features) == set(f.RAW_FEATURE_KEYS)
    for key in f.RAW_FEATURE_KEYS:
        got_feature, want_feature = _exact_part(got_features[key]), _exact_part(want_features[key])
        # Counts, missing, min/max, value frequencies, histograms and quantiles: all the same.
        assert got_feature == want_feature, key
        assert got_feature.WhichOneof("stats") == want_feature.WhichOneof("stats") is not None
        # Means and deviations up to the order in which Beam summed the values.
        for field in ("mean", "std_dev") if want_features[key].HasField("num_stats") else ():
            got_value = getattr(got_features[key].num_stats, field)
            want_value = getattr(want_features[key].num_stats, field)
            assert got_value == pytest.approx(want_value, rel=1e-12, abs=1e-12), (key, field)
    # The optional fields really are missing in part of the real trips.
    company = want_features[f.COMPANY_KEY].string_stats.common_stats
    assert 0 < company.num_non_missing < len(served_rows)


def test_records_carry_the_rows_bookkeeping(sample_rows, tmp_path):
    rows = sample_rows[:3]
    json_request = [csv_row_to_instance(r) for r in rows]
    b64_request = [_b64(r) for r in rows[:2]]
    export = write_jsonl(
        tmp_path / "rows.jsonl",
        [
            vertex_row(json_request, 31, fares=[[9.5], [10.5], [11.5]]),
            {
                **vertex_row(b64_request, 32, fares=[{f.PREDICTION_KEY: 7.0}, 8.0]),
                "deployed_model_id": "not-a-number",
            },
        ],
    )
    out = str(tmp_path / "out")
    assert convert_vertex_log(export, out) == 5
    records = list(read_request_log(out))
    assert len(records) == 5

    def value(example, key):
        feature = example.features.feature[key]
        return getattr(feature, feature.WhichOneof("kind")).value[0]

    assert [value(r, f.PREDICTION_KEY) for r in records] == [9.5, 10.5, 11.5, 7.0, 8.0]
    assert [value(r, "model_version") for r in records] == [int(DEPLOYED_MODEL_ID)] * 3 + [0, 0]
    assert [value(r, "request_id") for r in records] == [b"31"] * 3 + [b"32"] * 2
    assert [value(r, "instance_index") for r in records] == [0, 1, 2, 0, 1]
    assert {value(r, "request_timestamp_ms") for r in records} == {LOGGING_TIME_MS}
    assert [value(r, "signature_name") for r in records] == [
        f.SERVING_DEFAULT_SIGNATURE.encode()
    ] * 3 + [f.SERVING_TF_EXAMPLE_SIGNATURE.encode()] * 2
    # The b64 instance's trip is the same trip as the JSON one.
    for key in f.RAW_FEATURE_KEYS:
        assert (key in records[0].features.feature) == (key in records[3].features.feature)
        if key in records[0].features.feature:
            assert value(records[0], key) == value(records[3], key), key


def test_sentinels_the_endpoint_needs_are_logged_as_missing(sample_rows, tmp_path):
    # TF Serving on Vertex takes every field: an unknown one is sent as its sentinel.
    row = next(r for r in sample_rows if r[f.COMPANY_KEY] and r[f.PICKUP_AREA_KEY])
    sent = {**csv_row_to_instance(row), f.COMPANY_KEY: "", f.PICKUP_AREA_KEY: -1}
    export = write_jsonl(tmp_path / "rows.jsonl", [vertex_row([sent], 1)])
    assert convert_vertex_log(export, str(tmp_path / "out")) == 1
    (record,) = read_request_log(str(tmp_path / "out"))
    assert f.COMPANY_KEY not in record.features.feature
    assert f.PICKUP_AREA_KEY not in record.features.feature
    assert f.HOUR_KEY in record.features.feature


def test_payload_split_over_strings_or_one_instance_per_string(sample_rows, tmp_path):
    instances = [csv_row_to_instance(r) for r in sample_rows[:4]]
    body = json.dumps({"instances": instances, "parameters": {}})
    split = {**vertex_row(instances, 1), "request_payload": [body[:100], body[100:]]}
    per_instance = {
        **vertex_row(instances, 2),
        "request_payload": [json.dumps(i) for i in instances],
        "response_payload": [json.dumps(x) for x in _fares(instances)],
    }
    export = write_jsonl(tmp_path / "rows.jsonl", [split, per_instance])
    assert convert_vertex_log(export, str(tmp_path / "out")) == 8


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "rows.jsonl:2: not a JSON object"),
        ('["a", "list"]', "rows.jsonl:2: expected a JSON object"),
        ('{"response_payload": ["{}"]}', "rows.jsonl:2: request_payload must be a non-empty"),
        ('{"request_payload": ["{\\"instances\\": ["]}', "rows.jsonl:2: request_payload is not"),
        ("UNKNOWN_FIELD", "rows.jsonl:2: request_payload: instances[1]: unknown field 'colour'"),
        ("BAD_B64", "rows.jsonl:2: request_payload: instances[0].b64: invalid base64"),
        ("FEW_FARES", "rows.jsonl:2: response_payload has 1 predictions for 2 instances"),
        ("TEXT_FARE", "rows.jsonl:2: response_payload prediction 0 is not a number"),
        ("BAD_TIME", "rows.jsonl:2: logging_time 'yesterday' is not a timestamp"),
    ],
)
def test_malformed_row_names_file_and_line_and_leaves_nothing(sample_rows, tmp_path, line, message):
    good = vertex_row([csv_row_to_instance(r) for r in sample_rows[:2]], 1)
    instances = [csv_row_to_instance(r) for r in sample_rows[2:4]]
    bad = {
        "UNKNOWN_FIELD": vertex_row([instances[0], {**instances[1], "colour": "red"}], 2),
        "BAD_B64": vertex_row([{"b64": "%%%"}], 2),
        "FEW_FARES": vertex_row(instances, 2, fares=[1.0]),
        "TEXT_FARE": vertex_row(instances, 2, fares=["cheap", 2.0]),
        "BAD_TIME": {**vertex_row(instances, 2), "logging_time": "yesterday"},
    }
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(good) + "\n" + (json.dumps(bad[line]) if line in bad else line))
    out = tmp_path / "out"
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        convert_vertex_log(str(path), str(out))
    # The good first row was not left behind as a partial log.
    assert request_log_files(str(out)) == []


def test_unanswered_requests_are_left_out_with_a_warning(sample_rows, tmp_path, caplog):
    instances = [csv_row_to_instance(r) for r in sample_rows[:3]]
    unanswered = vertex_row(instances, 2)
    del unanswered["response_payload"]  # NULL columns are left out of the export
    export = write_jsonl(tmp_path / "rows.jsonl", [vertex_row(instances, 1), unanswered])
    assert convert_vertex_log(export, str(tmp_path / "out")) == 3
    assert "1 logged request(s) had no response" in caplog.text
    only_unanswered = write_jsonl(tmp_path / "none.jsonl", [unanswered])
    with pytest.raises(InputError, match="holds no answered requests"):
        convert_vertex_log(only_unanswered, str(tmp_path / "out2"))


def test_missing_and_empty_locations(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        convert_vertex_log(str(tmp_path / "nope.jsonl"), str(tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="holds no .jsonl"):
        convert_vertex_log(str(tmp_path / "empty"), str(tmp_path / "out"))
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="blank.jsonl holds no logged requests"):
        convert_vertex_log(str(tmp_path / "blank.jsonl"), str(tmp_path / "out"))
    with pytest.raises(InputError, match="no files match"):
        convert_vertex_log(str(tmp_path / "export-*.jsonl"), str(tmp_path / "out"))
    with pytest.raises(InputError, match=r"bq://project.dataset.table"):
        convert_vertex_log("bq://my-project.only_dataset", str(tmp_path / "out"))


def test_is_vertex_log_tells_exports_from_request_logs(sample_rows, tmp_path):
    assert is_vertex_log("bq://my-gcp-project.logging_taxifare_4242.request_response_logging")
    # A bare table name could be a folder's: only bq:// names a table.
    assert not is_vertex_log("my-gcp-project.logs.requests")
    assert is_vertex_log(str(tmp_path / "export" / "*.jsonl"))
    assert is_vertex_log("gs://bucket/export/rows-000000000000.json.gz")
    export = tmp_path / "export"
    export.mkdir()
    write_jsonl(export / "rows-000.json", [vertex_row([csv_row_to_instance(sample_rows[0])], 1)])
    assert is_vertex_log(str(export)) and is_vertex_log(str(export) + "/")
    request_log = tmp_path / "requests"
    write_log(str(request_log), [csv_row_to_instance(sample_rows[0])])
    assert not is_vertex_log(str(request_log))
    assert not is_vertex_log(str(tmp_path / "nope"))
    # A folder of both is the server's request log (the TFRecord reader takes it).
    write_jsonl(request_log / "stray.jsonl", [])
    assert not is_vertex_log(str(request_log))


def test_export_on_a_non_local_filesystem_gzipped(sample_rows, tmp_path):
    import tensorflow as tf

    requests, trips = _requests(sample_rows[:200])
    folder = "ram://vertex-export/run-1"
    tf.io.gfile.makedirs(folder)
    lines = [json.dumps(vertex_row(r, i)) + "\n" for i, r in enumerate(requests)]
    half = len(lines) // 2
    # As `bq extract` writes a large table: several files, here one of them gzipped.
    with tf.io.gfile.GFile(f"{folder}/rows-000.json", "w") as fh:
        fh.write("".join(lines[:half]))
    with tf.io.gfile.GFile(f"{folder}/rows-001.json.gz", "wb") as fh:
        fh.write(gzip.compress("".join(lines[half:]).encode()))
    assert is_vertex_log(folder)
    out = str(tmp_path / "out")
    assert convert_vertex_log(folder, out) == 200
    records = list(read_request_log(out))
    for record, trip in zip(records, trips, strict=True):
        assert set(record.features.feature) - {
            "predicted_fare",
            "model_version",
            "request_id",
            "request_timestamp_ms",
            "instance_index",
            "signature_name",
        } == set(trip)
    # A damaged line on that filesystem is named by its path there.
    with tf.io.gfile.GFile(f"{folder}/rows-002.json", "w") as fh:
        fh.write("\n\n{oops\n")
    with pytest.raises(InputError, match=f"{folder}/rows-002.json:3: not a JSON object"):
        convert_vertex_log(folder, str(tmp_path / "out2"))


def test_bigquery_without_credentials_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    # No gcloud configuration and no metadata server to fall back on.
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    with pytest.raises(InputError, match="no Google Cloud credentials"):
        convert_vertex_log("bq://my-gcp-project.logs.requests", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# The schema of Vertex's request-response logging table (v1), as tables.get returns it.
_SCHEMA = [
    {"name": "endpoint", "type": "STRING", "mode": "NULLABLE"},
    {"name": "deployed_model_id", "type": "STRING", "mode": "NULLABLE"},
    {"name": "logging_time", "type": "TIMESTAMP", "mode": "NULLABLE"},
    {"name": "request_id", "type": "NUMERIC", "mode": "NULLABLE"},
    {"name": "request_payload", "type": "STRING", "mode": "REPEATED"},
    {"name": "response_payload", "type": "STRING", "mode": "REPEATED"},
]


class _BigQueryTables(BaseHTTPRequestHandler):
    """tables.get and tabledata.list of BigQuery's REST API for one table of rows; with an
    `engine` (a callable taking BigQuery SQL and returning rows as dicts), jobs.query too,
    answered in one page, each query text kept in `queries` and its job labels in `labels`."""

    table_path = "/bigquery/v2/projects/my-gcp-project/datasets/logs/tables/requests"
    queries_path = "/bigquery/v2/projects/my-gcp-project/queries"
    rows: list[dict] = []
    page_size = 7
    engine = None
    queries: list[str] = []
    labels: list[dict] = []

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's interface
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == self.table_path:
            reference = {"projectId": "my-gcp-project", "datasetId": "logs", "tableId": "requests"}
            self._send(200, {"tableReference": reference, "schema": {"fields": _SCHEMA}})
        elif url.path == self.table_path.replace("requests", "prompts"):
            # A logging table of another kind: no request_payload column.
            reference = {"projectId": "my-gcp-project", "datasetId": "logs", "tableId": "prompts"}
            fields = [{"name": "full_request", "type": "JSON", "mode": "NULLABLE"}]
            self._send(200, {"tableReference": reference, "schema": {"fields": fields}})
        elif url.path == self.table_path + "/data":
            names = query["selectedFields"][0].split(",")
            start = int(query.get("pageToken", ["0"])[0])
            page = self.rows[start : start + self.page_size]
            body = {"totalRows": str(len(self.rows)), "rows": [self._row(r, names) for r in page]}
            if start + self.page_size < len(self.rows):
                body["pageToken"] = str(start + self.page_size)
            self._send(200, body)
        else:
            self._send(404, {"error": {"code": 404, "message": f"Not found: {url.path}"}})

    def do_POST(self) -> None:  # noqa: N802 - http.server's interface
        if self.path.split("?")[0] != self.queries_path or self.engine is None:
            self._send(404, {"error": {"code": 404, "message": f"Not found: {self.path}"}})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.queries.append(body["query"])
        self.labels.append(body.get("labels", {}))
        rows = type(self).engine(body["query"])
        names = [field["name"] for field in _SCHEMA]
        reference = {"projectId": "my-gcp-project", "jobId": f"job-{len(self.queries)}"}
        self._send(
            200,
            {
                "kind": "bigquery#queryResponse",
                "jobComplete": True,
                "jobReference": {**reference, "location": "US"},
                "schema": {"fields": _SCHEMA},
                "totalRows": str(len(rows)),
                "rows": [self._row(r, names) for r in rows],
            },
        )

    @staticmethod
    def _row(row: dict, names: list[str]) -> dict:
        cells = []
        for name in names:
            value = row.get(name)
            if isinstance(value, list):
                cells.append({"v": [{"v": v} for v in value]})
            elif name == "logging_time":
                cells.append({"v": str(_micros(value))})  # int64 microseconds
            elif value is not None:
                cells.append({"v": str(value)})
            else:
                cells.append({"v": None})
        return {"f": cells}


def _micros(value) -> int:
    """A row's logging_time as BigQuery's REST API sends it (int64 microseconds)."""
    import datetime as dt

    if isinstance(value, dt.datetime):
        return round(value.timestamp() * 1_000_000)
    return LOGGING_TIME_MS * 1000


@contextlib.contextmanager
def bigquery_on_loopback(monkeypatch, rows: list[dict], engine=None) -> Iterator[type]:
    """The table `bq://my-gcp-project.logs.requests` of `rows` on a loopback server the real
    BigQuery client is pointed at (BIGQUERY_EMULATOR_HOST); yields the handler class, whose
    `queries` lists the query texts received."""
    handler = type(
        "Tables",
        (_BigQueryTables,),
        {"rows": rows, "engine": engine, "queries": [], "labels": []},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"http://127.0.0.1:{server.server_port}")
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def test_bigquery_table_through_the_bigquery_client(served_rows, tmp_path, monkeypatch):
    requests, _ = _requests(served_rows[:300])
    rows = [vertex_row(r, 500 + i) for i, r in enumerate(requests)]
    with bigquery_on_loopback(monkeypatch, rows):
        from_table = str(tmp_path / "from_table")
        count = convert_vertex_log("bq://my-gcp-project.logs.requests", from_table)
        from_file = str(tmp_path / "from_file")
        convert_vertex_log(write_jsonl(tmp_path / "rows.jsonl", rows), from_file)
        with pytest.raises(InputError, match="no such BigQuery table"):
            convert_vertex_log("bq://my-gcp-project.logs.other", str(tmp_path / "other"))
        with pytest.raises(InputError, match="not a Vertex request-response logging table"):
            convert_vertex_log("bq://my-gcp-project.logs.prompts", str(tmp_path / "prompts"))
    assert count == 300
    # The table and its export give the same log, record for record.
    table_records = list(read_request_log(from_table))
    file_records = list(read_request_log(from_file))
    assert len(table_records) == 300
    assert table_records == file_records


@pytest.mark.slow
def test_skew_on_the_export_gives_the_verdict_of_the_same_requests_logged_by_the_server(
    served_rows, training_stats_file, tmp_path
):
    """`taxifare skew --serving-logs <export.jsonl>` judges exactly what the server's own log
    of the same requests is judged to be."""
    from pipeline.monitoring.cli import EXIT_OK, main

    requests, trips = _requests(served_rows)
    export = write_jsonl(
        tmp_path / "rows.jsonl", [vertex_row(r, 1000 + i) for i, r in enumerate(requests)]
    )
    direct = str(tmp_path / "direct")
    write_log(direct, trips)
    verdicts = {}
    for name, log in (("export", export), ("direct", direct)):
        out = tmp_path / f"out-{name}"
        code = main(
            ["skew", "--serving-logs", log, "--training-stats", training_stats_file]
            + ["--out", str(out)]
        )
        assert code == EXIT_OK
        verdicts[name] = json.loads((out / "verdict.json").read_text())
    assert verdicts["export"]["sides"]["serving"]["source"].startswith("Vertex request-response")
    for got, want in zip(
        verdicts["export"]["features"], verdicts["direct"]["features"], strict=True
    ):
        assert got["name"] == want["name"]
        assert got["distance"] == pytest.approx(want["distance"], abs=1e-9), got["name"]
        assert got["presence"] == pytest.approx(want["presence"], abs=1e-9), got["name"]
