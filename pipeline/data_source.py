"""Where the trips come from: the real sample inside tfx, a local folder, gs://, or BigQuery.

Also what follows from the input: its size (which picks Beam's DirectRunner mode, see
BeamConfig.direct_mode), and for BigQuery the query and the Beam options it needs.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import posixpath
import re

from pipeline.config import BIGQUERY, TFX_SAMPLE, Config

# Inside the installed tfx package: real Chicago taxi trips (City of Chicago open data).
_SAMPLE_PARTS = ("examples", "chicago_taxi_pipeline", "data", "simple")


class DataSourceError(Exception):
    """The configured input cannot be read; the message names the path."""


def tfx_sample_dir() -> str:
    """The folder of the real Chicago sample shipped inside the installed tfx package."""
    spec = importlib.util.find_spec("tfx")
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceError("the tfx package is not installed: cannot find its sample data")
    folder = os.path.join(list(spec.submodule_search_locations)[0], *_SAMPLE_PARTS)
    if not os.path.isfile(os.path.join(folder, "data.csv")):
        raise DataSourceError(f"the tfx package has no sample data at {folder}")
    return folder


def resolve_input(cfg: Config) -> str:
    """The input folder for CsvExampleGen, checked when it is local.

    Raises:
      DataSourceError: a local folder that does not exist or holds no CSV file that the
        configured pattern matches; BigQuery without what it needs (see check_bigquery).
    """
    source = cfg.data.input
    if source == TFX_SAMPLE:
        return tfx_sample_dir()
    if source == BIGQUERY:
        check_bigquery(cfg)
        return BIGQUERY
    if "://" in source:
        return source  # gs:// and other remote file systems are checked by the runner
    folder = os.path.abspath(source)
    if not os.path.isdir(folder):
        raise DataSourceError(f"data.input: folder not found: {source}")
    pattern = cfg.data.pattern or "*"
    glob_pattern = os.path.join(folder, pattern.replace("{SPAN}", "*").replace("{VERSION}", "*"))
    files = [p for p in glob.glob(glob_pattern) if os.path.isfile(p)]
    if not files:
        raise DataSourceError(
            f"data.input: no input files in {source} matching {pattern!r}"
            " (expected CSV files with a header line)"
        )
    empty = [p for p in files if os.path.getsize(p) == 0]
    if len(empty) == len(files):
        raise DataSourceError(f"data.input: every input file in {source} is empty")
    return folder


def _matching_files(cfg: Config, data_root: str) -> list[str]:
    """The files under `data_root` that the pattern matches, any span and version."""
    pattern = cfg.data.pattern or "*"
    glob_pattern = os.path.join(data_root, pattern.replace("{SPAN}", "*").replace("{VERSION}", "*"))
    if "://" in data_root:
        from tfx.dsl.io import fileio

        return [p for p in fileio.glob(glob_pattern) if not fileio.isdir(p)]
    return [p for p in glob.glob(glob_pattern) if os.path.isfile(p)]


def files_by_span(cfg: Config, data_root: str) -> dict[int, list[str]]:
    """The input files per span number (empty without `{SPAN}` in the pattern).

    Raises:
      DataSourceError: a window of spans over span numbers written with leading zeros
        (TFX names a span in a pattern by its number, so `span-07` would not be found again).
    """
    pattern = cfg.data.pattern or "*"
    if "{SPAN}" not in pattern:
        return {}
    regex = re.escape(pattern).replace(r"\{SPAN\}", r"(\d+)").replace(r"\{VERSION\}", r"\d+")
    regex = regex.replace(r"\*", "[^/]*")
    spans: dict[int, list[str]] = {}
    for path in _matching_files(cfg, data_root):
        match = re.fullmatch(regex, posixpath.relpath(path, data_root))
        if not match:
            continue
        number = int(match.group(1))
        if cfg.data.train_spans > 1 and match.group(1) != str(number):
            raise DataSourceError(
                f"data.train_spans: span {match.group(1)!r} of {path} has leading zeros, which"
                " a window of spans cannot name; number the spans without them"
            )
        spans.setdefault(number, []).append(path)
    return spans


def window_spans(cfg: Config, data_root: str) -> list[int]:
    """The spans Transform and the Trainer learn from, oldest first: the latest
    `data.train_spans` of the input (fewer when it has fewer); empty without spans."""
    return sorted(files_by_span(cfg, data_root))[-cfg.data.train_spans :]


def _input_files(cfg: Config, data_root: str) -> list[str]:
    """The local files one run reads: with {SPAN}, those of the window's spans."""
    spans = files_by_span(cfg, data_root)
    if not spans and "{SPAN}" not in (cfg.data.pattern or "*"):
        return _matching_files(cfg, data_root)
    # window_spans, without listing the input a second time.
    return [p for span in sorted(spans)[-cfg.data.train_spans :] for p in spans[span]]


