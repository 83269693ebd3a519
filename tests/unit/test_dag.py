"""The DAG and the training contract built from the config (no pipeline run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tfx.dsl.components.common.resolver import Resolver

from pipeline import dag
from pipeline.components import atomic_pusher
from pipeline.config import ConfigError, load_config
from pipeline.data_source import tfx_sample_dir
from taxifare_modules import features as f
from taxifare_modules import trainer as trainer_module
from taxifare_modules import tuning as tuning_module
from taxifare_modules.model import ModelParams

LOCAL = Path(__file__).resolve().parents[2] / "configs" / "local.yaml"


@pytest.fixture(scope="module")
def cfg():
    return load_config(LOCAL, ["root=/tmp/taxifare-unit"])


def test_pipeline_has_every_component_with_explicit_ids(cfg):
    pipeline = dag.create_pipeline(cfg, tfx_sample_dir())
    ids = [c.id for c in pipeline.components]  # TFX orders them topologically
    assert len(ids) == len(set(ids))
    assert set(ids) == {
        dag.EXAMPLE_GEN_ID,
        dag.FARE_FILTER_ID,
        dag.STATISTICS_GEN_ID,
        dag.SCHEMA_GEN_ID,
        dag.EXAMPLE_VALIDATOR_ID,
        dag.ANOMALY_GATE_ID,
        dag.DRIFT_CHECK_ID,
        dag.MONITORING_GATE_ID,
        dag.TRANSFORM_ID,
        dag.TRAINER_ID,
        dag.MODEL_RESOLVER_ID,
        dag.EVALUATOR_ID,
        dag.PUSHER_ID,
    }
    by_id = {c.id: c for c in pipeline.components}
    # Transform waits for both gates, so anomalies (and drift or skew, in `stop` mode) stop
    # everything downstream.
    assert by_id[dag.ANOMALY_GATE_ID] in by_id[dag.TRANSFORM_ID].upstream_nodes
    assert by_id[dag.MONITORING_GATE_ID] in by_id[dag.TRANSFORM_ID].upstream_nodes
    assert type(by_id[dag.SCHEMA_GEN_ID]).__name__ == "ImportSchemaGen"
    assert pipeline.enable_cache is True


def test_inferred_schema_switch_and_truncation(cfg):
    inferred = load_config(LOCAL, ["root=/tmp/taxifare-unit", "schema.source=inferred"])
    pipeline = dag.create_pipeline(inferred, tfx_sample_dir(), until=dag.SCHEMA_GEN_ID)
    by_id = {c.id: c for c in pipeline.components}
    assert set(by_id) == {
        dag.EXAMPLE_GEN_ID,
        dag.FARE_FILTER_ID,
        dag.STATISTICS_GEN_ID,
        dag.SCHEMA_GEN_ID,
    }
    assert type(by_id[dag.SCHEMA_GEN_ID]).__name__ == "SchemaGen"
    with pytest.raises(ValueError, match="unknown component id"):
        dag.create_pipeline(cfg, tfx_sample_dir(), until="Nope")


def test_module_code_is_referenced_by_dotted_path(cfg):
    pipeline = dag.create_pipeline(cfg, tfx_sample_dir())
    by_id = {c.id: c for c in pipeline.components}
    assert by_id[dag.TRANSFORM_ID].exec_properties["preprocessing_fn"] == dag.PREPROCESSING_FN
    assert by_id[dag.TRAINER_ID].exec_properties["run_fn"] == dag.RUN_FN
    assert "module_file" not in {k for k, v in by_id[dag.TRAINER_ID].exec_properties.items() if v}


def test_every_training_field_reaches_run_fn(cfg):
    custom = dag.trainer_custom_config(cfg)
    t = cfg.training
    assert custom[trainer_module.BATCH_SIZE_KEY] == t.batch_size
    assert custom[trainer_module.EVAL_BATCH_SIZE_KEY] == t.eval_batch_size
    assert custom[trainer_module.SEED_KEY] == t.seed
    assert custom[trainer_module.IN_MEMORY_KEY] == t.in_memory
    assert custom[trainer_module.IN_MEMORY_MAX_ROWS_KEY] == t.in_memory_max_rows
    assert custom[trainer_module.EPOCHS_KEY] == t.epochs
    assert custom[trainer_module.PATIENCE_KEY] == t.early_stopping_patience
    assert custom[trainer_module.MIN_DELTA_KEY] == t.early_stopping_min_delta
    settings = trainer_module.settings_from_custom_config(custom)
    assert (settings.epochs, settings.batch_size) == (t.epochs, t.batch_size)
    # Every model field becomes a ModelParams field, with the config's value.
    params = ModelParams(
        **{
            k: (tuple(v) if isinstance(v, list) else v)
            for k, v in custom[trainer_module.MODEL_PARAMS_KEY].items()
        }
    )
    assert set(custom[trainer_module.MODEL_PARAMS_KEY]) == set(type(t.model).model_fields)
    assert params.hidden_units == t.model.hidden_units
    assert params.huber_delta == t.model.huber_delta


def test_splits_train_eval_test_and_the_evaluator_blesses_on_test(cfg):
    by_id = {c.id: c for c in dag.create_pipeline(cfg, tfx_sample_dir()).components}
    output = json.loads(by_id[dag.EXAMPLE_GEN_ID].exec_properties["output_config"])
    assert [s["name"] for s in output["split_config"]["splits"]] == ["train", "eval", "test"]
    assert json.loads(by_id[dag.EVALUATOR_ID].exec_properties["example_splits"]) == ["test"]
    trainer = by_id[dag.TRAINER_ID]
    assert json.loads(trainer.exec_properties["train_args"])["splits"] == ["train"]
    assert json.loads(trainer.exec_properties["eval_args"])["splits"] == ["eval"]
    # No fixed step count unless the config caps it: the epochs decide.
    assert "num_steps" not in json.loads(trainer.exec_properties["train_args"])
    assert dag.TUNER_ID not in by_id


def test_tuning_puts_a_tuner_before_the_trainer_and_hands_it_the_best_values(cfg):
    tuned = load_config(
        LOCAL, ["tuning.enabled=true", "tuning.trials=3", "tuning.algorithm=bayesian"]
    )
    by_id = {c.id: c for c in dag.create_pipeline(tuned, tfx_sample_dir()).components}
    tuner = by_id[dag.TUNER_ID]
    assert tuner.exec_properties["tuner_fn"] == dag.TUNER_FN
    custom = json.loads(tuner.exec_properties["custom_config"])
    assert custom[tuning_module.TRIALS_KEY] == 3
    assert custom[tuning_module.ALGORITHM_KEY] == "bayesian"
    assert custom[tuning_module.TRIAL_EPOCHS_KEY] == tuned.tuning.epochs
    assert by_id[dag.TRAINER_ID].inputs["hyperparameters"] is tuner.outputs["best_hyperparameters"]
    with pytest.raises(ConfigError, match="tuning.algorithm"):
        load_config(LOCAL, ["tuning.algorithm=hyperband"])


def test_eval_config_gates_on_the_overall_slice_only(cfg):
    config = dag.eval_config(cfg)
    (spec,) = config.model_specs
    assert spec.label_key == f.LABEL_KEY
    assert spec.signature_name == f.SERVING_TF_EXAMPLE_SIGNATURE
    sliced = {tuple(s.feature_keys) for s in config.slicing_specs}
    assert sliced == {(), (f.HOUR_KEY,), (f.PAYMENT_TYPE_KEY,)}
    rmse = next(
        m for m in config.metrics_specs[0].metrics if m.class_name == "RootMeanSquaredError"
    )
    (per_slice,) = rmse.per_slice_thresholds
    assert [tuple(s.feature_keys) for s in per_slice.slicing_specs] == [()]
    assert per_slice.threshold.value_threshold.upper_bound.value == cfg.evaluation.max_rmse
    assert per_slice.threshold.change_threshold.absolute.value == cfg.evaluation.max_rmse_increase


VERTEX = Path(__file__).resolve().parents[2] / "configs" / "vertex.yaml"


def test_local_pipeline_uses_the_local_components_and_mlmd(cfg):
    from tfx import v1 as tfx

    pipeline = dag.create_pipeline(cfg, tfx_sample_dir())
    by_id = {c.id: c for c in pipeline.components}
    assert type(by_id[dag.TRAINER_ID]) is tfx.components.Trainer
    assert type(by_id[dag.PUSHER_ID]) is tfx.components.Pusher
    # The Pusher's executor is the atomic one (stage beside the serving dir, then rename).
    assert by_id[dag.PUSHER_ID].executor_spec.executor_class is atomic_pusher.Executor
    assert pipeline.metadata_connection_config.sqlite.filename_uri == cfg.metadata_path
    assert pipeline.beam_pipeline_args == cfg.beam.to_args()
    assert pipeline.pipeline_info.pipeline_root == "/tmp/taxifare-unit/pipeline"


def test_vertex_config_picks_the_vertex_components_without_another_dag():
    from tfx import v1 as tfx

    from pipeline.vertex import component_config
    from pipeline.vertex import pusher as vertex_pusher

    vertex_cfg = load_config(VERTEX)
    pipeline = dag.create_pipeline(vertex_cfg, vertex_cfg.data.input)
    by_id = {c.id: c for c in pipeline.components}
    local_cfg = load_config(LOCAL, ["tuning.enabled=true"])
    local_ids = [c.id for c in dag.create_pipeline(local_cfg, tfx_sample_dir()).components]
    assert [c.id for c in pipeline.components] == local_ids
    gcp = tfx.extensions.google_cloud_ai_platform
    assert type(by_id[dag.TRAINER_ID]) is gcp.Trainer
    # The Tuner runs its trials in parallel on a Vertex AI Training job.
    tuner = by_id[dag.TUNER_ID]
    assert type(tuner) is gcp.Tuner
    tune_args = json.loads(tuner.exec_properties["tune_args"])
    assert tune_args == {"num_parallel_trials": vertex_cfg.tuning.parallel_trials}
    tuner_custom = json.loads(tuner.exec_properties["custom_config"])
    pools = tuner_custom[gcp.experimental.TUNING_ARGS_KEY]["job_spec"]["worker_pool_specs"]
    assert [p["replica_count"] for p in pools] == [1, vertex_cfg.tuning.parallel_trials - 1]
    # TFX's Vertex Pusher, extended to turn on the endpoint's request-response logging.
    assert type(by_id[dag.PUSHER_ID]) is vertex_pusher.Pusher
    assert issubclass(vertex_pusher.Pusher, gcp.Pusher)
    assert pipeline.pipeline_info.pipeline_root == "gs://my-gcp-project-taxifare/pipeline"
    assert (
        by_id[dag.EXAMPLE_GEN_ID].exec_properties["input_base"]
        == "gs://my-gcp-project-taxifare/data"
    )
    assert by_id[dag.SCHEMA_GEN_ID].exec_properties["schema_file"] == (
        component_config.IMAGE_SCHEMA_FILE
    )
    assert "--runner=DataflowRunner" in pipeline.beam_pipeline_args
    # run_fn's keys and the Vertex training job travel together in custom_config.
    custom = json.loads(by_id[dag.TRAINER_ID].exec_properties["custom_config"])
    assert custom[trainer_module.BATCH_SIZE_KEY] == vertex_cfg.training.batch_size
    assert custom[gcp.ENABLE_VERTEX_KEY] is True
    assert custom[gcp.VERTEX_REGION_KEY] == "us-central1"
    assert custom[gcp.TRAINING_ARGS_KEY]["job_spec"]["worker_pool_specs"][0]["machine_spec"] == {
        "machine_type": "n1-standard-8",
        "accelerator_type": "NVIDIA_TESLA_T4",
        "accelerator_count": 1,
    }


def test_skew_check_and_stop_modes_follow_the_monitoring_config(cfg, tmp_path):
    from pipeline.monitoring.thresholds import thresholds_from_json

    by_id = {c.id: c for c in dag.create_pipeline(cfg, tfx_sample_dir()).components}
    assert dag.SKEW_CHECK_ID not in by_id
    gate = by_id[dag.MONITORING_GATE_ID]
    assert (gate.exec_properties["stop_on_drift"], gate.exec_properties["stop_on_skew"]) == (0, 0)
    # The drift check reads the span from ExampleGen and the previous verdict through the
    # pointer at a fixed place under the pipeline root (no resolver: see DriftCheck).
    drift = by_id[dag.DRIFT_CHECK_ID]
    assert by_id[dag.EXAMPLE_GEN_ID] in drift.upstream_nodes
    assert drift.exec_properties["baseline"] == f"{cfg.pipeline_root}/baselines/{cfg.name}/drift"
    assert not any(isinstance(c, Resolver) and "previous" in c.outputs for c in by_id.values())

    logs = tmp_path / "requests"
    logs.mkdir()
    stopping = load_config(
        LOCAL,
        [
            "root=/tmp/taxifare-unit",
            f"monitoring.skew.serving_logs={logs}",
            "monitoring.skew.on_detect=stop",
            "monitoring.features.company=0.3",
        ],
    )
    by_id = {c.id: c for c in dag.create_pipeline(stopping, tfx_sample_dir()).components}
    skew = by_id[dag.SKEW_CHECK_ID]
    assert skew.exec_properties["serving_logs"] == str(logs)
    assert thresholds_from_json(skew.exec_properties["thresholds"]).distance["company"] == 0.3
    gate = by_id[dag.MONITORING_GATE_ID]
    assert skew in gate.upstream_nodes
    assert (gate.exec_properties["stop_on_drift"], gate.exec_properties["stop_on_skew"]) == (0, 1)
    # The log's fingerprint changes when requests are logged, so the cache re-checks.
    before = skew.exec_properties["log_fingerprint"]
    (logs / "requests-1.tfrecord").write_bytes(b"x")
    after = dag.create_pipeline(stopping, tfx_sample_dir())
    assert {c.id: c for c in after.components}[dag.SKEW_CHECK_ID].exec_properties[
        "log_fingerprint"
    ] != before


def test_custom_artifact_types_import_by_their_type_name():
    """TFX's Vertex entrypoint imports a custom artifact type by the name in the spec."""
    from tfx.orchestration.kubeflow.v2 import compiler_utils
    from tfx.utils import import_utils

    from pipeline.components import monitoring as mon

    for cls in (mon.DriftVerdict, mon.SkewVerdict):
        assert import_utils.import_class_by_path(cls.TYPE_NAME) is cls
        assert compiler_utils._SCHEMA_TITLE_RE.fullmatch(cls.TYPE_NAME)


