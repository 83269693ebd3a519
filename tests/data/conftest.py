"""Fixtures of the synthetic-data tests: the learned city and small synthesized folders."""

from __future__ import annotations

import csv
import glob
import os

import pytest

from pipeline.data.city import City, learn_city
from pipeline.data.synth import SynthSpec, synthesize
from tests.monitoring.conftest import training_stats_file  # noqa: F401 - the sample's statistics


@pytest.fixture(scope="session")
def city(sample_csv) -> City:
    return learn_city(sample_csv)


def synth(city: City, out, **kwargs) -> dict:
    """Synthesizes into `out` (a new folder) and returns the manifest."""
    return synthesize(SynthSpec(out=str(out), **kwargs), city)


def concat_spans(folder, path) -> str:
    """Every span file of a synthesized folder as one CSV (one header line)."""
    files = sorted(glob.glob(os.path.join(str(folder), "span-*", "*.csv")))
    with open(path, "w", newline="") as out:
        for i, name in enumerate(files):
            with open(name, newline="") as fh:
                header = fh.readline()
                if i == 0:
                    out.write(header)
                out.write(fh.read())
    return str(path)


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
