"""create_pipeline: the one place the taxifare DAG is written, for every orchestrator."""

from __future__ import annotations

import json
import posixpath

import tensorflow_model_analysis as tfma

# TFX's public names, imported from their modules: `from tfx import v1` would also import
# every extension TFX ships (the Vertex AI and BigQuery clients: seconds of every run's
# start). The Vertex components are imported only for a Vertex pipeline.
from tfx.components import (
    CsvExampleGen,
    Evaluator,
    ExampleValidator,
    Pusher,
    SchemaGen,
    StatisticsGen,
    Trainer,
    Transform,
    Tuner,
)
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.dsl.components.base.executor_spec import ExecutorClassSpec
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy,
)
from tfx.orchestration.metadata import sqlite_metadata_connection_config
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import example_gen_pb2, pusher_pb2, range_config_pb2, trainer_pb2, tuner_pb2
from tfx.types import Channel, standard_artifacts
from tfx.types.channel import union as channel_union

from pipeline.components import atomic_pusher
from pipeline.components.anomaly_gate import AnomalyGate
from pipeline.components.csv_example_gen import CsvExampleGen as CuratedCsvExampleGen
from pipeline.components.csv_example_gen import custom_config as fare_range_custom_config
from pipeline.components.fare_filter import FareFilter
from pipeline.components.monitoring import DriftCheck, MonitoringGate, SkewCheck
from pipeline.config import AUTO_MULTI_PROCESSING_BYTES, BIGQUERY, Config, ConfigError
from pipeline.curated_schema import curated_schema_file
from pipeline.data_source import (
    input_size_bytes,
    window_spans,
    with_input_beam_args,
)
from pipeline.monitoring.stats import request_log_fingerprint
from pipeline.monitoring.stats_options import monitoring_stats_options
from pipeline.monitoring.thresholds import thresholds_to_json
from pipeline.names import (
    ANOMALY_GATE_ID,
    DRIFT_CHECK_ID,
    EVAL_SPLIT,
    EVALUATOR_ID,
    EXAMPLE_GEN_ID,
    EXAMPLE_VALIDATOR_ID,
    FARE_FILTER_ID,
    MODEL_RESOLVER_ID,
    MONITORING_GATE_ID,
    PUSHER_ID,
    SCHEMA_GEN_ID,
    SKEW_CHECK_ID,
    STATISTICS_GEN_ID,
    TEST_SPLIT,
    TRAIN_SPLIT,
    TRAINER_ID,
    TRANSFORM_ID,
    TUNER_ID,
)
from pipeline.split_sizing import SplitPlan, plan_split
from pipeline.vertex import component_config as vertex_config
from taxifare_modules import features as f
from taxifare_modules import trainer as trainer_module
from taxifare_modules import tuning as tuning_module

# The ML code TFX runs, by dotted path into the installed package (no module files copied).
PREPROCESSING_FN = "taxifare_modules.preprocessing.preprocessing_fn"
RUN_FN = "taxifare_modules.trainer.run_fn"
TUNER_FN = "taxifare_modules.tuning.tuner_fn"


def drift_baseline_dir(cfg: Config) -> str:
    """The folder whose pointer names the latest drift verdict (see DriftCheck).

    A fixed place under the pipeline root, the same for every run of the pipeline: on Vertex
    each run writes its artifacts under a folder of its own.
    """
    return posixpath.join(cfg.pipeline_root, "baselines", cfg.name, "drift")