def _example_gen_executor(cfg, data_root) -> str:
    pipeline = dag.create_pipeline(cfg, str(data_root))
    (example_gen,) = [c for c in pipeline.components if c.id == dag.EXAMPLE_GEN_ID]
    return example_gen.executor_spec.executor_class.__module__


def test_example_gen_streams_large_local_inputs_and_keeps_tfx_for_the_sample(tmp_path):
    from pipeline.config import AUTO_MULTI_PROCESSING_BYTES

    ours, tfx = "pipeline.components.csv_example_gen", "tfx.components.example_gen"
    small = load_config(LOCAL, ["root=/tmp/taxifare-unit"])
    assert _example_gen_executor(small, tfx_sample_dir()).startswith(tfx)
    # A local input above the threshold (a sparse file: its size is what counts).
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "trips.csv", "wb") as fh:
        fh.truncate(AUTO_MULTI_PROCESSING_BYTES + 1)
    assert _example_gen_executor(small, big) == ours
    # Forced either way; streaming needs the shipped curated schema.
    forced = load_config(LOCAL, ["root=/tmp/taxifare-unit", "data.example_gen=streaming"])
    assert _example_gen_executor(forced, tfx_sample_dir()) == ours
    kept = load_config(LOCAL, ["root=/tmp/taxifare-unit", "data.example_gen=tfx"])
    assert _example_gen_executor(kept, big).startswith(tfx)
    inferred = load_config(
        LOCAL, ["root=/tmp/taxifare-unit", "data.example_gen=streaming", "schema.source=inferred"]
    )
    with pytest.raises(ConfigError, match="data.example_gen: streaming"):
        dag.create_pipeline(inferred, tfx_sample_dir())
    # With an inferred schema, auto keeps TFX's executor whatever the size.
    auto_inferred = load_config(LOCAL, ["root=/tmp/taxifare-unit", "schema.source=inferred"])
    assert _example_gen_executor(auto_inferred, big).startswith(tfx)