def input_size_bytes(cfg: Config, data_root: str) -> int | None:
    """Bytes of the files one run reads; None when unknown (BigQuery, remote folders)."""
    if cfg.data.input == BIGQUERY or "://" in data_root:
        return None
    return sum(os.path.getsize(p) for p in _input_files(cfg, data_root))


def describe_direct_mode(cfg: Config, data_root: str) -> str | None:
    """One line on the DirectRunner mode a local run uses and why (None: another runner)."""
    if cfg.beam.runner != "DirectRunner":
        return None
    size = input_size_bytes(cfg, data_root)
    mode, workers = cfg.beam.direct_mode(size)
    processes = "one per core" if workers == 0 else f"{workers} worker(s)"
    if cfg.beam.direct_running_mode != "auto":
        why = "set by beam.direct_running_mode"
    elif size is None:
        why = "auto: input size unknown"
    else:
        why = f"auto: input {size / 2**20:,.1f} MiB"
    return f"Beam DirectRunner {mode}, {processes} ({why})"


def bigquery_beam_args(cfg: Config) -> list[str]:
    """The Beam options BigQuery reads need: --project, --temp_location, and --region."""
    bq = cfg.data.bigquery
    vertex = cfg.vertex
    project = bq.project or (vertex.project if vertex else None)
    temp = bq.temp_location
    if temp is None and vertex is not None:
        from pipeline.vertex.component_config import dataflow_temp_location

        temp = dataflow_temp_location(vertex)
    region = bq.region or (vertex.region if vertex else None)
    args = []
    if project:
        args.append(f"--project={project}")
    if temp:
        args.append(f"--temp_location={temp}")
    if region:
        args.append(f"--region={region}")
    return args


def with_input_beam_args(cfg: Config, args: list[str]) -> list[str]:
    """`args` plus the options the input needs that `args` does not set already."""
    if cfg.data.input != BIGQUERY:
        return args
    given = {a.split("=", 1)[0] for a in args}
    return args + [a for a in bigquery_beam_args(cfg) if a.split("=", 1)[0] not in given]


def check_bigquery(cfg: Config) -> None:
    """Raises DataSourceError when a BigQuery input lacks what its query needs.

    A Vertex run queries with the pipeline's service account; a local run needs this
    machine's Google Cloud credentials, a project to bill and a gs:// temp folder.
    """
    args = {a.split("=", 1)[0] for a in bigquery_beam_args(cfg)}
    missing = [
        key
        for key, flag in (
            ("data.bigquery.project", "--project"),
            ("data.bigquery.temp_location", "--temp_location"),
        )
        if flag not in args
    ]
    if missing:
        raise DataSourceError(
            f"data.input is bigquery: set {' and '.join(missing)} (the project billed for the"
            " query, and a gs:// folder BigQuery exports the result to)"
        )
    if cfg.vertex is not None:
        return
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default(scopes=["https://www.googleapis.com/auth/bigquery"])
    except DefaultCredentialsError:
        raise DataSourceError(
            "data.input is bigquery but no Google Cloud credentials were found: set"
            " GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run"
            " `gcloud auth application-default login`"
        ) from None
