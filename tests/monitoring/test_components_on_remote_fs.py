"""DriftCheck and SkewCheck, run by their own TFX executors on artifacts whose URIs are on
TensorFlow's `ram://` filesystem (a stand-in for `gs://` that plain file calls cannot reach).
"""

from __future__ import annotations

import json
import uuid

import pytest
import tensorflow as tf

from pipeline.components import monitoring as mon
from pipeline.monitoring.thresholds import default_thresholds, thresholds_to_json
from taxifare_modules import features as f

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _artifact(cls, uri: str, **custom):
    artifact = cls()
    artifact.uri = uri
    for key, value in custom.items():
        artifact.set_int_custom_property(key, value)
    tf.io.gfile.makedirs(uri)
    return artifact


def _run(component, inputs: dict, outputs: dict, params: dict) -> None:
    executor = component.EXECUTOR_SPEC.executor_class()
    executor.Do(
        {k: [v] for k, v in inputs.items() if v is not None},
        {k: [v] for k, v in outputs.items()},
        params,
    )


def _statistics(root: str, name: str, stats_file: str):
    from tfx.types import standard_artifacts

    artifact = _artifact(standard_artifacts.ExampleStatistics, f"{root}/{name}")
    tf.io.gfile.makedirs(f"{artifact.uri}/Split-train")
    tf.io.gfile.copy(stats_file, f"{artifact.uri}/Split-train/FeatureStats.pb")
    return artifact


def _schema(root: str):
    from tfx.types import standard_artifacts

    from pipeline.monitoring.cli import _curated_schema_file

    artifact = _artifact(standard_artifacts.Schema, f"{root}/schema")
    tf.io.gfile.copy(_curated_schema_file(), f"{artifact.uri}/schema.pbtxt")
    return artifact


@pytest.fixture()
def ram() -> str:
    return f"ram://pipeline-{uuid.uuid4().hex[:8]}"


def _read_json(path: str) -> dict:
    with tf.io.gfile.GFile(path) as fh:
        return json.load(fh)


def test_drift_check_twice_on_a_remote_root(ram, training_stats_file):
    from tfx.types import standard_artifacts

    thresholds = thresholds_to_json(default_thresholds())
    schema = _schema(ram)
    first = _artifact(mon.DriftVerdict, f"{ram}/verdict-1")
    _run(
        mon.DriftCheck,
        {
            "examples": _artifact(standard_artifacts.Examples, f"{ram}/ex1", span=1),
            "statistics": _statistics(ram, "stats-1", training_stats_file),
            "schema": schema,
        },
        {"verdict": first},
        {"thresholds": thresholds, "baseline": f"{ram}/baseline"},
    )
    assert _read_json(f"{first.uri}/verdict.json")["verdict"] == mon.NOT_COMPARED
    assert tf.io.gfile.exists(f"{first.uri}/{mon.STATISTICS_DIR}/FeatureStats.pb")
    # The pointer the next run reads names this verdict and its span.
    pointer = _read_json(f"{ram}/baseline/{mon.LATEST_VERDICT_FILE}")
    assert pointer == {"uri": first.uri, "span": 1, "baseline_span": None}
    second = _artifact(mon.DriftVerdict, f"{ram}/verdict-2")
    _run(
        mon.DriftCheck,
        {
            "examples": _artifact(standard_artifacts.Examples, f"{ram}/ex2", span=2),
            "statistics": _statistics(ram, "stats-2", training_stats_file),
            "schema": schema,
        },
        {"verdict": second},
        {"thresholds": thresholds, "baseline": f"{ram}/baseline"},
    )
    verdict = _read_json(f"{second.uri}/verdict.json")
    assert verdict["verdict"] == "no_drift", verdict["failed_features"]
    assert verdict["notes"] == ["span 2 compared with span 1"]
    assert second.get_int_custom_property(mon.BASELINE_SPAN_PROPERTY) == 1
    assert tf.io.gfile.exists(f"{second.uri}/report.html")
    assert tf.io.gfile.exists(f"{second.uri}/{mon.BASELINE_DIR}/FeatureStats.pb")
    assert second.get_string_custom_property(mon.PREVIOUS_VERDICT_PROPERTY) == first.uri
    assert not first.has_custom_property(mon.PREVIOUS_VERDICT_PROPERTY)
    pointer = _read_json(f"{ram}/baseline/{mon.LATEST_VERDICT_FILE}")
    assert pointer == {"uri": second.uri, "span": 2, "baseline_span": 1}


def test_skew_check_on_a_remote_root_and_log(ram, training_stats_file, clean_log, reference_model):
    from tfx.types import standard_artifacts

    from tests.monitoring.test_inputs_and_filesystems import _copy_tree

    _copy_tree(clean_log, f"{ram}/log")
    model = _artifact(standard_artifacts.Model, f"{ram}/model")
    _copy_tree(reference_model, f"{model.uri}/Format-Serving")
    verdict_artifact = _artifact(mon.SkewVerdict, f"{ram}/skew")
    _run(
        mon.SkewCheck,
        {
            "statistics": _statistics(ram, "stats", training_stats_file),
            "schema": _schema(ram),
            "model": model,
        },
        {"verdict": verdict_artifact},
        {
            "serving_logs": f"{ram}/log",
            "log_fingerprint": "",
            "thresholds": thresholds_to_json(default_thresholds()),
        },
    )
    verdict = _read_json(f"{verdict_artifact.uri}/verdict.json")
    # Real trips through the real server, answered by this model: nothing to flag, raw or
    # derived.
    assert verdict["failed_features"] == [], verdict["failed_features"]
    assert {x["name"] for x in verdict["features"]} >= set(f.DERIVED_KEYS)
    assert tf.io.gfile.exists(
        f"{verdict_artifact.uri}/{mon.SERVING_STATISTICS_DIR}/FeatureStats.pb"
    )
    assert verdict_artifact.get_string_custom_property(mon.VERDICT_PROPERTY) == "no_skew"


def test_the_compiled_vertex_skew_check_reads_its_gcs_log(training_stats_file, clean_log, tmp_path):
    """The SkewCheck task of the compiled Vertex spec, with the parameters the spec holds,
    run by its executor on a log at the same path on a non-local filesystem (the bucket
    `gs://b` stood in for by `ram://b`: no Cloud Storage here)."""
    from pipeline.config import load_config
    from pipeline.vertex.compiler import compile_pipeline
    from tests.monitoring.test_inputs_and_filesystems import _copy_tree
    from tests.vertex.test_compile import VERTEX, _params

    bucket = f"b{uuid.uuid4().hex[:8]}"
    cfg = load_config(VERTEX, [f"monitoring.skew.serving_logs=gs://{bucket}/requests"])
    spec = tmp_path / "spec.json"
    compile_pipeline(cfg, spec)
    params = _params(json.loads(spec.read_text()), "SkewCheck")
    assert params["serving_logs"] == f"gs://{bucket}/requests"
    params["serving_logs"] = params["serving_logs"].replace("gs://", "ram://")
    _copy_tree(clean_log, params["serving_logs"])
    ram = f"ram://{bucket}/root"
    verdict_artifact = _artifact(mon.SkewVerdict, f"{ram}/skew")
    _run(
        mon.SkewCheck,
        {"statistics": _statistics(ram, "stats", training_stats_file), "schema": _schema(ram)},
        {"verdict": verdict_artifact},
        params,
    )
    verdict = _read_json(f"{verdict_artifact.uri}/verdict.json")
    assert verdict["verdict"] == "no_skew", verdict["failed_features"]
    assert verdict["sides"]["serving"]["examples"] > 0
