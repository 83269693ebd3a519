"""The BigQuery input as compiled for Vertex, and its SQL run on a local engine.

BigQuery cannot be reached from here. The query text the compiled spec holds is filled as
TFX fills it (its QueryBasedDriver locally; pipeline.bigquery_executor on Vertex, where no
driver runs), transpiled from BigQuery SQL to DuckDB by sqlglot and run by DuckDB over the
real sample (the tfx package's 15,002 Chicago trips) loaded into a table shaped like
bigquery-public-data.chicago_taxi_trips.taxi_trips. FARM_FINGERPRINT is FarmHash's
Fingerprint64 (pyfarmhash), checked against the values BigQuery's documentation prints.
Not run: a query sent to BigQuery, Beam's ReadFromBigQuery export and the IAM it needs.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import duckdb
import farmhash
import pandas as pd
import pytest
import sqlglot
from google.protobuf import text_format
from sqlglot import exp
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline import bigquery, dag
from pipeline.config import ConfigError, load_config
from pipeline.data_source import tfx_sample_dir

REPO = Path(__file__).resolve().parents[2]
VERTEX_BQ = REPO / "configs" / "vertex-bigquery.yaml"
LOCAL_BQ = REPO / "configs" / "bigquery.yaml"
SCHEMA = REPO / "pipeline" / "schema" / "schema.pbtxt"

# The sample's 18 columns, in the CSV's order.
COLUMNS = [
    "pickup_community_area", "fare", "trip_start_month", "trip_start_hour", "trip_start_day",
    "trip_start_timestamp", "pickup_latitude", "pickup_longitude", "dropoff_latitude",
    "dropoff_longitude", "trip_miles", "pickup_census_tract", "dropoff_census_tract",
    "payment_type", "company", "trip_seconds", "dropoff_community_area", "tips",
]  # fmt: skip
# bigquery-public-data.chicago_taxi_trips.taxi_trips, BigQuery types as DuckDB's.
TABLE_COLUMNS = {
    "unique_key": "VARCHAR", "taxi_id": "VARCHAR",
    "trip_start_timestamp": "TIMESTAMPTZ", "trip_end_timestamp": "TIMESTAMPTZ",
    "trip_seconds": "BIGINT", "trip_miles": "DOUBLE",
    "pickup_census_tract": "BIGINT", "dropoff_census_tract": "BIGINT",
    "pickup_community_area": "BIGINT", "dropoff_community_area": "BIGINT",
    "fare": "DOUBLE", "tips": "DOUBLE", "tolls": "DOUBLE", "extras": "DOUBLE",
    "trip_total": "DOUBLE", "payment_type": "VARCHAR", "company": "VARCHAR",
    "pickup_latitude": "DOUBLE", "pickup_longitude": "DOUBLE", "pickup_location": "VARCHAR",
    "dropoff_latitude": "DOUBLE", "dropoff_longitude": "DOUBLE", "dropoff_location": "VARCHAR",
}  # fmt: skip
# What TFX's BigQuery row_to_example makes of each result type, as the schema names it.
FEATURE_TYPE = {"BIGINT": "INT", "DOUBLE": "FLOAT", "VARCHAR": "BYTES"}


def _utc(seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)


def _unique_key(row: int) -> str:
    # The table's trip ids are 40 hex digits; the sample has none, so each row gets one.
    return hashlib.sha256(str(row).encode()).hexdigest()[:40]


def _fingerprint(text: str) -> int:
    """BigQuery's FARM_FINGERPRINT: FarmHash Fingerprint64 as a signed INT64."""
    value = farmhash.fingerprint64(text)
    return value - (1 << 64) if value >= 1 << 63 else value


def test_farm_fingerprint_stand_in_gives_bigquerys_documented_values():
    # BigQuery's FARM_FINGERPRINT documentation: CONCAT(x, y, z) of three rows.
    assert _fingerprint("1footrue") == -1541654101129638711
    assert _fingerprint("2applefalse") == 2794438866806483259
    assert _fingerprint("3true") == -4880158226897771312


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = pd.read_csv(Path(tfx_sample_dir()) / "data.csv")
    assert list(frame.columns) == COLUMNS
    frame["unique_key"] = [_unique_key(i) for i in range(len(frame))]
    return frame


