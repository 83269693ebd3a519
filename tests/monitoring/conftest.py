"""Fixtures of the monitoring tests: real training statistics, real served traffic."""

from __future__ import annotations

import os
import random
import shutil
import subprocess

import httpx
import pytest

from pipeline.serving.client import csv_row_to_instance
from taxifare_modules import features as f
from tests.serving.conftest import model_dir, small_model  # noqa: F401 - shared fixtures
from tests.serving.helpers import MODEL_NAME, InProcessServer

# Enough logged instances for the JSD of 10-bucket histograms to settle (see thresholds.py).
N_SERVED = 1200
PER_REQUEST = 50
CHROMIUM = "/usr/bin/chromium"
# Headless, offline: without the background-networking flags Chromium dials Google's hosts.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


@pytest.fixture(scope="session")
def training_stats_file(sample_csv, tmp_path_factory) -> str:
    """StatisticsGen's layout: `<artifact>/Split-train/FeatureStats.pb` of the real sample."""
    import tensorflow_data_validation as tfdv

    from pipeline.monitoring.stats_options import monitoring_stats_options

    artifact = tmp_path_factory.mktemp("statistics") / "Split-train"
    artifact.mkdir()
    # As StatisticsGen computes them in the pipeline.
    stats = tfdv.generate_statistics_from_csv(sample_csv, stats_options=monitoring_stats_options())
    path = artifact / "FeatureStats.pb"
    path.write_bytes(stats.SerializeToString())
    return str(path)


@pytest.fixture(scope="session")
def served_rows(sample_rows) -> list[dict[str, str]]:
    """A random draw of real trips (the sample the training statistics describe)."""
    return random.Random(7).sample(sample_rows, N_SERVED)


def serve(model_dir: str, log_dir: str, instances: list[dict]) -> None:  # noqa: F811
    """Sends `instances` through a real server on loopback that logs to `log_dir`.

    An instance is a JSON instance (a dict of raw fields) or `{"b64": ...}`, a serialized
    tf.Example as TF Serving's REST API takes it.
    """
    from pipeline.serving.config import ServeConfig

    server = InProcessServer(
        ServeConfig(model_dir=model_dir, log_dir=log_dir, max_instances=PER_REQUEST)
    )
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for start in range(0, len(instances), PER_REQUEST):
                body = {"instances": instances[start : start + PER_REQUEST]}
                response = client.post(f"/v1/models/{MODEL_NAME}:predict", json=body)
                assert response.status_code == 200, response.text
    finally:
        server.stop()  # graceful: the log file is closed and renamed


def as_clients_send(rows: list[dict[str, str]]) -> list[dict]:
    """Real trips as clients send them: every other request of PER_REQUEST as JSON instances
    (unknown optional fields left out, as the README says), the others as base64 tf.Examples
    of the whole CSV row (label and post-trip fields included, as TFX's examples build them).
    """
    import base64

    from pipeline.monitoring.faults import full_row_example

    out = []
    for i, row in enumerate(rows):
        if (i // PER_REQUEST) % 2 == 0:
            out.append(csv_row_to_instance(row))
        else:
            out.append({"b64": base64.b64encode(full_row_example(row)).decode()})
    return out


def write_log(log_dir: str, trips: list[dict], fares: list[float] | None = None) -> None:
    """Writes `trips` with the server's own request-log writer.

    `fares` are the predictions to log (the model's, from `predict`); 10.0 each when None.
    """
    from pipeline.serving.request_log import RequestLog, log_example

    fares = fares if fares is not None else [10.0] * len(trips)
    log = RequestLog(log_dir)
    log.write(
        log_example(trip, fare, 1, f"req-{i // PER_REQUEST}", 1_700_000_000_000, i, "test")
        for i, (trip, fare) in enumerate(zip(trips, fares, strict=True))
    )
    log.close()


def predict(saved_model: str, instances: list[dict]) -> list[float]:
    """The exported model's fares for `instances`, called in process as the server does."""
    from pipeline.monitoring.faults import served_fares

    return served_fares(saved_model, instances)


@pytest.fixture(scope="session")
def reference_model(small_model, sample_rows, served_rows, tmp_path_factory) -> str:  # noqa: F811
    """The small model with its reference recorded on 3,000 random real trips.

    The Trainer records the reference on its eval split; the shared small model was trained
    on the sample's first rows, which are not a random draw, so its reference is redone here
    on random trips (not the served ones) through the model's own signatures.
    """
    import tensorflow as tf

    from pipeline.monitoring.faults import instance_examples
    from taxifare_modules.monitoring_reference import derived_example, reference_file

    target = str(tmp_path_factory.mktemp("reference_model") / "1")
    shutil.copytree(small_model.export_dir, target)
    served = {id(r) for r in served_rows}
    rows = random.Random(3).sample([r for r in sample_rows if id(r) not in served], 3000)
    instances = [csv_row_to_instance(r) for r in rows]
    model = tf.saved_model.load(target)
    distances = model.signatures[f.TRANSFORM_FEATURES_SIGNATURE](
        **{f.SERVING_TF_EXAMPLE_INPUT_KEY: tf.constant(instance_examples(instances))}
    )[f.DISTANCE_XF]
    fares = predict(target, instances)
    with tf.io.TFRecordWriter(reference_file(target)) as out:
        for distance, fare in zip(distances.numpy().reshape(-1), fares, strict=True):
            out.write(derived_example(float(distance), fare))
    return target


@pytest.fixture(scope="session")
def clean_log(model_dir, served_rows, tmp_path_factory) -> str:  # noqa: F811
    """Real trips sent through the real server, half as JSON and half as whole-row
    tf.Examples."""
    log_dir = str(tmp_path_factory.mktemp("clean_log"))
    serve(model_dir, log_dir, as_clients_send(served_rows))
    return log_dir


@pytest.fixture(scope="session")
def hours_shifted_log(model_dir, served_rows, tmp_path_factory) -> str:  # noqa: F811
    """Real trips with their start hours moved by 8, sent through the real server."""
    instances = [csv_row_to_instance(r) for r in served_rows]
    for instance in instances:
        instance[f.HOUR_KEY] = (instance[f.HOUR_KEY] + 8) % 24
    log_dir = str(tmp_path_factory.mktemp("shifted_log"))
    serve(model_dir, log_dir, instances)
    return log_dir


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium, installed when missing (the report test needs it)."""
    if not os.path.exists(CHROMIUM):
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            result = subprocess.run(command, capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                pytest.fail(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    assert shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)
    return CHROMIUM
