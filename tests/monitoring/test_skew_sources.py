"""The skew check's serving side read from Vertex's request-response logging table.

BigQuery cannot be reached from here. The table is held by DuckDB in the format Vertex logs
(schema v1: see pipeline/monitoring/vertex_log.py), the query SkewCheck builds is transpiled
from BigQuery SQL to DuckDB by sqlglot and run there, and the real BigQuery client sends it
(jobs.query) to a loopback server answering through that DuckDB table, as it would send it
to BigQuery. Not run: a query sent to BigQuery itself, its IAM and its paging of large
results.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import duckdb
import pytest
import sqlglot

from pipeline.components import monitoring as mon
from pipeline.config import ConfigError, load_config
from pipeline.monitoring.stats import InputError, load_statistics_file, serving_statistics
from pipeline.monitoring.thresholds import default_thresholds, thresholds_to_json
from pipeline.monitoring.vertex_log import COLUMNS, convert_vertex_log, last_days, window_query
from taxifare_modules import features as f
from tests.monitoring.test_components_on_remote_fs import (  # noqa: F401
    _artifact,
    _read_json,
    _run,
    _schema,
    _statistics,
    assert_workers_can_read,
    beam_reads_ram,
    ram,
)
from tests.monitoring.test_vertex_log import (
    _exact_part,
    _requests,
    bigquery_on_loopback,
    vertex_row,
)

TABLE = "bq://my-gcp-project.logs.requests"
# Vertex's logging table (schema v1), BigQuery types as DuckDB's.
TABLE_COLUMNS = {
    "endpoint": "VARCHAR",
    "deployed_model_id": "VARCHAR",
    "logging_time": "TIMESTAMPTZ",
    "request_id": "DECIMAL(38, 9)",  # BigQuery's NUMERIC
    "request_payload": "VARCHAR[]",  # REPEATED STRING
    "response_payload": "VARCHAR[]",
}
NOW = dt.datetime(2026, 12, 8, 12, 0, tzinfo=dt.timezone.utc)


def logging_table(rows: list[dict]) -> duckdb.DuckDBPyConnection:
    """DuckDB holding `rows` as `my-gcp-project`.logs.requests; logging_time a datetime."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # BigQuery's TIMESTAMP is UTC
    con.execute("ATTACH ':memory:' AS \"my-gcp-project\"")
    con.execute('CREATE SCHEMA "my-gcp-project".logs')
    columns = ", ".join(f"{name} {kind}" for name, kind in TABLE_COLUMNS.items())
    con.execute(f'CREATE TABLE "my-gcp-project".logs.requests ({columns})')
    for row in rows:
        con.execute(
            'INSERT INTO "my-gcp-project".logs.requests VALUES (?, ?, ?, ?, ?, ?)',
            [row.get(name) for name in TABLE_COLUMNS],
        )
    return con


def run_bigquery_sql(con: duckdb.DuckDBPyConnection, query: str) -> list[dict]:
    """A BigQuery query run on DuckDB (sqlglot's transpilation), rows as dicts."""
    result = con.execute(sqlglot.transpile(query, read="bigquery", write="duckdb")[0])
    names = [column[0] for column in result.description]
    return [dict(zip(names, values, strict=True)) for values in result.fetchall()]


def timed(rows: list[dict], times: list[dt.datetime]) -> list[dict]:
    return [{**row, "logging_time": t} for row, t in zip(rows, times, strict=True)]


def test_the_window_query_keeps_the_newest_rows_of_the_window(sample_rows):
    from pipeline.serving.client import csv_row_to_instance

    instance = [csv_row_to_instance(sample_rows[0])]
    window = last_days(7, 3, now=NOW)
    times = [
        NOW - dt.timedelta(days=9),  # before the window
        NOW - dt.timedelta(days=7),  # its first moment
        NOW - dt.timedelta(days=2),
        NOW - dt.timedelta(hours=5),
        NOW - dt.timedelta(minutes=1),
        NOW,  # the window ends before now: a retry reads the same rows
        NOW + dt.timedelta(hours=1),
    ]
    rows = timed([vertex_row(instance, 100 + i) for i in range(len(times))], times)
    query = window_query(TABLE, window)
    assert query.startswith(f"SELECT {', '.join(COLUMNS)}\nFROM `my-gcp-project.logs.requests`")
    assert "TIMESTAMP '2026-12-01 12:00:00.000000+00'" in query
    got = run_bigquery_sql(logging_table(rows), query)
    # Newest first, three at most, inside [now - 7 days, now).
    assert [r["request_id"] for r in got] == [Decimal(104), Decimal(103), Decimal(102)]
    assert [r["logging_time"] for r in got] == times[4:1:-1]
    assert got[0]["request_payload"] == rows[4]["request_payload"]
    wider = run_bigquery_sql(logging_table(rows), window_query(TABLE, last_days(7, 10, NOW)))
    assert [int(r["request_id"]) for r in wider] == [104, 103, 102, 101]
    with pytest.raises(InputError, match="bq://project.dataset.table"):
        window_query("bq://my-gcp-project.requests", window)