# Rows the real table has and the schema refuses, inside 2015-01 and at its edges.
JAN = int(datetime.datetime(2015, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
FEB = int(datetime.datetime(2015, 2, 1, tzinfo=datetime.timezone.utc).timestamp())
EXTRA_ROWS = [
    # (unique_key, trip_start seconds, fare, payment_type): only the first is kept.
    ("edge-begin", JAN, 9.25, "Cash"),
    ("edge-end", FEB, 9.25, "Cash"),
    ("null-fare", JAN + 3600, None, "Cash"),
    ("null-payment", JAN + 7200, 9.25, None),
]


@pytest.fixture(scope="module")
def engine(sample: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    """DuckDB holding the sample as `bigquery-public-data`.chicago_taxi_trips.taxi_trips."""
    con = duckdb.connect()
    # BigQuery reads a TIMESTAMP's fields in UTC.
    con.execute("SET TimeZone = 'UTC'")
    con.create_function("farm_fingerprint", _fingerprint, ["VARCHAR"], "BIGINT")
    con.execute("ATTACH ':memory:' AS \"bigquery-public-data\"")
    con.execute('CREATE SCHEMA "bigquery-public-data".chicago_taxi_trips')
    columns = ", ".join(f"{name} {kind}" for name, kind in TABLE_COLUMNS.items())
    con.execute(f'CREATE TABLE "bigquery-public-data".chicago_taxi_trips.taxi_trips ({columns})')
    con.register("sample", sample)
    # The CSV's unix seconds are the table's TIMESTAMP; hour/day/month are derived by the query.
    con.execute(
        """INSERT INTO "bigquery-public-data".chicago_taxi_trips.taxi_trips BY NAME
        SELECT unique_key, to_timestamp(trip_start_timestamp) AS trip_start_timestamp,
          CAST(trip_seconds AS BIGINT) AS trip_seconds, trip_miles,
          CAST(pickup_census_tract AS BIGINT) AS pickup_census_tract,
          CAST(dropoff_census_tract AS BIGINT) AS dropoff_census_tract,
          CAST(pickup_community_area AS BIGINT) AS pickup_community_area,
          CAST(dropoff_community_area AS BIGINT) AS dropoff_community_area,
          fare, tips, payment_type, company, pickup_latitude, pickup_longitude,
          dropoff_latitude, dropoff_longitude
        FROM sample"""
    )
    for key, start, fare, payment in EXTRA_ROWS:
        con.execute(
            'INSERT INTO "bigquery-public-data".chicago_taxi_trips.taxi_trips'
            " (unique_key, trip_start_timestamp, fare, payment_type)"
            " VALUES (?, to_timestamp(?), ?, ?)",
            [key, start, fare, payment],
        )
    return con


def _to_duckdb(query: str) -> str:
    """BigQuery SQL as DuckDB SQL, by sqlglot, with the one function it maps wrongly.

    BigQuery's DAYOFWEEK is 1 (Sunday) to 7; DuckDB's is 0 (Sunday) to 6 and sqlglot keeps
    the name: the stand-in adds the 1 (test_day_of_week_is_bigquerys fails without it).
    """
    tree = sqlglot.parse_one(query, read="bigquery")

    def shift(node: exp.Expression) -> exp.Expression:
        unit = node.args.get("this") if isinstance(node, exp.Extract) else None
        if unit is not None and unit.name.upper() == "DAYOFWEEK":
            return exp.Paren(this=exp.Add(this=node.copy(), expression=exp.Literal.number(1)))
        return node

    return tree.transform(shift).sql(dialect="duckdb")


def _compiled_example_gen(tmp_path: Path, overrides: list[str]) -> dict[str, str]:
    """The BigQuery ExampleGen's parameters and executor class in the compiled Vertex spec."""
    from pipeline.vertex.compiler import compile_pipeline

    job = compile_pipeline(load_config(VERTEX_BQ, overrides), tmp_path / "bq.json")
    spec = json.loads((tmp_path / "bq.json").read_text())["pipelineSpec"]
    assert job["pipelineSpec"] == spec
    node = spec["root"]["dag"]["tasks"][dag.EXAMPLE_GEN_ID]
    params = {
        k: next(iter(v["runtimeValue"]["constantValue"].values()))
        for k, v in node["inputs"]["parameters"].items()
    }
    executor = spec["components"][node["componentRef"]["name"]]["executorLabel"]
    args = spec["deploymentSpec"]["executors"][executor]["container"]["args"]
    params["executor_class"] = args[args.index("--executor_class_path") + 1]
    return params


def _vertex_query(params: dict[str, str]) -> tuple[str, int, object]:
    """What pipeline.bigquery_executor makes of the compiled parameters on Vertex (no
    driver): the filled query, the span, and the Examples artifact it records it on."""
    from tfx.types import standard_artifacts

    from pipeline.bigquery_executor import resolve_span

    examples = standard_artifacts.Examples()
    resolved = resolve_span(
        {k: params[k] for k in ("input_config", "range_config", "custom_config")}, [examples]
    )
    query = json.loads(resolved["input_config"])["splits"][0]["pattern"]
    return query, resolved["span"], examples


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _compiled_example_gen(tmp_path_factory.mktemp("bq"), ["data.bigquery.month=2015-01"])


def test_the_compiled_query_carries_span_placeholders_and_no_null_labels(compiled):
    query = json.loads(compiled["input_config"])["splits"][0]["pattern"]
    assert query.count(bigquery.SPAN_BEGIN_PLACEHOLDER) == 2
    assert "fare IS NOT NULL" in query and "payment_type IS NOT NULL" in query
    # A month per span: TFX's static range names the day of the month's first day.
    assert json.loads(compiled["range_config"]) == {
        "static_range": {"start_span_number": 16436, "end_span_number": 16436}
    }
    assert compiled["executor_class"] == "pipeline.bigquery_executor.Executor"


def test_the_temp_dataset_and_labels_reach_beams_read(compiled):
    from apache_beam.io.gcp.bigquery import _CustomBigQuerySource
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.bigquery_executor import read_kwargs, read_settings

    settings = read_settings(compiled)
    assert settings == {
        "temp_dataset": "my-gcp-project.taxifare_bigquery_tmp",
        "labels": {"app": "taxifare"},
        "month": "2015-01",
    }
    kwargs = read_kwargs(settings)
    assert kwargs["bigquery_job_labels"]["app"] == "taxifare"
    # Beam's own query source: given the dataset, it creates none (no BigQuery client is
    # touched, so None stands for it) and bills the query to the dataset's project.
    source = _CustomBigQuerySource(
        method="EXPORT", query="SELECT 1", pipeline_options=PipelineOptions(["--project=other"]),
        **kwargs,
    )
    assert source._setup_temporary_dataset(None) is None
    assert source._get_project() == "my-gcp-project"
    # Without one, Beam asks BigQuery where to create a dataset: the bigquery.datasets.create
    # that roles/bigquery.jobUser lacks.
    bare = _CustomBigQuerySource(
        method="EXPORT", query="SELECT 1", pipeline_options=PipelineOptions(["--project=other"]),
        **read_kwargs({})
    )  # fmt: skip
    with pytest.raises(AttributeError, match="get_query_location"):
        bare._setup_temporary_dataset(None)


def test_required_columns_are_the_schemas():
    schema = text_format.Parse(SCHEMA.read_text(), schema_pb2.Schema())
    required = {
        feature.name
        for feature in schema.feature
        if feature.presence.min_fraction == 1.0
        and feature.lifecycle_stage != schema_pb2.DEPRECATED
        and "TRAINING" not in feature.not_in_environment
    }
    # The month, hour and day come from the trip start, which the span's range requires.
    from_start = {"trip_start_timestamp", "trip_start_month", "trip_start_hour", "trip_start_day"}
    assert required - from_start == set(bigquery.REQUIRED_COLUMNS)


def _expected(sample: pd.DataFrame, begin: int, end: int) -> pd.DataFrame:
    rows = sample[(sample.trip_start_timestamp >= begin) & (sample.trip_start_timestamp < end)]
    return rows[rows.fare.notna() & rows.payment_type.notna()]


def test_the_months_query_runs_over_the_sample(compiled, engine, sample):
    from pipeline.components.monitoring import artifact_span

    query, span, examples = _vertex_query(compiled)
    # DriftCheck reads the span where the executor recorded it.
    assert span == 16436 and artifact_span(examples) == 16436
    assert bigquery.SPAN_BEGIN_PLACEHOLDER not in query
    result = engine.execute(_to_duckdb(query))
    names = [d[0] for d in result.description]
    assert names == COLUMNS
    rows = pd.DataFrame(result.fetchall(), columns=names)

    # The 18 columns with the types the curated schema gives them.
    schema = text_format.Parse(SCHEMA.read_text(), schema_pb2.Schema())
    schema_types = {f.name: schema_pb2.FeatureType.Name(f.type) for f in schema.feature}
    result_types = {d[0]: FEATURE_TYPE[str(d[1])] for d in result.description}
    assert result_types == schema_types

    # Every trip of January 2015 (UTC) the schema accepts, and nothing else: the trip at
    # the month's first instant is in, the one at February's first instant and the NULL
    # fare and payment type are out.
    expected = _expected(sample, JAN, FEB)
    assert 200 < len(expected) < 600
    assert len(rows) == len(expected) + 1
    assert sorted(rows.trip_start_timestamp) == sorted([*expected.trip_start_timestamp, JAN])
    assert rows.fare.notna().all() and rows.payment_type.notna().all()
    # Month, hour and day as the CSV has them (read in UTC), trip by trip.
    derived = ["trip_start_timestamp", "trip_start_month", "trip_start_hour", "trip_start_day"]
    got = sorted(map(tuple, rows[rows.trip_start_timestamp != JAN][derived].values.tolist()))
    assert got == sorted(map(tuple, expected[derived].values.tolist()))


def test_day_of_week_is_bigquerys(engine):
    # 2015-01-04 was a Sunday: BigQuery's DAYOFWEEK is 1.
    sunday = "SELECT EXTRACT(DAYOFWEEK FROM TIMESTAMP_SECONDS(1420329600)) AS d"
    assert engine.execute(_to_duckdb(sunday)).fetchone()[0] == 1


def test_december_reaches_the_new_year_and_the_local_driver_fills_it_alike(
    tmp_path, engine, sample
):
    from tfx.components.example_gen.driver import QueryBasedDriver

    params = _compiled_example_gen(tmp_path, ["data.bigquery.month=2015-12"])
    query, span, _ = _vertex_query(params)
    assert bigquery.span_month(span) == "2015-12"
    # The local orchestrator runs TFX's QueryBasedDriver first: the same text, and the
    # executor then leaves it as it is.
    driven = QueryBasedDriver(None).resolve_exec_properties(
        {k: params[k] for k in ("input_config", "range_config")}, None, None
    )
    assert driven["span"] == span
    assert json.loads(driven["input_config"])["splits"][0]["pattern"] == query
    from pipeline.bigquery_executor import resolve_span

    assert resolve_span(driven, []) is driven

    rows = engine.execute(_to_duckdb(query)).fetchall()
    dec = int(datetime.datetime(2015, 12, 1, tzinfo=datetime.timezone.utc).timestamp())
    jan = int(datetime.datetime(2016, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
    expected = _expected(sample, dec, jan)
    assert len(rows) == len(expected) > 100
    assert {_utc(r[COLUMNS.index("trip_start_timestamp")]).month for r in rows} == {12}


def test_month_previous_is_the_month_before_each_run(tmp_path, monkeypatch, engine, sample):
    # A schedule reuses one compiled spec: with month `previous` it fixes no range, and on
    # Vertex (no driver) the executor resolves the month before the run's as it runs.
    from tfx.types import standard_artifacts

    from pipeline import bigquery_executor
    from pipeline.components.monitoring import artifact_span

    params = _compiled_example_gen(tmp_path, ["data.bigquery.month=previous"])
    assert "range_config" not in params
    task = json.loads((tmp_path / "bq.json").read_text())["pipelineSpec"]["root"]["dag"][
        "tasks"
    ][dag.EXAMPLE_GEN_ID]
    # The same query every run: Vertex's step cache would serve the first month forever.
    assert task["cachingOptions"] == {"enableCache": False}
    utc = datetime.timezone.utc
    queries = {}
    for now in (datetime.datetime(2016, 1, 1, 0, 5, tzinfo=utc),
                datetime.datetime(2016, 2, 29, 23, 0, tzinfo=utc)):  # fmt: skip
        monkeypatch.setattr(bigquery_executor, "_utc_now", lambda now=now: now)
        examples = standard_artifacts.Examples()
        resolved = bigquery_executor.resolve_span(
            {k: params[k] for k in ("input_config", "custom_config")}, [examples]
        )
        month = bigquery.span_month(resolved["span"])
        assert artifact_span(examples) == resolved["span"]
        queries[month] = json.loads(resolved["input_config"])["splits"][0]["pattern"]
    assert list(queries) == ["2015-12", "2016-01"]
    rows = engine.execute(_to_duckdb(queries["2015-12"])).fetchall()
    assert {_utc(r[COLUMNS.index("trip_start_timestamp")]).month for r in rows} == {12}
    # A local run builds its DAG as it starts: the month before it, as a static range.
    local = dag.create_pipeline(
        load_config(
            VERTEX_BQ, ["data.bigquery.month=previous", "data.bigquery.project=my-gcp-project"]
        ).model_copy(update={"vertex": None}),
        "bigquery",
    )
    example_gen = next(c for c in local.components if c.id == dag.EXAMPLE_GEN_ID)
    static = json.loads(example_gen.exec_properties["range_config"])["static_range"]
    assert bigquery.span_month(int(static["start_span_number"])) == bigquery.resolve_month(
        "previous"
    )


def test_sampling_keeps_the_trips_whose_id_hashes_below_the_fraction(tmp_path, engine, sample):
    params = _compiled_example_gen(
        tmp_path, ["data.bigquery.month=2015-01", "data.bigquery.sample_fraction=0.25"]
    )
    query, _, _ = _vertex_query(params)
    assert "< 250000" in query
    # The sampling condition alone, over the whole table.
    whole = query[: query.index("WHERE")] + "WHERE TRUE" + query[query.index("\n  AND MOD") :]
    kept = engine.execute(f"SELECT COUNT(*) FROM ({_to_duckdb(whole)})").fetchone()[0]
    # The same trips, computed here from the ids: the hash decides, not chance.
    keys = [*sample.unique_key, *(row[0] for row in EXTRA_ROWS)]
    assert kept == sum(abs(_fingerprint(k)) % 1_000_000 < 250_000 for k in keys)
    # About a quarter of the 15,006 trips (sd of the share ~0.0035).
    assert abs(kept / len(keys) - 0.25) < 0.02
    month = engine.execute(_to_duckdb(query)).fetchall()
    january = _expected(sample, JAN, FEB)
    january_kept = january[
        [abs(_fingerprint(k)) % 1_000_000 < 250_000 for k in january.unique_key]
    ]
    assert len(month) == len(january_kept)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.bigquery.month=2015-13", "data.bigquery.month"),
        ("data.bigquery.month=2015-01-01", "not the date 2015-01-01"),
        ("data.bigquery.temp_dataset=bad.name.here", "data.bigquery.temp_dataset"),
    ],
)
def test_bad_month_or_temp_dataset_is_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(LOCAL_BQ, [override])


def test_month_spans_grow_month_by_month():
    spans = [bigquery.month_span(f"2015-{m:02d}") for m in range(1, 13)]
    assert spans == sorted(spans) and spans[0] == 16436
    assert [bigquery.span_month(s) for s in spans] == [f"2015-{m:02d}" for m in range(1, 13)]
    with pytest.raises(ValueError, match="not the first day of a month"):
        bigquery.span_month(16437)


def test_a_new_payment_type_is_named_by_the_anomaly_gate(compiled, engine):
    import tensorflow_data_validation as tfdv

    from pipeline.anomalies import anomalies_from_proto

    query, _, _ = _vertex_query(compiled)
    month = engine.execute(_to_duckdb(query)).df()
    # A payment type the curated schema's closed list does not have, in ~1% of the trips.
    month.loc[month.index[: len(month) // 100 + 1], "payment_type"] = "Mobile"
    stats = tfdv.generate_statistics_from_dataframe(month)
    schema = tfdv.load_schema_text(str(SCHEMA))
    found = anomalies_from_proto(
        tfdv.validate_statistics(stats, schema, environment="TRAINING"), "train"
    )
    lines = [str(a).strip() for a in found if a.feature == "payment_type"]
    # The line the README quotes.
    assert lines == [
        "[train] payment_type: ENUM_TYPE_UNEXPECTED_STRING_VALUES: Examples contain values"
        " missing from the schema: Mobile (~1%)."
    ]
