"""Shared test setup: the process environment the entry points set, and the real sample."""

from __future__ import annotations

import os

from pipeline.env import configure_environment

# Before any test module imports TensorFlow (TFT and TFMA need Keras 2).
configure_environment(verbose=bool(os.environ.get("TAXIFARE_TEST_VERBOSE")))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sample_csv() -> str:
    """The real Chicago sample CSV shipped inside tfx."""
    from pipeline.data_source import tfx_sample_dir

    return os.path.join(tfx_sample_dir(), "data.csv")


@pytest.fixture(scope="session")
def sample_rows(sample_csv: str) -> list[dict[str, str]]:
    """The real sample as CSV rows (strings; empty string = missing)."""
    import csv

    with open(sample_csv, newline="") as fh:
        return list(csv.DictReader(fh))