def _table_rows(served_rows: list[dict], now: dt.datetime) -> tuple[list[dict], list[dict]]:
    """Vertex's rows of the served trips (one row a request): all of them, and the ones a
    7-day window of at most 20 rows keeps (the newest 20 of the 22 logged in the week)."""
    requests, _ = _requests(served_rows)
    assert len(requests) == 24
    times = [now - dt.timedelta(minutes=10 * (i + 1)) for i in range(22)]
    times += [now - dt.timedelta(days=8, minutes=i) for i in range(2)]
    rows = timed([vertex_row(r, 1000 + i) for i, r in enumerate(requests)], times)
    return rows, rows[:20]


@pytest.mark.slow
def test_skew_check_reads_the_table_window_as_the_cli_reads_those_rows(
    served_rows,
    training_stats_file,
    tmp_path,
    monkeypatch,
    beam_reads_ram,  # noqa: F811
):
    """The SkewCheck task of the compiled Vertex spec, pointed at the endpoint's logging
    table, sends its query through the real BigQuery client; the rows it reads give the
    statistics `taxifare skew --serving-logs bq://...` computes from the same rows."""
    from pipeline.vertex.compiler import compile_pipeline
    from tests.vertex.test_compile import VERTEX, _params

    cfg = load_config(
        VERTEX, [f"monitoring.skew.serving_logs={TABLE}", "monitoring.skew.max_rows=20"]
    )
    compile_pipeline(cfg, tmp_path / "spec.json")
    params = _params(json.loads((tmp_path / "spec.json").read_text()), "SkewCheck")
    assert params["serving_logs"] == TABLE
    # Integers travel as strings in the spec's JSON; the Vertex entrypoint types them.
    assert (int(params["window_days"]), int(params["max_rows"])) == (7, 20)
    assert json.loads(params["query_labels"]) == dict(cfg.vertex.labels) == {"app": "taxifare"}
    params.update(window_days=7, max_rows=20)

    rows, kept = _table_rows(served_rows, dt.datetime.now(dt.timezone.utc))
    engine = logging_table(rows)
    root = f"ram://b{uuid.uuid4().hex[:8]}/root"
    verdict_artifact = _artifact(mon.SkewVerdict, f"{root}/skew")
    with bigquery_on_loopback(
        monkeypatch, kept, engine=lambda query: run_bigquery_sql(engine, query)
    ) as bigquery:
        _run(
            mon.SkewCheck,
            {
                "statistics": _statistics(
                    root, f"stats-{uuid.uuid4().hex[:6]}", training_stats_file
                ),
                "schema": _schema(root),
            },
            {"verdict": verdict_artifact},
            params,
        )
        # The CLI's path: the same rows, listed (tabledata.list), converted and counted.
        cli_log = str(tmp_path / "cli-log")
        convert_vertex_log(TABLE, cli_log)
    cli = serving_statistics(cli_log, str(tmp_path)).datasets[0]

    (query,) = bigquery.queries
    # The query job carries the config's labels, as every billed job of a run does.
    assert bigquery.labels == [{"app": "taxifare"}]
    assert query == verdict_artifact.get_string_custom_property(mon.QUERY_PROPERTY)
    assert query.endswith("LIMIT 20")
    verdict = _read_json(f"{verdict_artifact.uri}/verdict.json")
    assert verdict["verdict"] == "no_skew", verdict["failed_features"]
    assert verdict["sides"]["serving"]["examples"] == 20 * 50
    assert verdict["sides"]["serving"]["source"].startswith(f"Vertex request-response log {TABLE}")
    # The statistics pass ran on the root (Dataflow's workers read it), not this disk.
    assert_workers_can_read(beam_reads_ram, verdict_artifact.uri)
    assert beam_reads_ram[0]["data_location"] == f"{verdict_artifact.uri}/serving_log/*"

    stats_file = f"{verdict_artifact.uri}/{mon.SERVING_STATISTICS_DIR}/FeatureStats.pb"
    step = load_statistics_file(stats_file).datasets[0]
    assert step.num_examples == cli.num_examples == 1000
    step_features = {x.path.step[0]: x for x in step.features}
    cli_features = {x.path.step[0]: x for x in cli.features}
    assert set(step_features) == set(cli_features) == set(f.RAW_FEATURE_KEYS)
    for key in f.RAW_FEATURE_KEYS:
        assert _exact_part(step_features[key]) == _exact_part(cli_features[key]), key
        if cli_features[key].HasField("num_stats"):
            for field in ("mean", "std_dev"):
                got = getattr(step_features[key].num_stats, field)
                want = getattr(cli_features[key].num_stats, field)
                assert got == pytest.approx(want, rel=1e-12, abs=1e-12), (key, field)