def eval_config(cfg: Config) -> tfma.EvalConfig:
    """TFMA config: RMSE/MAE/count overall and by slice, with the blessing thresholds."""
    rmse_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(upper_bound={"value": cfg.evaluation.max_rmse}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.LOWER_IS_BETTER,
            absolute={"value": cfg.evaluation.max_rmse_increase},
        ),
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=f.SERVING_TF_EXAMPLE_SIGNATURE,
                label_key=f.LABEL_KEY,
                prediction_key=f.PREDICTION_KEY,
            )
        ],
        slicing_specs=[tfma.SlicingSpec()]
        + [tfma.SlicingSpec(feature_keys=[key]) for key in f.SLICE_KEYS],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(class_name="MeanAbsoluteError"),
                    # Thresholds gate on the overall slice; per-slice figures are reported.
                    tfma.MetricConfig(
                        class_name="RootMeanSquaredError",
                        per_slice_thresholds=[
                            tfma.PerSliceMetricThreshold(
                                slicing_specs=[tfma.SlicingSpec()], threshold=rmse_threshold
                            )
                        ],
                    ),
                ]
            )
        ],
    )


def trainer_custom_config(cfg: Config) -> dict:
    """The Trainer's custom_config: every training field run_fn reads."""
    t = cfg.training
    return {
        trainer_module.BATCH_SIZE_KEY: t.batch_size,
        trainer_module.EVAL_BATCH_SIZE_KEY: t.eval_batch_size,
        trainer_module.SEED_KEY: t.seed,
        trainer_module.IN_MEMORY_KEY: t.in_memory,
        trainer_module.IN_MEMORY_MAX_ROWS_KEY: t.in_memory_max_rows,
        trainer_module.EPOCHS_KEY: t.epochs,
        trainer_module.PATIENCE_KEY: t.early_stopping_patience,
        trainer_module.MIN_DELTA_KEY: t.early_stopping_min_delta,
        trainer_module.VALIDATION_EXAMPLES_KEY: t.validation_examples,
        trainer_module.MODEL_PARAMS_KEY: {
            "hidden_units": list(t.model.hidden_units),
            "embedding_dim": t.model.embedding_dim,
            "learning_rate": t.model.learning_rate,
            "dropout": t.model.dropout,
            "fare_prior": t.model.fare_prior,
            "huber_delta": t.model.huber_delta,
            "coordinate_buckets": t.model.coordinate_buckets,
            "cross_hash_buckets": t.model.cross_hash_buckets,
        },
    }


def tuner_custom_config(cfg: Config) -> dict:
    """The Tuner's custom_config: the Trainer's (every trial's starting point) + the search."""
    return {
        **trainer_custom_config(cfg),
        tuning_module.TRIALS_KEY: cfg.tuning.trials,
        tuning_module.ALGORITHM_KEY: cfg.tuning.algorithm,
        tuning_module.TRIAL_EPOCHS_KEY: cfg.tuning.epochs,
        tuning_module.SPACE_KEY: {k: list(v) for k, v in cfg.tuning.search_space.items()},
    }


def _train_args(cfg: Config) -> trainer_pb2.TrainArgs:
    # No num_steps: the epochs over the counted examples decide (train_steps is only a cap).
    steps = cfg.training.train_steps
    return trainer_pb2.TrainArgs(splits=[TRAIN_SPLIT], num_steps=steps)


def _eval_args(cfg: Config) -> trainer_pb2.EvalArgs:
    return trainer_pb2.EvalArgs(splits=[EVAL_SPLIT], num_steps=cfg.training.eval_steps)


def split_plan(cfg: Config, data_root: str) -> SplitPlan:
    """The hash buckets of ExampleGen's split for this input (see pipeline/split_sizing.py).

    With a window of spans each span's ExampleGen splits its own span, so the rows are
    estimated per span: the window's bytes over its spans.
    """
    size = input_size_bytes(cfg, data_root)
    window = size is not None and cfg.data.train_spans > 1
    spans = len(window_spans(cfg, data_root)) if window else 1
    split = cfg.data.split
    return plan_split(
        (split.train_buckets, split.eval_buckets, split.test_buckets),
        split.max_eval_rows,
        split.max_test_rows,
        split.bytes_per_row,
        None if size is None else size // max(1, spans),
    )


