"""Thresholds: documented defaults and strict YAML overrides."""

from __future__ import annotations

import pytest

from pipeline.monitoring import thresholds as th
from pipeline.monitoring.cli import main
from taxifare_modules import features as f


def test_defaults_pick_comparator_by_feature_kind():
    t = th.default_thresholds()
    assert t.comparator(f.PAYMENT_TYPE_KEY) == th.L_INFINITY
    # Small-domain integers are categories; coordinates, timestamp and derived values are not.
    assert t.comparator(f.HOUR_KEY) == th.L_INFINITY
    assert t.comparator(f.PICKUP_AREA_KEY) == th.L_INFINITY
    assert t.comparator(f.TIMESTAMP_KEY) == th.KOLMOGOROV_SMIRNOV
    assert t.comparator(f.DISTANCE_XF) == th.KOLMOGOROV_SMIRNOV
    assert t.distance[f.COMPANY_KEY] == th.DEFAULT_CATEGORICAL
    assert t.distance[f.HOUR_KEY] == th.DEFAULT_CATEGORICAL
    assert t.distance[f.TIMESTAMP_KEY] == th.DEFAULT_NUMERIC
    assert t.distance[f.PICKUP_LATITUDE_KEY] == th.DEFAULT_COORDINATE
    assert set(t.presence) == set(f.RAW_FEATURE_KEYS) | set(f.DERIVED_KEYS)
    assert t.significance == th.DEFAULT_SIGNIFICANCE


def test_yaml_overrides(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(
        "monitoring:\n"
        "  defaults: {numeric: 0.3, significance: 0.01}\n"
        f"  features:\n    {f.PAYMENT_TYPE_KEY}: 0.05\n"
        f"    {f.COMPANY_KEY}: {{distance: 0.2, presence: 0.5}}\n"
        "other_section: {ignored: true}\n"
    )
    t = th.load_thresholds(str(path))
    assert t.distance[f.PAYMENT_TYPE_KEY] == 0.05
    assert t.distance[f.COMPANY_KEY] == 0.2 and t.presence[f.COMPANY_KEY] == 0.5
    assert t.distance[f.TIMESTAMP_KEY] == 0.3
    assert t.significance == 0.01
    assert t.source == str(path)
    # What the pipeline hands its components keeps every field.
    assert th.thresholds_from_json(th.thresholds_to_json(t)) == t


@pytest.mark.parametrize(
    "body, key",
    [
        (f"monitoring:\n  features:\n    {f.HOUR_KEY}: 1.5\n", f"features.{f.HOUR_KEY}"),
        ("monitoring:\n  defaults: {categorical: 0}\n", "defaults.categorical"),
        ("monitoring:\n  defaults: {numeric: -0.1}\n", "defaults.numeric"),
        ("monitoring:\n  defaults: {significance: 0}\n", "defaults.significance"),
        ("monitoring:\n  defaults: {bogus: 0.1}\n", "defaults.bogus"),
        ("monitoring:\n  features: {no_such_feature: 0.1}\n", "features.no_such_feature"),
        ("monitoring:\n  thresholds: {}\n", "monitoring.thresholds"),
        ("monitoring:\n  min_examples: 0\n", "monitoring.min_examples"),
        ("monitoring:\n  min_examples: 2.5\n", "monitoring.min_examples"),
        ("monitoring:\n  drift: {time_features: month}\n", "monitoring.drift.time_features"),
        ("monitoring:\n  drift: {time_features: [fare]}\n", "monitoring.drift.time_features"),
    ],
)
def test_bad_threshold_names_key_and_file(tmp_path, body, key):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(th.ThresholdError) as e:
        th.load_thresholds(str(path))
    assert key in str(e.value) and str(path) in str(e.value)


def test_cli_threshold_out_of_range_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(f"monitoring:\n  features:\n    {f.HOUR_KEY}: 2\n")
    code = main(
        ["skew", "--serving-logs", str(tmp_path), "--training-stats", "x.pb"]
        + ["--config", str(path), "--out", str(tmp_path / "out")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"monitoring.features.{f.HOUR_KEY}" in err and str(path) in err and "(0, 1]" in err


def test_time_features_and_minimum_default_from_features_and_travel_to_components(tmp_path):
    t = th.default_thresholds()
    assert t.time_features == (f.TIMESTAMP_KEY, f.MONTH_KEY)
    assert t.min_examples == th.MIN_EXAMPLES
    path = tmp_path / "t.yaml"
    path.write_text(
        "monitoring:\n  min_examples: 30\n"
        f"  drift: {{on_detect: stop, time_features: [{f.TIMESTAMP_KEY}]}}\n"
    )
    t = th.load_thresholds(str(path))
    assert t.time_features == (f.TIMESTAMP_KEY,) and t.min_examples == 30
    assert th.thresholds_from_json(th.thresholds_to_json(t)) == t


def test_pipeline_config_hands_its_time_features_to_the_checks(tmp_path):
    from pipeline.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text(
        f"monitoring:\n  min_examples: 50\n  drift: {{time_features: [{f.MONTH_KEY}]}}\n"
    )
    monitoring = load_config(str(path)).monitoring
    assert monitoring.drift.time_features == (f.MONTH_KEY,)
    assert monitoring.thresholds().time_features == (f.MONTH_KEY,)
    assert monitoring.thresholds().min_examples == 50
    path.write_text("monitoring:\n  drift: {time_features: [no_such_field]}\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert "monitoring.drift.time_features" in str(e.value) and "no_such_field" in str(e.value)
