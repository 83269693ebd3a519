"""Invariants of the feature module, the single source of truth for names."""

from __future__ import annotations

import os

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline.config import Config
from pipeline.dag import curated_schema_file
from taxifare_modules import features as f


@pytest.fixture(scope="module")
def schema() -> schema_pb2.Schema:
    return tfdv.load_schema_text(curated_schema_file(Config()))


def test_no_post_trip_field_is_a_model_input():
    for key in f.POST_TRIP_KEYS:
        assert key not in f.RAW_FEATURE_KEYS
    assert f.LABEL_KEY not in f.RAW_FEATURE_KEYS


def test_raw_keys_are_unique_and_partitioned():
    assert len(set(f.RAW_FEATURE_KEYS)) == len(f.RAW_FEATURE_KEYS)
    assert set(f.OPTIONAL_FEATURE_KEYS) | set(f.REQUIRED_FEATURE_KEYS) == set(f.RAW_FEATURE_KEYS)
    assert not set(f.OPTIONAL_FEATURE_KEYS) & set(f.REQUIRED_FEATURE_KEYS)


def test_transformed_names_are_unique_and_distinct_from_raw_names():
    names = list(f.DENSE_FLOAT_XF) + list(f.INT_XF)
    assert len(set(names)) == len(names)
    assert not set(names) & set(f.RAW_FEATURE_KEYS)
    assert all(size > 1 for size in f.CATEGORICAL_XF_SIZES.values())


def test_every_optional_field_has_a_missing_indicator():
    assert len(f.MISSING_INDICATOR_XF) == len(f.OPTIONAL_FEATURE_KEYS)
    assert set(f.MISSING_INDICATOR_XF) <= set(f.DENSE_FLOAT_XF)


def test_schema_types_match_the_feature_module(schema):
    types = {feat.name: feat.type for feat in schema.feature}
    for key in f.FLOAT_FEATURE_KEYS:
        assert types[key] == schema_pb2.FLOAT, key
    for key in f.INT_FEATURE_KEYS:
        assert types[key] == schema_pb2.INT, key
    for key in f.STRING_FEATURE_KEYS:
        assert types[key] == schema_pb2.BYTES, key
    assert types[f.LABEL_KEY] == schema_pb2.FLOAT


def test_schema_serving_environment_lacks_label_and_post_trip_fields(schema):
    serving = {feat.name for feat in schema.feature if "SERVING" not in feat.not_in_environment}
    assert f.LABEL_KEY not in serving
    assert not set(f.POST_TRIP_KEYS) & serving
    assert set(f.RAW_FEATURE_KEYS) <= serving


def test_schema_requires_booking_fields_and_allows_optional_ones_to_be_empty(schema):
    by_name = {feat.name: feat for feat in schema.feature}
    for key in f.REQUIRED_FEATURE_KEYS:
        assert by_name[key].value_count.min == 1, key
        assert by_name[key].presence.min_fraction == 1.0, key
    for key in f.OPTIONAL_FEATURE_KEYS:
        assert by_name[key].value_count.min == 0, key


def test_schema_ranges_agree_with_the_feature_module(schema):
    by_name = {feat.name: feat for feat in schema.feature}
    assert (by_name[f.HOUR_KEY].int_domain.min, by_name[f.HOUR_KEY].int_domain.max) == f.HOUR_RANGE
    assert (by_name[f.DAY_KEY].int_domain.min, by_name[f.DAY_KEY].int_domain.max) == f.DAY_RANGE
    assert (
        by_name[f.MONTH_KEY].int_domain.min,
        by_name[f.MONTH_KEY].int_domain.max,
    ) == f.MONTH_RANGE
    assert by_name[f.PICKUP_AREA_KEY].int_domain.max == f.AREA_COUNT
    assert os.path.basename(curated_schema_file(Config())) == "schema.pbtxt"
