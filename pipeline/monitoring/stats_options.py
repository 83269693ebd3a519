"""The one set of TFDV statistics options behind every comparison.

StatisticsGen in the pipeline, `taxifare drift` on data files and `taxifare skew` on a
request log all compute their statistics with these options, so the same data gives the
same numbers whichever path it took:

- the small-domain integer fields (hour, day, month, community areas) are counted per value
  (TFDV's categorical statistics), as the categories they are;
- numeric fields get a fine quantile histogram (QUANTILE_BUCKETS buckets), from which the
  comparison reads each side's distribution function.
"""

from __future__ import annotations

from typing import Any

from taxifare_modules import features as f

# 1% of the values per bucket: the distribution functions read off the histograms are then
# within about 1% of the exact ones, well below what a comparison can tell apart.
QUANTILE_BUCKETS = 100
# The request log's record of which model answered (pipeline/serving/request_log.py).
MODEL_VERSION_KEY = "model_version"


def categorical_schema(extra_categorical: tuple[str, ...] = ()) -> Any:
    """A schema that only marks the integer fields TFDV should count per value."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    for key in f.CATEGORICAL_INT_KEYS + extra_categorical:
        feature = schema.feature.add(name=key, type=schema_pb2.INT)
        feature.int_domain.is_categorical = True
    return schema


def monitoring_stats_options(
    allowlist: tuple[str, ...] | None = None, with_versions: bool = False
) -> Any:
    """The TFDV StatsOptions of every statistics pass that feeds a comparison.

    Args:
      allowlist: the features to compute (None: all, as StatisticsGen does).
      with_versions: also count the request log's model versions per value (so finding
        which models served costs no extra pass).
    """
    import tensorflow_data_validation as tfdv

    extra = (MODEL_VERSION_KEY,) if with_versions else ()
    features = None if allowlist is None else [*allowlist, *extra]
    return tfdv.StatsOptions(
        schema=categorical_schema(extra),
        feature_allowlist=features,
        num_quantiles_histogram_buckets=QUANTILE_BUCKETS,
    )
