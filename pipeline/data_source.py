"""Where the trips come from: the real sample inside tfx, a local folder, or gs://."""

from __future__ import annotations

import glob
import importlib.util
import os

from pipeline.config import TFX_SAMPLE, Config

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
        configured pattern matches.
    """
    source = cfg.data.input
    if source == TFX_SAMPLE:
        return tfx_sample_dir()
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