def streaming_example_gen(cfg: Config, data_root: str) -> bool:
    """Whether ExampleGen is the streaming one (see `data.example_gen` in pipeline/config.py).

    Raises:
      ConfigError: `streaming` was asked for with a schema other than the shipped curated one
        (its column types come from that schema).
    """
    curated = cfg.schema_config.source == "curated" and cfg.schema_config.path is None
    choice = cfg.data.example_gen
    if choice == "streaming" and not curated:
        raise ConfigError(
            "data.example_gen: streaming types the columns by the shipped curated schema;"
            " with schema.source inferred or a schema.path, use tfx or auto"
        )
    if choice != "auto":
        return choice == "streaming"
    size = input_size_bytes(cfg, data_root)
    return curated and size is not None and size > AUTO_MULTI_PROCESSING_BYTES


def span_node_id(node_id: str, span: int) -> str:
    """The id of a component that reads an earlier span of the training window."""
    return f"{node_id}_span{span}"


def _span_range(span: int) -> range_config_pb2.RangeConfig:
    """TFX's static range of one span (ExampleGen reads one span per execution)."""
    return range_config_pb2.RangeConfig(
        static_range=range_config_pb2.StaticRange(start_span_number=span, end_span_number=span)
    )


def _training_window(cfg: Config, data_root: str) -> list[int]:
    """The spans of the training window, oldest first; empty for a window of one span.

    Raises:
      ConfigError: a window on Vertex, whose compiled pipeline cannot take a union of
        ExampleGen outputs.
    """
    if cfg.data.train_spans == 1:
        return []
    if cfg.vertex is not None:
        raise ConfigError(
            f"data.train_spans: {cfg.data.train_spans} is not supported on Vertex AI yet (the"
            " pipeline spec takes one ExampleGen output per input); use 1"
        )
    return window_spans(cfg, data_root)


