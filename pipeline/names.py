"""Names the pipeline writes into MLMD and the commands that read it back.

The DAG (dag.py), the components that record properties and the read-only commands
(`taxifare runs`, `report`) all take these names from here. This module imports nothing
beyond the standard library, so a command that only reads MLMD never pays for importing
TensorFlow, TFX or Beam to learn what a node is called.
"""

from __future__ import annotations

# Component ids: each component's `.with_id(...)` in dag.py, and its node name in MLMD.
EXAMPLE_GEN_ID = "CsvExampleGen"
FARE_FILTER_ID = "FareFilter"
STATISTICS_GEN_ID = "StatisticsGen"
SCHEMA_GEN_ID = "SchemaGen"
EXAMPLE_VALIDATOR_ID = "ExampleValidator"
ANOMALY_GATE_ID = "AnomalyGate"
DRIFT_CHECK_ID = "DriftCheck"
SKEW_CHECK_ID = "SkewCheck"
MONITORING_GATE_ID = "MonitoringGate"
TRANSFORM_ID = "Transform"
TUNER_ID = "Tuner"
TRAINER_ID = "Trainer"
MODEL_RESOLVER_ID = "LatestBlessedModelResolver"
EVALUATOR_ID = "Evaluator"
PUSHER_ID = "Pusher"

# ExampleGen's splits: the Trainer learns on train and stops early on eval (the Tuner scores
# its trials on eval too); the Evaluator blesses on test, which nothing else looks at.
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
TEST_SPLIT = "test"

# Custom properties of the FareFilter's output examples.
ROWS_READ_PROPERTY = "rows_read"
ROWS_EXCLUDED_PROPERTY = "rows_excluded"
# Where the fare range was applied (data.fold_fare_filter): 1 on the FareFilter's output when
# ExampleGen had already dropped the implausible fares (FareFilter copied its files), 0 when
# FareFilter read and filtered every record itself.
FARE_FILTER_FOLDED_PROPERTY = "fare_filter_folded"
# Custom properties of the streaming ExampleGen's examples when it applied the fare range
# itself: the range (a fare must be above the min and at most the max), and per split and in
# all the rows read and excluded, named as on the FareFilter's output.
FARE_RANGE_MIN_PROPERTY = "fare_range_min"
FARE_RANGE_MAX_PROPERTY = "fare_range_max"

# Custom properties of the Pusher's pushed_model artifact.
PUSHED_PROPERTY = "pushed"
PUSHED_DESTINATION_PROPERTY = "pushed_destination"
PUSHED_VERSION_PROPERTY = "pushed_version"
# Set (1) when the blessed model was byte for byte the version already served: no new push.
ALREADY_SERVING_PROPERTY = "already_serving"
