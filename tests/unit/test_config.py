"""Config loading, overrides and rejection (no TensorFlow needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.config import TFX_SAMPLE, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "configs" / "local.yaml"


def test_local_config_loads_with_the_real_sample_as_input():
    cfg = load_config(LOCAL)
    assert cfg.data.input == TFX_SAMPLE
    assert cfg.schema_config.source == "curated"
    assert cfg.serving_model_dir.endswith("serving/taxifare")


def test_every_shipped_config_loads():
    for path in (REPO / "configs").glob("*.yaml"):
        load_config(path)


def test_set_overrides_single_fields_with_yaml_types():
    cfg = load_config(
        LOCAL,
        [
            "training.train_steps=10",
            "training.model.hidden_units=[8]",
            "orchestrator.enable_cache=false",
            "root=/tmp/x",
        ],
    )
    assert cfg.training.train_steps == 10
    assert cfg.training.model.hidden_units == (8,)
    assert cfg.orchestrator.enable_cache is False
    assert cfg.root == "/tmp/x"


def test_unknown_key_is_named_with_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  train_stepz: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "training.train_stepz: unknown key" in str(e.value)
    assert str(path) in str(e.value)


def test_wrong_type_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  batch_size: many\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "training.batch_size" in str(e.value)
    assert "'many'" in str(e.value)


def test_out_of_range_and_inconsistent_values_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="training.batch_size"):
        load_config(LOCAL, ["training.batch_size=0"])
    for bad in ("-0.01", "nan", "inf"):
        with pytest.raises(ConfigError, match="training.early_stopping_min_delta"):
            load_config(LOCAL, [f"training.early_stopping_min_delta={bad}"])
    assert (
        load_config(
            LOCAL, ["training.early_stopping_min_delta=0"]
        ).training.early_stopping_min_delta
        == 0
    )
    with pytest.raises(ConfigError, match="max_fare"):
        load_config(LOCAL, ["data.min_fare=100", "data.max_fare=50"])
    with pytest.raises(ConfigError, match="orchestrator.runner"):
        load_config(LOCAL, ["orchestrator.runner=airflow"])


def test_missing_file_and_bad_yaml_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(LOCAL, ["training.train_steps"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(LOCAL, ["nosuch.key=1"])


def test_a_text_value_yaml_cannot_read_gets_its_fields_own_message():
    # A cron line starts with `*`, a YAML alias: kept as text, it must meet the cron check,
    # and a wrong one is named by that check, not as "not valid YAML".
    vertex = Path(__file__).resolve().parents[2] / "configs" / "vertex.yaml"
    cfg = load_config(vertex, ["vertex.schedule.cron=*/15 * * * *"])
    assert cfg.vertex.schedule.cron == "*/15 * * * *"
    with pytest.raises(ConfigError, match="hour '99' is not in 0-23") as raised:
        load_config(vertex, ["vertex.schedule.cron=*/15 99 * * *"])
    assert "YAML" not in str(raised.value)
    # A key that takes no text still says the value is not YAML.
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(LOCAL, ["training.train_steps=*5"])


def test_config_is_frozen():
    cfg = load_config(LOCAL)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.training.train_steps = 3  # type: ignore[misc]


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_rejects_a_bad_config_with_exit_2_before_any_tfx_work(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("colour: blue\n")
    result = _cli("run", "--config", str(path), "--set", f"root={tmp_path / 'root'}")
    assert result.returncode == 2
    assert "colour: unknown key" in result.stderr
    assert str(path) in result.stderr
    assert not (tmp_path / "root").exists()


def test_cli_rejects_missing_config_file_and_bad_set(tmp_path):
    result = _cli("run", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert "missing.yaml" in result.stderr
    result = _cli("run", "--set", "training.train_steps=-5", "--set", f"root={tmp_path}/r")
    assert result.returncode == 2
    assert "training.train_steps" in result.stderr


def test_cli_empty_input_folder_is_a_clear_message(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _cli("run", "--set", f"data.input={empty}", "--set", f"root={tmp_path}/r")
    assert result.returncode == 2
    assert "no input files" in result.stderr and str(empty) in result.stderr
    assert "Traceback" not in result.stderr
    result = _cli("run", "--set", f"data.input={tmp_path}/absent", "--set", f"root={tmp_path}/r")
    assert result.returncode == 2
    assert "folder not found" in result.stderr


def test_monitoring_section_defaults_to_report_without_skew():
    cfg = load_config(LOCAL)
    assert cfg.monitoring.drift.on_detect == "report"
    assert cfg.monitoring.skew.on_detect == "report"
    assert cfg.monitoring.skew.serving_logs is None
    assert cfg.monitoring.thresholds().distance["trip_start_hour"] == 0.03


def test_monitoring_section_overrides(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "monitoring:\n"
        "  drift: {on_detect: stop}\n"
        "  skew: {serving_logs: requests/, on_detect: stop}\n"
        "  defaults: {numeric: 0.3}\n"
        "  features: {company: {distance: 0.2, presence: 0.4}}\n"
    )
    cfg = load_config(path)
    assert cfg.monitoring.drift.on_detect == "stop"
    assert cfg.monitoring.skew.serving_logs == "requests/"
    t = cfg.monitoring.thresholds()
    assert t.distance["trip_start_timestamp"] == 0.3
    assert (t.distance["company"], t.presence["company"]) == (0.2, 0.4)
    # The same file is a thresholds file for `taxifare skew --config`.
    from pipeline.monitoring.thresholds import load_thresholds

    assert load_thresholds(str(path)).distance == t.distance


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("monitoring.drift.on_detect=halt", "monitoring.drift.on_detect"),
        ("monitoring.skew.on_detect=true", "monitoring.skew.on_detect"),
        ("monitoring.skew.serving_log=requests/", "monitoring.skew.serving_log: unknown key"),
        ("monitoring.features.trip_start_hour=2", "monitoring.features.trip_start_hour = 2"),
        ("monitoring.features.fare=0.1", "unknown feature monitoring.features.fare"),
        ("monitoring.defaults.numeric=0", "monitoring.defaults.numeric = 0"),
        ("monitoring.defaults.bogus=0.1", "unknown key monitoring.defaults.bogus"),
    ],
)
def test_bad_monitoring_values_are_named(override, named):
    with pytest.raises(ConfigError) as e:
        load_config(LOCAL, [override])
    assert named in str(e.value)
    assert str(LOCAL) in str(e.value)


def test_cli_missing_serving_log_dir_exits_2(tmp_path):
    result = _cli(
        "run",
        "--set",
        f"monitoring.skew.serving_logs={tmp_path}/absent",
        "--set",
        f"root={tmp_path}/r",
    )
    assert result.returncode == 2
    assert "monitoring.skew.serving_logs" in result.stderr and "absent" in result.stderr
    assert not (tmp_path / "r").exists()


VERTEX = REPO / "configs" / "vertex.yaml"


def test_vertex_config_loads_and_moves_the_pipeline_root_to_gcs():
    cfg = load_config(VERTEX)
    assert cfg.vertex is not None
    assert cfg.vertex.project == "my-gcp-project"
    assert cfg.vertex.region == "us-central1"
    assert cfg.pipeline_root == "gs://my-gcp-project-taxifare/pipeline"
    assert cfg.vertex.training.tier == "basic-gpu"
    # The local configs stay local.
    assert load_config(LOCAL).vertex is None
    assert load_config(REPO / "configs" / "smoke.yaml").vertex is None


@pytest.mark.parametrize("key", ["project", "region", "pipeline_root", "image"])
def test_vertex_section_without_a_required_key_is_named(tmp_path, key):
    values = {
        "project": "my-project",
        "region": "us-central1",
        "pipeline_root": "gs://b/p",
        "image": "us-docker.pkg.dev/p/r/i:1",
    }
    del values[key]
    path = tmp_path / "vertex.yaml"
    lines = "".join(f"  {k}: {v}\n" for k, v in values.items())
    path.write_text(f"data:\n  input: gs://b/data\nvertex:\n{lines}")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"vertex.{key}: required key is missing" in str(e.value)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("vertex.pipeline_root=build/taxifare/pipeline", "vertex.pipeline_root: "),
        ("vertex.pipeline_root=/abs/pipeline", "vertex.pipeline_root: "),
        ("vertex.dataflow.temp_location=/tmp/df", "vertex.dataflow.temp_location: "),
        ("data.input=tfx-sample", "data.input ('tfx-sample')"),
        ("data.input=data/trips", "data.input ('data/trips')"),
        ("schema.path=pipeline/schema/schema.pbtxt", "schema.path ("),
        ("serving_root=build/serving", "serving_root ("),
        ("monitoring.skew.serving_logs=requests/", "monitoring.skew.serving_logs ("),
    ],
)
def test_vertex_paths_must_be_on_gcs(override, named):
    overrides = [override]
    if override.startswith("serving_root"):
        overrides.append("vertex.push=directory")
    with pytest.raises(ConfigError) as e:
        load_config(VERTEX, overrides)
    assert named in str(e.value)
    assert "gs://" in str(e.value)
    assert str(VERTEX) in str(e.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["vertex.project=My Project"], "vertex.project"),
        (["vertex.region=central"], "vertex.region"),
        (["vertex.push=directory"], "serving_root: vertex.push is 'directory'"),
        (["beam.runner=DataflowRunner"], "on Vertex the runner is vertex.dataflow.runner"),
        (["vertex.endpoint.min_replicas=3", "vertex.endpoint.max_replicas=2"], "max_replicas"),
        (["vertex.training.tier=tpu"], "vertex.training.tier"),
        (["vertex.training.tier=basic", "vertex.training.accelerator_count=1"], "one CPU VM"),
        (["vertex.training.accelerator_count=2"], "basic-gpu has one GPU"),
        (
            ["vertex.training.tier=multi-gpu", "vertex.training.accelerator_count=1"],
            "multi-gpu has several GPUs",
        ),
        (["vertex.training.workers=2"], "only the multi-worker tier has workers"),
        (["vertex.training.accelerator_type=NVIDIA_TESLA_K80"], "not offered by Vertex"),
        (["vertex.training.accelerator_type=NVIDIA_L4"], "set machine_type too"),
        (["vertex.training.tier=basic", "vertex.training.machine_type=g2-standard-8"], "GPUs"),
        (["vertex.training.tier=custom"], "needs at least one worker pool"),
        (
            ["vertex.training.tier=custom", "vertex.training.machine_type=n1-standard-4"],
            "machine_type: the custom tier takes its machines from worker_pool_specs only",
        ),
        (
            [
                "vertex.training.tier=custom",
                "vertex.training.worker_pool_specs=[{machineSpec: {machineType: n1-standard-4}}]",
            ],
            "worker_pool_specs[0]: unknown key(s) ['machineSpec']",
        ),
        (
            [
                "vertex.training.tier=custom",
                "vertex.training.worker_pool_specs="
                "[{machine_spec: {machine_type: n1-standard-4}, replica_count: 2}]",
            ],
            "the first pool is the chief",
        ),
        (
            ["vertex.training.worker_pool_specs=[{machine_spec: {machine_type: n1-standard-4}}]"],
            "only the custom tier takes them",
        ),
    ],
)
def test_vertex_mistakes_are_named_at_load_time(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(VERTEX, overrides)
    assert message in str(e.value)
    assert str(VERTEX) in str(e.value)


def test_vertex_tier_overrides_that_exist_are_accepted():
    cfg = load_config(
        VERTEX,
        [
            "vertex.training.tier=multi-gpu",
            "vertex.training.machine_type=g2-standard-24",
            "vertex.training.accelerator_type=NVIDIA_L4",
            "vertex.training.accelerator_count=2",
        ],
    )
    shape = cfg.vertex.training.shape()
    assert (shape.machine_type, shape.accelerator_type, shape.accelerator_count) == (
        "g2-standard-24",
        "NVIDIA_L4",
        2,
    )
    cfg = load_config(
        VERTEX,
        [
            "vertex.training.tier=multi-worker",
            "vertex.training.workers=4",
            "vertex.training.accelerator_type=NVIDIA_TESLA_T4",
        ],
    )
    shape = cfg.vertex.training.shape()
    assert (shape.workers, shape.accelerator_type, shape.accelerator_count) == (
        4,
        "NVIDIA_TESLA_T4",
        1,
    )
    cfg = load_config(
        VERTEX, ["vertex.push=directory", "serving_root=gs://my-gcp-project-taxifare/serving"]
    )
    assert cfg.serving_model_dir == "gs://my-gcp-project-taxifare/serving/taxifare"


def test_vertex_labels_leave_room_for_the_pipelines_own():
    from pipeline.config import MAX_USER_LABELS

    vertex = Path(__file__).resolve().parents[2] / "configs" / "vertex.yaml"
    many = ", ".join(f"l{i}: v" for i in range(MAX_USER_LABELS))
    assert len(load_config(vertex, [f"vertex.labels={{{many}}}"]).vertex.labels) == 60
    too_many = many + ", one-more: v"
    with pytest.raises(ConfigError, match=r"vertex\.labels: 61 labels: at most 60"):
        load_config(vertex, [f"vertex.labels={{{too_many}}}"])
    # A label the pipeline sets itself would be overwritten (or would overwrite it).
    with pytest.raises(ConfigError, match="'taxifare-pipeline': taxifare-\\* and tfx\\* keys"):
        load_config(vertex, ["vertex.labels={taxifare-pipeline: other}"])