def _skew_on_table(root: str, training_stats_file: str, model: bool, table: str = TABLE) -> dict:
    from tfx.types import standard_artifacts

    root = f"{root}/{uuid.uuid4().hex[:6]}"  # one run's artifacts
    verdict_artifact = _artifact(mon.SkewVerdict, f"{root}/skew")
    inputs = {
        "statistics": _statistics(root, "stats", training_stats_file),
        "schema": _schema(root),
    }
    if model:
        inputs["model"] = _artifact(standard_artifacts.Model, f"{root}/model")
    _run(
        mon.SkewCheck,
        inputs,
        {"verdict": verdict_artifact},
        {
            "serving_logs": table,
            "log_fingerprint": "",
            "thresholds": thresholds_to_json(default_thresholds()),
            "window_days": 7,
            "max_rows": 100,
        },
    )
    return _read_json(f"{verdict_artifact.uri}/verdict.json")


def test_no_rows_in_the_window_or_no_table_before_a_deploy_is_not_compared(
    sample_rows,
    training_stats_file,
    monkeypatch,
    ram,  # noqa: F811
):
    from pipeline.serving.client import csv_row_to_instance

    old = timed(
        [vertex_row([csv_row_to_instance(sample_rows[0])], 1)],
        [dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)],
    )
    engine = logging_table(old)
    with bigquery_on_loopback(monkeypatch, old, engine=lambda q: run_bigquery_sql(engine, q)):
        verdict = _skew_on_table(ram, training_stats_file, model=True)
    assert verdict["verdict"] == mon.NOT_COMPARED
    assert verdict["notes"][0].startswith(f"{TABLE} logged no requests since ")

    # Vertex creates the table at the first deploy: before it, nothing is served yet.
    missing = "bq://my-gcp-project.logs.other"
    with bigquery_on_loopback(monkeypatch, []):
        verdict = _skew_on_table(ram, training_stats_file, model=False, table=missing)
        assert verdict["verdict"] == mon.NOT_COMPARED
        assert "no such BigQuery table" in verdict["notes"][0]
        assert "no model served yet" in verdict["notes"][0]
        # With a model served, a missing table is a wrong name: the step fails saying so.
        with pytest.raises(InputError, match="no such BigQuery table"):
            _skew_on_table(ram, training_stats_file, model=True, table=missing)


def test_config_takes_a_logging_table_on_vertex_and_locally():
    from tests.vertex.test_compile import LOCAL, VERTEX

    for config in (VERTEX, LOCAL):
        cfg = load_config(config, [f"monitoring.skew.serving_logs={TABLE}"])
        assert cfg.monitoring.skew.serving_logs == TABLE
        # Made absolute for a run: a table name is not a path.
        assert cfg.with_absolute_paths().monitoring.skew.serving_logs == TABLE
    with pytest.raises(ConfigError, match="bq://project.dataset.table"):
        load_config(LOCAL, ["monitoring.skew.serving_logs=bq://my-gcp-project.requests"])
    with pytest.raises(ConfigError, match="gs:// folder of `taxifare serve` logs or"):
        load_config(VERTEX, ["monitoring.skew.serving_logs=requests/"])
    with pytest.raises(ConfigError, match="max_rows"):
        load_config(LOCAL, [f"monitoring.skew.serving_logs={TABLE}", "monitoring.skew.max_rows=0"])
