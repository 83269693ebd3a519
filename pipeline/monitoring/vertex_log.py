"""Vertex AI's request-response logs as a request log of `taxifare serve`.

On Vertex the model is served by the prebuilt TF Serving container, which writes no request
log of this project's own. Instead the endpoint logs a sample of its requests and responses
to BigQuery (the Pusher turns this on, see pipeline/vertex/pusher.py). This module reads
those rows and writes them as the request log `taxifare serve` writes
(pipeline.serving.request_log), so the same skew check runs on production traffic.

The logging table (schema v1, the one Vertex creates for an endpoint's request-response
logging; "Online prediction logging" in the Vertex AI documentation):

    endpoint           STRING     NULLABLE  projects/<n>/locations/<region>/endpoints/<id>
    deployed_model_id  STRING     NULLABLE  the deployed model that answered (digits)
    logging_time       TIMESTAMP  NULLABLE  when the row was logged
    request_id         NUMERIC    NULLABLE  Vertex's id of the request
    request_payload    STRING     REPEATED  the predict request body, as JSON text
    response_payload   STRING     REPEATED  the response body, as JSON text

Vertex also knows a later schema version ("v2", with columns such as `full_request` and
`full_response`); only the six columns above are read, and a table without
`request_payload` is refused with a message saying so.

Where rows are read from (`is_vertex_log` tells a location apart from a request log folder):
- `bq://project.dataset.table`: the table, read with `google-cloud-bigquery` under the
  application-default credentials. `taxifare skew` reads the whole table (the free
  row-listing API, not a query); for a time window, write the rows of a query to a table of
  their own (`bq query --destination_table ... 'SELECT * FROM ... WHERE logging_time >= ...'`).
  The pipeline's SkewCheck reads a bounded window instead (`LogWindow`, `window_query`): the
  rows logged in the last N days, newest first, at most M of them, with one query (a
  BigQuery job billed to the table's project). With BIGQUERY_EMULATOR_HOST set, the client
  talks to that emulator without credentials.
- the same rows exported as newline-delimited JSON, one row per line, as
  `bq extract --destination_format NEWLINE_DELIMITED_JSON` writes them (REPEATED columns as
  JSON arrays, TIMESTAMP as "2024-05-01 12:00:00.123456 UTC" (ISO 8601 with `T`/`Z` is read
  too), NUMERIC as a string, a NULL column null or left out): a `.jsonl`/`.json` file
  (optionally `.gz`), a glob of them, or a folder holding them, local or on gs:// (read
  through tf.io.gfile).

Decoding a row: `request_payload` holds the request body (`{"instances": [...]}` of raw trip
fields or of `{"b64": <serialized tf.Example>}`, or the columnar `{"inputs": ...}`), as one
JSON string, or split over several strings that join into one, or one instance per string.
Each instance is validated exactly as `taxifare serve` validates it
(pipeline.serving.validation), so the converted log holds what the server would have logged.
Vertex's own `parameters` key is ignored. `response_payload` holds `{"predictions": [...]}`
with one fare per instance (a number, a one-element list, or `{"predicted_fare": ...}`).
A row without a response (a request that was not answered) is left out with a warning.

The log's `model_version` is the row's `deployed_model_id` when it is an integer that fits
int64 (Vertex's ids are digits), else 0; `request_id` is the row's, else `<source>:<row>`;
`request_timestamp_ms` is `logging_time` (0 when absent).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import os
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, NamedTuple

from pipeline.monitoring.stats import InputError
from taxifare_modules import features as f

_LOG = logging.getLogger(__name__)

BQ_PREFIX = "bq://"
JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
# The columns read (schema v1 of Vertex's request-response logging table).
ENDPOINT_COLUMN = "endpoint"
DEPLOYED_MODEL_ID_COLUMN = "deployed_model_id"
LOGGING_TIME_COLUMN = "logging_time"
REQUEST_ID_COLUMN = "request_id"
REQUEST_PAYLOAD_COLUMN = "request_payload"
RESPONSE_PAYLOAD_COLUMN = "response_payload"
COLUMNS = (
    ENDPOINT_COLUMN,
    DEPLOYED_MODEL_ID_COLUMN,
    LOGGING_TIME_COLUMN,
    REQUEST_ID_COLUMN,
    REQUEST_PAYLOAD_COLUMN,
    RESPONSE_PAYLOAD_COLUMN,
)
# File names of the converted log (pipeline.serving.request_log's prefix).
LOG_PREFIX = "vertex"
# A logged request is validated as the server validates one, without the server's limit on
# instances per request (Vertex has its own).
_MAX_INSTANCES = 1 << 31
_INT64_MAX = 2**63 - 1
_BQ_TABLE = re.compile(r"^bq://([a-z][a-z0-9.:-]*[a-z0-9])\.([A-Za-z0-9_]+)\.([A-Za-z0-9_$-]+)$")
_GLOB_CHARS = re.compile(r"[*?\[]")
_FRACTION = re.compile(r"\.(\d+)")
_PARAMETERS_KEY = "parameters"  # Vertex's predict body key, not TF Serving's
_PREDICTIONS_KEYS = ("predictions", "outputs")


def is_vertex_log(location: str) -> bool:
    """Whether `location` names Vertex request-response logs rather than a request log folder.

    True for `bq://project.dataset.table` (a bare `project.dataset.table` is not accepted: it
    could be a folder's name), for a path or glob ending in `.jsonl`/`.json` (optionally
    `.gz`), and for a folder (local or gs://) that holds such files and no request log
    (`*.tfrecord`) files.
    """
    if location.startswith(BQ_PREFIX):
        return True
    if location.rstrip("/").lower().endswith(JSON_SUFFIXES):
        return True
    if _GLOB_CHARS.search(location):
        return False
    import tensorflow as tf

    from pipeline.serving.request_log import LOG_SUFFIX

    try:
        if not tf.io.gfile.isdir(location):
            return False
        names = tf.io.gfile.listdir(location)
    except tf.errors.OpError:
        return False
    if any(LOG_SUFFIX in name for name in names):  # complete or still being written
        return False
    return any(name.lower().endswith(JSON_SUFFIXES) for name in names)


class LogWindow(NamedTuple):
    """Which rows of a logging table are read: logged in [since, until), newest first, at
    most `max_rows` of them (one row is one request, of one or more instances). `labels`
    go on the BigQuery query job (the bill can be split by them)."""

    since: dt.datetime
    until: dt.datetime
    max_rows: int
    labels: dict[str, str] = {}


def last_days(
    days: int,
    max_rows: int,
    now: dt.datetime | None = None,
    labels: dict[str, str] | None = None,
) -> LogWindow:
    """The window of the last `days` days up to `now` (default: the current UTC time)."""
    until = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    return LogWindow(until - dt.timedelta(days=days), until, max_rows, dict(labels or {}))


def _sql_timestamp(moment: dt.datetime) -> str:
    text = moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return f"TIMESTAMP '{text}+00'"


def window_query(location: str, window: LogWindow) -> str:
    """The BigQuery SQL (GoogleSQL) that reads a window of a logging table's rows.

    The bounds are literals, not CURRENT_TIMESTAMP(): the query text says which rows it
    read, and a retried step reads the same ones.

    Raises:
      InputError: `location` is not `bq://project.dataset.table`.
    """
    project, dataset, table = _table_parts(location)
    since, until = _sql_timestamp(window.since), _sql_timestamp(window.until)
    return (
        f"SELECT {', '.join(COLUMNS)}\n"
        f"FROM `{project}.{dataset}.{table}`\n"
        f"WHERE {LOGGING_TIME_COLUMN} >= {since} AND {LOGGING_TIME_COLUMN} < {until}\n"
        f"ORDER BY {LOGGING_TIME_COLUMN} DESC\n"
        f"LIMIT {int(window.max_rows)}"
    )


def convert_vertex_log(location: str, out_dir: str, window: LogWindow | None = None) -> int:
    """Writes the rows Vertex logged at `location` to `out_dir` as a `taxifare serve` log.

    Args:
      location: `bq://project.dataset.table`, or JSONL export files (see the module doc).
      out_dir: a local folder for the request log (created if missing; the request log
        writer writes local files only).
      window: for a table, read only these rows, with one query (window_query); None: the
        whole table, listed. Not used for export files.

    Returns:
      The number of instances written.

    Raises:
      InputError: the location is missing or empty, a row is malformed (the message names
        the file and line, or the table and row), or BigQuery cannot be read (no
        credentials, no such table, no access). Nothing converted is left in `out_dir`.
    """
    from pipeline.serving.request_log import RequestLog, request_log_files

    # The location is checked (and BigQuery's client made) before anything is written.
    if location.startswith(BQ_PREFIX):
        rows = _bigquery_rows(location, window)
    else:
        rows = _json_rows(_json_files(location))
    before = set(request_log_files(out_dir)) if os.path.isdir(out_dir) else set()
    log = RequestLog(out_dir, prefix=LOG_PREFIX)
    read = written = unanswered = 0
    try:
        for where, row in rows:
            read += 1
            records = _row_records(row, where)
            if records is None:
                unanswered += 1
                continue
            log.write(records)
            written += len(records)
        log.close()
        if read == 0:
            raise InputError(f"{location} holds no logged requests")
        if written == 0:
            raise InputError(f"{location} holds no answered requests ({read} unanswered)")
    except BaseException:
        # Bad input loses nothing and leaves no half-converted log behind.
        log.close()
        for path in set(request_log_files(out_dir)) - before:
            os.remove(path)
        raise
    if unanswered:
        _LOG.warning(
            "%s: %d logged request(s) had no response (not answered) and were left out",
            location,
            unanswered,
        )
    _LOG.info("%s: %d logged instances written to %s", location, written, out_dir)
    return written


def _row_records(row: Any, where: str) -> list[bytes] | None:
    """The request log records of one logged row; None if the request was not answered."""
    from pipeline.serving.request_log import log_examples
    from pipeline.serving.validation import RequestError, parse_predict_request

    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object (one logged row), got {_kind(row)}")
    body = _payload(row.get(REQUEST_PAYLOAD_COLUMN), where, REQUEST_PAYLOAD_COLUMN)
    if isinstance(body, dict) and ("instances" in body or "inputs" in body):
        body = {k: v for k, v in body.items() if k != _PARAMETERS_KEY}
    else:
        body = {"instances": _as_list(body)}
    try:
        request = parse_predict_request(body, _MAX_INSTANCES)
    except RequestError as e:
        raise InputError(f"{where}: {REQUEST_PAYLOAD_COLUMN}: {e.message}") from None
    response = row.get(RESPONSE_PAYLOAD_COLUMN)
    if response is None or response == []:
        return None
    fares = _predictions(_payload(response, where, RESPONSE_PAYLOAD_COLUMN), where)
    if len(fares) != len(request):
        raise InputError(
            f"{where}: {RESPONSE_PAYLOAD_COLUMN} has {len(fares)} predictions for"
            f" {len(request)} instances"
        )
    request_id = row.get(REQUEST_ID_COLUMN)
    if isinstance(request_id, Decimal) and request_id == request_id.to_integral_value():
        request_id = int(request_id)  # NUMERIC comes back as 123.000000000 from some readers
    return log_examples(
        request.trips,
        fares,
        _model_version(row.get(DEPLOYED_MODEL_ID_COLUMN)),
        str(request_id) if request_id not in (None, "") else where,
        _timestamp_ms(row.get(LOGGING_TIME_COLUMN), where),
        request.signature_name,
    )


def _payload(value: Any, where: str, column: str) -> Any:
    """The JSON a REPEATED STRING payload column holds (see the module doc)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InputError(
            f"{where}: {column} must be a non-empty list of JSON strings, got {_kind(value)}"
        )
    if not all(isinstance(item, str) for item in value):
        raise InputError(f"{where}: {column} must hold JSON strings only")
    try:
        parsed = [json.loads(item) for item in value]
    except ValueError:
        parsed = None
    if parsed is None:
        # One body split over several strings.
        try:
            return json.loads("".join(value))
        except ValueError as e:
            raise InputError(f"{where}: {column} is not JSON: {e}") from None
    if len(parsed) == 1:
        return parsed[0]
    if all(isinstance(p, dict) and "instances" in p for p in parsed):
        return {"instances": [i for p in parsed for i in _as_list(p["instances"])]}
    return parsed  # one instance (or prediction) per string


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _predictions(body: Any, where: str) -> list[float]:
    """One fare per instance from a decoded response body."""
    if isinstance(body, dict):
        key = next((k for k in _PREDICTIONS_KEYS if k in body), None)
        if key is None:
            raise InputError(
                f"{where}: {RESPONSE_PAYLOAD_COLUMN} has no 'predictions'; its keys are"
                f" {sorted(body)}"
            )
        body = body[key]
        if isinstance(body, dict):  # columnar outputs: {"predicted_fare": [...]}
            body = _single(body, where, -1)
    if not isinstance(body, list):
        body = [body]
    return [_fare(p, where, i) for i, p in enumerate(body)]


def _single(value: dict, where: str, index: int) -> Any:
    if f.PREDICTION_KEY in value:
        return value[f.PREDICTION_KEY]
    if len(value) == 1:
        return next(iter(value.values()))
    place = f"prediction {index}" if index >= 0 else "outputs"
    raise InputError(
        f"{where}: {RESPONSE_PAYLOAD_COLUMN} {place} has outputs {sorted(value)}; expected"
        f" {f.PREDICTION_KEY!r}"
    )


def _fare(value: Any, where: str, index: int) -> float:
    if isinstance(value, dict):
        value = _single(value, where, index)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(
            f"{where}: {RESPONSE_PAYLOAD_COLUMN} prediction {index} is not a number: {_kind(value)}"
        )
    return float(value)


def _model_version(value: Any) -> int:
    """The deployed model id as the log's model version when it is an int64, else 0."""
    text = str(value).strip() if value is not None else ""
    if text.isascii() and text.isdigit() and int(text) <= _INT64_MAX:
        return int(text)
    return 0


def _timestamp_ms(value: Any, where: str) -> int:
    """`logging_time` (a datetime from BigQuery, a string from an export) in epoch ms."""
    if value is None or value == "":
        return 0
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(" UTC"):
            text = text[:-4] + "+00:00"
        elif text.endswith("Z"):
            text = text[:-1] + "+00:00"
        # Python 3.10's parser takes 3 or 6 fraction digits only.
        text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise InputError(
                f"{where}: {LOGGING_TIME_COLUMN} {value!r} is not a timestamp"
            ) from None
    else:
        raise InputError(f"{where}: {LOGGING_TIME_COLUMN} is not a timestamp: {_kind(value)}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp() * 1000)


def _json_files(location: str) -> list[str]:
    import tensorflow as tf

    if _GLOB_CHARS.search(location):
        paths = [p for p in tf.io.gfile.glob(location) if not tf.io.gfile.isdir(p)]
        if not paths:
            raise InputError(f"no files match {location}")
        return sorted(paths)
    if not tf.io.gfile.exists(location):
        raise InputError(f"Vertex request-response log {location} does not exist")
    if not tf.io.gfile.isdir(location):
        return [location]
    folder = location.rstrip("/")
    paths = [
        f"{folder}/{name}"
        for name in tf.io.gfile.listdir(location)
        if name.lower().endswith(JSON_SUFFIXES)
    ]
    if not paths:
        raise InputError(
            f"{location} holds no {'/'.join(JSON_SUFFIXES)} files of Vertex request-response logs"
        )
    return sorted(paths)


def _json_rows(paths: list[str]) -> Iterator[tuple[str, Any]]:
    """(where, row) of each line of the export files; `where` is "<file>:<line>"."""
    import tensorflow as tf

    for path in paths:
        with tf.io.gfile.GFile(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if path.lower().endswith(".gz") else raw
            try:
                for number, line in enumerate(stream, start=1):
                    if not line.strip():
                        continue
                    where = f"{path}:{number}"
                    try:
                        row = json.loads(line)
                    except ValueError as e:
                        raise InputError(f"{where}: not a JSON object: {e}") from None
                    yield where, row
            except (OSError, EOFError, tf.errors.OpError) as e:  # unreadable, a damaged .gz
                raise InputError(f"{path}: cannot be read: {e}") from None


def _table_parts(location: str) -> tuple[str, str, str]:
    match = _BQ_TABLE.match(location)
    if match is None:
        raise InputError(f"{location}: a BigQuery table is named bq://project.dataset.table")
    project, dataset, table = match.groups()
    return project, dataset, table


def _bigquery_rows(location: str, window: LogWindow | None = None) -> Iterator[tuple[str, Any]]:
    """(where, row) of each row of the table (or of its window); `where` is "<table> row <n>"."""
    project, dataset, table = _table_parts(location)
    client = _bigquery_client(project, location)
    rows = _list_rows(client, f"{project}.{dataset}.{table}", location, window)
    return ((f"{location} row {i}", row) for i, row in enumerate(rows, start=1))


def _bigquery_client(project: str, location: str) -> Any:
    import google.auth.exceptions
    from google.cloud import bigquery

    credentials = None
    if os.environ.get("BIGQUERY_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()  # an emulator takes no credentials
    try:
        return bigquery.Client(project=project, credentials=credentials)
    except google.auth.exceptions.DefaultCredentialsError as e:
        raise InputError(
            f"cannot read {location}: no Google Cloud credentials (run `gcloud auth"
            " application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service"
            f" account key file): {e}"
        ) from None


def _list_rows(
    client: Any, table_id: str, location: str, window: LogWindow | None = None
) -> Iterator[dict[str, Any]]:
    import google.api_core.exceptions as api_errors
    import google.auth.exceptions

    try:
        table = client.get_table(table_id)
        fields = [field for field in table.schema if field.name in COLUMNS]
        names = {field.name for field in fields}
        if REQUEST_PAYLOAD_COLUMN not in names:
            raise InputError(
                f"{location} is not a Vertex request-response logging table: it has no"
                f" {REQUEST_PAYLOAD_COLUMN!r} column"
            )
        if window is None:
            rows = client.list_rows(table, selected_fields=fields)
        else:
            if LOGGING_TIME_COLUMN not in names:
                raise InputError(
                    f"{location} has no {LOGGING_TIME_COLUMN!r} column to read a time window by"
                )
            sql = window_query(location, window)
            _LOG.info("%s: reading the rows of the window with\n%s", location, sql)
            from google.cloud import bigquery

            config = bigquery.QueryJobConfig(labels=dict(window.labels))
            rows = client.query_and_wait(sql, job_config=config, project=table.project)
        for row in rows:
            yield dict(row.items())
    except api_errors.NotFound as e:
        raise InputError(f"{location}: no such BigQuery table ({e.message})") from None
    except (api_errors.Forbidden, api_errors.Unauthorized) as e:
        raise InputError(f"{location}: no access to the table ({e.message})") from None
    except google.auth.exceptions.GoogleAuthError as e:
        raise InputError(f"cannot read {location}: Google Cloud credentials: {e}") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    text = json.dumps(value, default=str) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
