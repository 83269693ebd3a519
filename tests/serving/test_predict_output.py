"""`taxifare predict` prints a fare the same way whichever protocol carried it."""

from __future__ import annotations

import argparse
import csv

import pytest

from pipeline.serving import cli as serving_cli
from pipeline.serving.config import ServeConfig
from tests.serving.helpers import InProcessServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def server(model_dir):
    running = InProcessServer(ServeConfig(model_dir=model_dir, grpc_port=0, max_wait_ms=2.0))
    yield running
    running.stop()


def _predict(argv: list[str], capsys) -> list[str]:
    parser = argparse.ArgumentParser()
    commands = serving_cli.add_serve_parsers(parser.add_subparsers(dest="command"))
    assert commands["predict"](parser.parse_args(["predict", *argv])) == 0
    return capsys.readouterr().out.split()


def test_rest_and_grpc_print_the_same_text_for_the_same_fares(server, sample_rows, tmp_path,
                                                              capsys):
    path = tmp_path / "trips.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(sample_rows[0]))
        writer.writeheader()
        writer.writerows(sample_rows[:20])
    rest = _predict(["--url", server.url, "--instances", str(path)], capsys)
    grpc = _predict(["--grpc", server.grpc_target, "--instances", str(path)], capsys)
    assert len(rest) == 20
    assert grpc == rest
    # Shortest float32 text, as TF Serving's JSON writes it: no widened float64 digits.
    assert max(len(x.split(".")[-1]) for x in grpc) <= 9