def create_pipeline(cfg: Config, data_root: str, until: str | None = None) -> Pipeline:
    """Builds the taxifare pipeline.

    Args:
      cfg: the typed config.
      data_root: the resolved input folder of CsvExampleGen (see data_source.resolve_input).
      until: a component id; when given, the pipeline ends with that component (e.g.
        SCHEMA_GEN_ID to infer a schema for review without training).

    Returns:
      The TFX pipeline, ready for any orchestrator.
    """
    # The spans Transform and the Trainer learn from, newest last; pinned only for a window
    # (one span: ExampleGen takes the latest itself, when the pipeline runs).
    window = _training_window(cfg, data_root)
    input_config = None
    if cfg.data.pattern:
        input_config = example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name="single_split", pattern=cfg.data.pattern)]
        )
    # The configured buckets, or at scale holdouts capped in rows and the rest to train.
    plan = split_plan(cfg, data_root)
    output_config = example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[
                example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=buckets)
                for name, buckets in (
                    (TRAIN_SPLIT, plan.train_buckets),
                    (EVAL_SPLIT, plan.eval_buckets),
                    (TEST_SPLIT, plan.test_buckets),
                )
            ]
        )
    )
    if cfg.data.input == BIGQUERY:
        from tfx.dsl.components.base.executor_spec import BeamExecutorSpec
        from tfx.extensions.google_cloud_big_query.example_gen.component import (
            BigQueryExampleGen,
        )

        from pipeline import bigquery, bigquery_executor

        bq = cfg.data.bigquery
        # Runs the query over the BigQuery table for the month's span (TFX's static span
        # range fills the query's span placeholder) and splits train/eval/test.
        example_gen = BigQueryExampleGen(
            query=bigquery.bigquery_query(bq),
            output_config=output_config,
            # A fixed month (or `previous` in a local run, whose DAG is built as it starts):
            # a static range of that month's span. `previous` on Vertex: no range; the
            # executor resolves the month when it runs (the compiled spec is reused).
            range_config=(
                None
                if bigquery.is_relative_month(bq) and cfg.vertex is not None
                else _span_range(bigquery.month_span(bigquery.resolve_month(bq.month)))
            ),
            custom_config=bigquery_executor.custom_config(
                bigquery.read_settings(
                    bq,
                    bq.project or (cfg.vertex.project if cfg.vertex else None),
                    cfg.vertex.labels if cfg.vertex else {},
                )
            ),
            custom_executor_spec=BeamExecutorSpec(bigquery_executor.Executor),
        ).with_id(EXAMPLE_GEN_ID)
    else:
        # Reads the trip CSVs (the latest span when the pattern has {SPAN}), splits train/eval/test:
        # typed by the shipped curated schema and streamed (memory flat in the rows); TFX's,
        # which infers the column types, for another schema (a new data source).
        # The streaming one also drops the implausible fares as it reads them
        # (data.fold_fare_filter), so that FareFilter copies its files instead of a second pass.
        streaming = streaming_example_gen(cfg, data_root)
        example_gen_class = CuratedCsvExampleGen if streaming else CsvExampleGen
        fare_range_config = (
            {"custom_config": fare_range_custom_config(cfg.data.min_fare, cfg.data.max_fare)}
            if streaming and cfg.data.fold_fare_filter
            else {}
        )
        example_gen = example_gen_class(
            input_base=data_root,
            input_config=input_config,
            output_config=output_config,
            range_config=_span_range(window[-1]) if window else None,
            **fare_range_config,
        ).with_id(EXAMPLE_GEN_ID)

    # Drops trips whose fare is not a plausible label and counts them (copies the files and
    # counts when ExampleGen applied the same range).
    fare_filter = FareFilter(
        examples=example_gen.outputs["examples"],
        min_fare=cfg.data.min_fare,
        max_fare=cfg.data.max_fare,
        # Too few trips left (or none) stops the run here, before Transform.
        min_train_trips=cfg.data.min_train_trips,
        min_test_trips=cfg.data.min_test_trips,
    ).with_id(FARE_FILTER_ID)
    examples = fare_filter.outputs["filtered_examples"]

    # The earlier spans of the training window (data.train_spans), each read and filtered as
    # the newest is, by TFX's static span range; only Transform and the Trainer take them.
    earlier_spans = []  # their ExampleGens and FareFilters
    window_examples = []
    for span in window[:-1]:
        span_example_gen = example_gen_class(
            input_base=data_root,
            input_config=input_config,
            output_config=output_config,
            range_config=_span_range(span),
            **fare_range_config,
        ).with_id(span_node_id(EXAMPLE_GEN_ID, span))
        span_fare_filter = FareFilter(
            examples=span_example_gen.outputs["examples"],
            min_fare=cfg.data.min_fare,
            max_fare=cfg.data.max_fare,
        ).with_id(span_node_id(FARE_FILTER_ID, span))
        earlier_spans += [span_example_gen, span_fare_filter]
        window_examples.append(span_fare_filter.outputs["filtered_examples"])
    # One channel of the window's filtered examples, one artifact per span.
    training_examples = channel_union([*window_examples, examples]) if window_examples else examples

    # Computes statistics of every feature (the reference for validation, drift and skew),
    # with the options every comparison's statistics share (categorical small integers, fine
    # quantiles).
    statistics_gen = StatisticsGen(
        examples=examples, stats_options=monitoring_stats_options()
    ).with_id(STATISTICS_GEN_ID)

    if cfg.schema_config.source == "curated":
        # Imports the reviewed schema committed to the repo.
        schema_gen = ImportSchemaGen(schema_file=curated_schema_file(cfg)).with_id(SCHEMA_GEN_ID)
    else:
        # Infers a schema from this data (for a new data source; review it, then curate it).
        schema_gen = SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False
        ).with_id(SCHEMA_GEN_ID)

    # Checks the statistics against the schema and records the anomalies.
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    ).with_id(EXAMPLE_VALIDATOR_ID)

    # Stops the run, with the list of anomalies, when there are any.
    gate = AnomalyGate(anomalies=example_validator.outputs["anomalies"]).with_id(ANOMALY_GATE_ID)

    thresholds = thresholds_to_json(cfg.monitoring.thresholds())
    # Compares this span's training statistics with the previous span's (data drift); the
    # latest verdict, which holds the statistics of the span checked before, is found through
    # a pointer at a fixed place under the pipeline root (on every orchestrator alike).
    drift_check = DriftCheck(
        examples=example_gen.outputs["examples"],
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
        thresholds=thresholds,
        baseline=drift_baseline_dir(cfg),
    ).with_id(DRIFT_CHECK_ID)

    # Finds the last blessed model: the served one, whose request log SkewCheck reads, and
    # the baseline the candidate must not be worse than.
    model_resolver = Resolver(
        strategy_class=LatestBlessedModelStrategy,
        model=Channel(type=standard_artifacts.Model),
        model_blessing=Channel(type=standard_artifacts.ModelBlessing),
    ).with_id(MODEL_RESOLVER_ID)

    monitoring = [drift_check]
    skew_verdict = None
    serving_logs = cfg.monitoring.skew.serving_logs
    if serving_logs is not None:
        # Compares the served model's request log with this run's training statistics.
        skew_check = SkewCheck(
            statistics=statistics_gen.outputs["statistics"],
            schema=schema_gen.outputs["schema"],
            serving_logs=serving_logs,
            log_fingerprint=request_log_fingerprint(serving_logs),
            thresholds=thresholds,
            model=model_resolver.outputs["model"],
            window_days=cfg.monitoring.skew.window_days,
            max_rows=cfg.monitoring.skew.max_rows,
            query_labels=json.dumps(cfg.vertex.labels if cfg.vertex else {}, sort_keys=True),
        ).with_id(SKEW_CHECK_ID)
        monitoring.append(skew_check)
        skew_verdict = skew_check.outputs["verdict"]

    # Stops the run before Transform when a check found drift or skew and its on_detect is
    # `stop`; with `report` the verdicts are recorded and the run goes on.
    monitoring_gate = MonitoringGate(
        drift=drift_check.outputs["verdict"],
        skew=skew_verdict,
        stop_on_drift=int(cfg.monitoring.drift.on_detect == "stop"),
        stop_on_skew=int(cfg.monitoring.skew.on_detect == "stop"),
    ).with_id(MONITORING_GATE_ID)
    monitoring.append(monitoring_gate)

    # Fits and applies the one feature graph used in training and in serving.
    transform = Transform(
        examples=training_examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        # StatisticsGen already describes the data; TFDV passes inside Transform cost time.
        disable_statistics=True,
        # Nothing feeds the analyzer cache back (each span is analysed afresh), so writing it
        # would be Beam stages for nothing.
        disable_analyzer_cache=True,
    ).with_id(TRANSFORM_ID)
    transform.add_upstream_node(gate)
    transform.add_upstream_node(monitoring_gate)

    tuner = None
    if cfg.tuning.enabled:
        # Searches the model's and the preprocessing's hyperparameters (trials scored on the
        # eval split); its best ones are the Trainer's, recorded in MLMD as an artifact. On
        # Vertex, as a Vertex AI Training job whose machines run trials in parallel.
        tuner_args = {
            "tuner_fn": TUNER_FN,
            "examples": transform.outputs["transformed_examples"],
            "transform_graph": transform.outputs["transform_graph"],
            "schema": schema_gen.outputs["schema"],
            "train_args": _train_args(cfg),
            "eval_args": _eval_args(cfg),
            "custom_config": tuner_custom_config(cfg),
        }
        if cfg.vertex is not None:
            from tfx.extensions.google_cloud_ai_platform.tuner.component import (
                Tuner as VertexTuner,
            )

            tuner_args["custom_config"].update(
                vertex_config.tuner_custom_config(cfg.vertex, cfg.tuning.parallel_trials)
            )
            tuner = VertexTuner(
                **tuner_args,
                tune_args=tuner_pb2.TuneArgs(num_parallel_trials=cfg.tuning.parallel_trials),
            ).with_id(TUNER_ID)
        else:
            tuner = Tuner(**tuner_args).with_id(TUNER_ID)

    # Trains the Keras model (epochs with early stopping on the eval split) and exports it
    # with the Transform graph inside; on Vertex, as a Vertex AI Training job on the scale
    # tier's machines (GPUs, workers).
    trainer_class = Trainer
    custom_config = trainer_custom_config(cfg)
    # The split it learns from and why, for its training record (summary, `taxifare runs`).
    custom_config[trainer_module.DATA_SPLIT_KEY] = plan.to_json()
    if cfg.vertex is not None:
        from tfx.extensions.google_cloud_ai_platform.trainer.component import (
            Trainer as VertexTrainer,
        )

        trainer_class = VertexTrainer
        custom_config.update(vertex_config.trainer_custom_config(cfg.vertex))
    trainer = trainer_class(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner is not None else None,
        train_args=_train_args(cfg),
        eval_args=_eval_args(cfg),
        custom_config=custom_config,
    ).with_id(TRAINER_ID)

    # Evaluates the candidate on the test split, overall and by slice, and blesses it or not.
    evaluator = Evaluator(
        examples=examples,
        example_splits=[TEST_SPLIT],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config(cfg),
    ).with_id(EVALUATOR_ID)

    if cfg.vertex is not None and cfg.vertex.push == "endpoint":
        # Deploys a blessed model to the autoscaling Vertex AI endpoint and turns on the
        # endpoint's request-response logging to BigQuery.
        from pipeline.vertex.pusher import Pusher as VertexPusher

        pusher = VertexPusher(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            custom_config=vertex_config.pusher_custom_config(cfg.vertex, cfg.name),
        ).with_id(PUSHER_ID)
    else:
        # Copies a blessed model to <serving root>/<name>/<version>/, the layout TF Serving
        # reads (a gs:// folder on Vertex): staged beside it, then moved in all at once.
        pusher = Pusher(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            push_destination=pusher_pb2.PushDestination(
                filesystem=pusher_pb2.PushDestination.Filesystem(
                    base_directory=cfg.serving_model_dir
                )
            ),
            custom_executor_spec=ExecutorClassSpec(atomic_pusher.Executor),
        ).with_id(PUSHER_ID)

    components = [
        example_gen,
        fare_filter,
        *earlier_spans,
        statistics_gen,
        schema_gen,
        example_validator,
        gate,
        model_resolver,
        *monitoring,
        transform,
        *([tuner] if tuner is not None else []),
        trainer,
        evaluator,
        pusher,
    ]
    if until is not None:
        ids = [c.id for c in components]
        if until not in ids:
            raise ValueError(f"unknown component id {until!r}; expected one of {ids}")
        components = components[: ids.index(until) + 1]
    if cfg.vertex is not None:
        from tfx.dsl.components.base.executor_spec import BeamExecutorSpec

        # Vertex keeps its own ML Metadata; the Beam options come from vertex.dataflow.
        vertex_pipeline = Pipeline(
            pipeline_name=cfg.name,
            pipeline_root=cfg.pipeline_root,
            components=components,
            enable_cache=cfg.orchestrator.enable_cache,
            beam_pipeline_args=with_input_beam_args(
                cfg, vertex_config.beam_pipeline_args(cfg.vertex, cfg.beam)
            ),
        )
        for component in components:
            spec = getattr(component, "executor_spec", None)
            if isinstance(spec, BeamExecutorSpec):
                # Labels naming the pipeline and the component on its Dataflow job, ahead of
                # the pipeline's options (which Pipeline copied in), so that beam.extra_args
                # stay last and override.
                labels = vertex_config.component_beam_args(cfg.vertex, cfg.name, component.id)
                spec.beam_pipeline_args = labels + list(spec.beam_pipeline_args)
        return vertex_pipeline
    return Pipeline(
        pipeline_name=cfg.name,
        pipeline_root=cfg.pipeline_root,
        components=components,
        enable_cache=cfg.orchestrator.enable_cache,
        metadata_connection_config=sqlite_metadata_connection_config(cfg.metadata_path),
        beam_pipeline_args=with_input_beam_args(
            cfg, cfg.beam.to_args(input_size_bytes(cfg, data_root))
        ),
    )
