"""What a run's report shows, read from the artifacts MLMD points to.

Read through pipeline/artifact_io (any filesystem; local paths without TensorFlow) and the
libraries' own protocol buffers, so `taxifare report` starts in about a second; only
running the model (predict_examples) imports TensorFlow.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import math
import os
from typing import Any

from pipeline import artifact_io
from pipeline.example_wire import decode_example
from pipeline.report.svg import log_axis
from taxifare_modules import features as f

_RMSE = "root_mean_squared_error"
_MAE = "mean_absolute_error"
_COUNT = "example_count"
# Bars of a numeric distribution: enough to show a shape, few enough that each bar holds
# several of TFDV's quantile buckets (the shares are read off those, 1% of the values each).
_NUMERIC_BINS = 24
# Categories a distribution shows by name; the rest are one "other" bar.
_TOP_CATEGORIES = 24
# A non-negative field is drawn on a log scale when its largest value lies further above the
# median than this many times the width of its middle 90% (fares, miles and seconds have a few
# values 100 times the typical one; coordinates and times do not).
_LONG_TAIL = 10.0
# Integers that name a place, not an amount: drawn as categories and labelled in full (a
# mean or a numeric axis of census-tract numbers says nothing).
IDENTIFIER_KEYS = f.AREA_KEYS + f.IGNORED_KEYS
# The bar of the categories not shown by name.
OTHER_LABEL = "other values"


@dataclasses.dataclass
class FeatureSplits:
    """One feature's statistics in each split: missing share, mean, and a distribution."""

    name: str
    missing: dict[str, float]  # split -> share of examples without a value
    mean: dict[str, float | None]  # None: no mean to show (no values, or not an amount)
    # The distribution on bins shared by every split: (label, share per split). Shares are of
    # the split's values; a split without values has none.
    bins: list[tuple[str, dict[str, float]]]
    numeric: bool
    # Split -> how many examples have a value (0: "no values", not a mean of nothing).
    with_values: dict[str, int] = dataclasses.field(default_factory=dict)
    # Numeric bins: their edges (one more than bins); None for categories.
    edges: list[float] | None = None
    # Numeric bins on a log scale: x is drawn as log10(1 + x / log_offset).
    log_offset: float | None = None
    # How many quantile buckets the numeric shares were read off (the fewest of any split;
    # 0: TFDV's equal-width histogram, for statistics without quantiles).
    quantile_buckets: int = 0


def _split_stats(uri: str, split: str):
    from pipeline.runs import read_split_statistics

    stats = read_split_statistics(uri, split)
    return stats.datasets[0] if stats.datasets else None


def _common_stats(feature):
    kind = feature.WhichOneof("stats")
    stats = getattr(feature, kind)
    return stats.common_stats, kind


def _with_values(feature) -> int:
    # An empty CSV cell is a feature present with no values: missing too.
    common, _ = _common_stats(feature)
    if common.max_num_values == 0:
        return 0
    return int(min(common.num_non_missing, common.tot_num_values or common.num_non_missing))


def _missing_share(feature, num_examples: int) -> float:
    return 1 - _with_values(feature) / num_examples if num_examples else 0.0


def _compact(value: float) -> str:
    """A bin edge as people read it: whole numbers in full, others to 4 significant digits."""
    if value == int(value) or abs(value) >= 1e4:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _value_buckets(feature) -> list[tuple[float, float, float]]:
    """A numeric feature's (low, high, count) buckets: TFDV's quantiles histogram if any."""
    histograms = feature.num_stats.histograms
    quantiles = [h for h in histograms if h.type == h.HistogramType.QUANTILES]
    standard = [h for h in histograms if h.type == h.HistogramType.STANDARD]
    for histogram in quantiles + standard:
        buckets = [(b.low_value, b.high_value, b.sample_count) for b in histogram.buckets]
        if sum(count for _, _, count in buckets) > 0:
            return buckets
    return []


def _quantile_count(feature) -> int:
    histograms = feature.num_stats.histograms
    quantiles = [h for h in histograms if h.type == h.HistogramType.QUANTILES]
    if quantiles and sum(b.sample_count for b in quantiles[0].buckets) > 0:
        return len(quantiles[0].buckets)
    return 0


def _quantile(buckets: list[tuple[float, float, float]], q: float) -> float:
    """The q-quantile of values spread evenly inside each bucket (buckets in order)."""
    total = sum(c for _, _, c in buckets)
    seen = 0.0
    for low, high, count in buckets:
        if count > 0 and seen + count >= q * total:
            return low + (high - low) * (q * total - seen) / count
        seen += count
    return buckets[-1][1]


def _round_sig(value: float, digits: int = 3) -> float:
    if value == 0:
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _log_offset(buckets: list[tuple[float, float, float]], low: float, high: float) -> float | None:
    """The offset c of a log10(1 + x / c) axis for a long-tailed field; None: a linear axis."""
    if low < 0:
        return None
    buckets = sorted(buckets)
    median, p95 = _quantile(buckets, 0.5), _quantile(buckets, 0.95)
    if high - median <= _LONG_TAIL * (p95 - _quantile(buckets, 0.05)):
        return None
    # A tenth of a typical value: the axis is linear below it, logarithmic above.
    typical = next((q for q in (median, p95, high) if q > 0), 0.0)
    return _round_sig(typical / 10, 1) if typical > 0 else None


def _from_axis(value: float, log_offset: float | None) -> float:
    return value if log_offset is None else log_offset * (10**value - 1)


def _nice_step(span: float, count: int) -> float:
    raw = span / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * step:
            return m * step
    return 10 * step


def _month_start(year: int, month: int) -> float:
    return datetime.datetime(year, month, 1, tzinfo=datetime.timezone.utc).timestamp()


def _calendar_edges(low: float, high: float) -> list[float]:
    """Month starts (UTC) around [low, high], 1, 2, 3, 6 or 12 months apart."""
    first = datetime.datetime.fromtimestamp(low, datetime.timezone.utc)
    last = datetime.datetime.fromtimestamp(high, datetime.timezone.utc)
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    step = next((m for m in (1, 2, 3, 6) if months / m <= _NUMERIC_BINS), 12)
    index = first.year * 12 + (first.month - 1) // step * step
    edges = []
    while not edges or edges[-1] <= high:
        edges.append(_month_start(index // 12, index % 12 + 1))
        index += step
    return edges


def _numeric_edges(low: float, high: float, log_offset: float | None) -> list[float]:
    """Bin edges from low to high: round steps, or equal steps on the log axis."""
    if high <= low:
        return [low, low + 1]
    if log_offset is None:
        step = _nice_step(high - low, _NUMERIC_BINS)
        start = math.floor(low / step) * step
        count = max(1, math.ceil((high - start) / step - 1e-9))
        return [_round_sig(start + i * step, 12) for i in range(count + 1)]
    a, b = log_axis(low, log_offset), log_axis(high, log_offset)
    inner = [
        _round_sig(_from_axis(a + (b - a) * i / _NUMERIC_BINS, log_offset))
        for i in range(1, _NUMERIC_BINS)
    ]
    edges = [low] + sorted({e for e in inner if low < e < high}) + [high]
    return edges


def _spread(
    buckets: list[tuple[float, float, float]], edges: list[float], log_offset: float | None
) -> list[float]:
    """Each bin's share of the values: a bucket's count split by overlap on the drawn axis."""
    total = sum(c for _, _, c in buckets)
    shares = [0.0] * (len(edges) - 1)
    axis = [log_axis(e, log_offset) for e in edges]
    last = len(shares) - 1
    for low, high, count in buckets:
        if count <= 0:
            continue
        if high <= low:  # all at one value: the bin holding it (the last one holds its top)
            i = min(max(bisect.bisect_right(edges, low) - 1, 0), last)
            shares[i] += count / total
            continue
        lo, hi = log_axis(low, log_offset), log_axis(high, log_offset)
        for i in range(len(shares)):
            overlap = min(hi, axis[i + 1]) - max(lo, axis[i])
            if overlap > 0:
                shares[i] += count * overlap / (hi - lo) / total
    return shares


def _numeric_bins(
    name: str, per_split: dict[str, Any]
) -> tuple[list[tuple[str, dict[str, float]]], list[float] | None, float | None]:
    """Each split's values on shared bins, read off TFDV's quantiles histograms.

    Returns:
      The bins as (label, share per split), their edges, and the log axis offset (None:
      linear).
    """
    buckets = {s: _value_buckets(x) for s, x in per_split.items() if _with_values(x) > 0}
    buckets = {s: b for s, b in buckets.items() if b}
    if not buckets:
        return [], None, None
    # The range of the values: an equal-width histogram's empty buckets are no values.
    pooled = [b for bs in buckets.values() for b in bs if b[2] > 0]
    low, high = min(b[0] for b in pooled), max(b[1] for b in pooled)
    if name == f.TIMESTAMP_KEY:  # whole months, as the data's spans are
        log_offset, edges = None, _calendar_edges(low, high)
    else:
        log_offset = _log_offset(pooled, low, high)
        edges = _numeric_edges(low, high, log_offset)
    shares = {s: _spread(b, edges, log_offset) for s, b in buckets.items()}
    bins = [
        (f"{_compact(edges[i])} to {_compact(edges[i + 1])}", {s: v[i] for s, v in shares.items()})
        for i in range(len(edges) - 1)
    ]
    return bins, edges, log_offset


def _ranked(
    counts: dict[str, dict[str, float]], first: str, top: int, unlisted: dict[str, float]
) -> list[tuple[str, dict[str, float]]]:
    """The `top` most common categories of the first split, then one bar for all the rest."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1].get(first, 0.0), kv[0]))
    shown, rest = ordered[:top], ordered[top:]
    if all(label.lstrip("-").isdigit() for label, _ in shown):
        shown.sort(key=lambda kv: int(kv[0]))
    other = dict(unlisted)
    for _, shares in rest:
        for split, share in shares.items():
            other[split] = other.get(split, 0.0) + share
    if any(share > 0 for share in other.values()):
        shown.append((OTHER_LABEL, other))
    return shown


def _categorical_bins(
    per_split: dict[str, Any], top: int = 24
) -> list[tuple[str, dict[str, float]]]:
    counts: dict[str, dict[str, float]] = {}
    unlisted: dict[str, float] = {}
    for split, feature in per_split.items():
        ranked = feature.string_stats.rank_histogram.buckets
        if ranked:
            pairs = [(b.label, b.sample_count) for b in ranked]
        else:
            pairs = [(v.value, v.frequency) for v in feature.string_stats.top_values]
        # Shares of the values, also those beyond the listed categories.
        total = max(sum(count for _, count in pairs), _with_values(feature))
        for label, count in pairs:
            counts.setdefault(label, {})[split] = count / total if total else 0.0
        listed = sum(count for _, count in pairs)
        if total > listed:
            unlisted[split] = (total - listed) / total
    if not counts:
        return []
    return _ranked(counts, next(iter(per_split)), top, unlisted)


def _identifier_bins(per_split: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """Identifiers counted as numbers, as categories: the values TFDV's quantiles pin down.

    A value that fills whole quantile buckets (1% of the values each) in every split with
    values gets its own bar, with the share of those buckets; the rest is one "other" bar (a
    value pinned in one split only would read as missing from the others).
    """
    counts: dict[str, dict[str, float]] = {}
    unlisted: dict[str, float] = {}
    for split, feature in per_split.items():
        buckets = _value_buckets(feature) if _with_values(feature) else []
        total = sum(c for _, _, c in buckets)
        for low, high, count in buckets:
            if count <= 0:
                continue
            if high == low:
                shares = counts.setdefault(f"{int(low)}", {})
                shares[split] = shares.get(split, 0.0) + count / total
            else:
                unlisted[split] = unlisted.get(split, 0.0) + count / total
    if not counts and not unlisted:
        return []
    splits = [s for s, x in per_split.items() if _with_values(x)]
    for label in [v for v, shares in counts.items() if len(shares) < len(splits)]:
        for split, share in counts.pop(label).items():
            unlisted[split] = unlisted.get(split, 0.0) + share
    return _ranked(counts, splits[0], _TOP_CATEGORIES, unlisted)


def read_feature_splits(statistics_uri: str, splits: list[str]) -> list[FeatureSplits]:
    """Per-feature statistics of every split StatisticsGen wrote."""
    datasets = {s: _split_stats(statistics_uri, s) for s in splits}
    datasets = {s: d for s, d in datasets.items() if d is not None}
    if not datasets:
        return []
    names = [".".join(feat.path.step) for feat in next(iter(datasets.values())).features]
    found = []
    for name in sorted(names):
        per_split = {}
        for split, dataset in datasets.items():
            for feat in dataset.features:
                if ".".join(feat.path.step) == name:
                    per_split[split] = feat
        counted = all(x.WhichOneof("stats") == "num_stats" for x in per_split.values())
        identifier = name in IDENTIFIER_KEYS
        with_values = {s: _with_values(x) for s, x in per_split.items()}
        edges, log_offset = None, None
        if counted and not identifier:
            bins, edges, log_offset = _numeric_bins(name, per_split)
        elif counted:
            bins = _identifier_bins(per_split)
        else:
            bins = _categorical_bins(per_split)
        found.append(
            FeatureSplits(
                name=name,
                missing={
                    s: _missing_share(x, datasets[s].num_examples) for s, x in per_split.items()
                },
                # TFDV gives a feature without values a mean of 0; an identifier's mean is no
                # amount at all.
                mean={
                    s: (x.num_stats.mean if counted and not identifier and with_values[s] else None)
                    for s, x in per_split.items()
                },
                bins=bins,
                numeric=counted and not identifier,
                with_values=with_values,
                edges=edges,
                log_offset=log_offset,
                quantile_buckets=min(
                    (_quantile_count(x) for s, x in per_split.items() if with_values[s]),
                    default=0,
                )
                if counted
                else 0,
            )
        )
    return found


def read_training_curves(logs_dir: str) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Keras' TensorBoard scalars per epoch: metric -> {"train"/"validation" -> [(epoch, value)]}.

    Epochs are numbered from 1, as the run's summary numbers them (Keras logs them from 0).
    Keras writes these whatever its `update_freq`; per-batch scalars are left out.
    """
    from tensorboard.compat.proto import event_pb2

    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    if not artifact_io.is_dir(logs_dir):
        return curves
    for side in artifact_io.list_dir(logs_dir):
        files = artifact_io.glob_files(os.path.join(logs_dir, side, "events.out.tfevents*"))
        by_tag: dict[str, list[tuple[float, float]]] = {}
        for path in files:
            for record in artifact_io.iter_tfrecords(path, compressed=False):
                event = event_pb2.Event.FromString(record)
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        number = float(value.simple_value)
                    elif value.metadata.plugin_data.plugin_name == "scalars" and value.HasField(
                        "tensor"
                    ):
                        number = _scalar(value.tensor)
                    else:
                        continue
                    by_tag.setdefault(value.tag, []).append((float(event.step), number))
        for tag, points in by_tag.items():
            prefix, _, metric = tag.partition("_")
            if prefix != "epoch" or not metric:
                continue
            curves.setdefault(metric, {})[side] = sorted((step + 1, v) for step, v in points)
    return curves


# TensorProto dtypes of the scalars Keras writes (tensorflow/core/framework/types.proto).
_DT_FLOAT, _DT_DOUBLE = 1, 2


def _scalar(tensor: Any) -> float:
    """The value of a scalar TensorProto (float or double) without TensorFlow."""
    import struct

    if tensor.dtype == _DT_FLOAT:
        if tensor.tensor_content:
            return struct.unpack("<f", tensor.tensor_content[:4])[0]
        return float(tensor.float_val[0])
    if tensor.dtype == _DT_DOUBLE:
        if tensor.tensor_content:
            return struct.unpack("<d", tensor.tensor_content[:8])[0]
        return float(tensor.double_val[0])
    raise ValueError(f"a scalar summary of dtype {tensor.dtype}, not float or double")


@dataclasses.dataclass
class SliceMetrics:
    """One slice's metrics for the candidate (and the baseline, when there is one)."""

    feature: str
    value: str
    rmse: float | None
    mae: float | None
    count: int | None
    baseline_rmse: float | None


def _slice_value(key) -> str:
    raw = getattr(key, key.WhichOneof("kind"))
    return (
        raw.decode()
        if isinstance(raw, bytes)
        else f"{raw:g}"
        if isinstance(raw, float)
        else str(raw)
    )


def read_slice_metrics(evaluation_uri: str) -> list[SliceMetrics]:
    """TFMA's metrics per single-feature slice."""
    from pipeline.runs import read_tfma_metrics

    found = []
    for metrics in read_tfma_metrics(evaluation_uri):
        keys = metrics.slice_key.single_slice_keys
        if len(keys) != 1:
            continue
        values: dict[tuple[str, str], float] = {}
        for kv in metrics.metric_keys_and_values:
            if not kv.key.is_diff and kv.value.HasField("double_value"):
                values[(kv.key.name, kv.key.model_name)] = kv.value.double_value.value
        candidate = {n: v for (n, m), v in values.items() if m != "baseline"}
        count = candidate.get(_COUNT)
        key = keys[0]
        found.append(
            SliceMetrics(
                feature=key.column,
                value=_slice_value(key),
                rmse=candidate.get(_RMSE),
                mae=candidate.get(_MAE),
                count=int(count) if count is not None else None,
                baseline_rmse=values.get((_RMSE, "baseline")),
            )
        )
    return found


def _row(raw: bytes) -> dict[str, Any]:
    """A serialized example as {feature: first value or None} (plus `_raw`)."""
    row: dict[str, Any] = {"_raw": raw}
    for key, values in decode_example(raw).items():
        value = values[0] if values else None
        row[key] = value.decode() if isinstance(value, bytes) else value
    return row


def _split_files(examples_uri: str, split: str) -> list[str]:
    return artifact_io.glob_files(os.path.join(examples_uri, f"Split-{split}", "*"))


def read_examples(examples_uri: str, split: str, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` examples of a split as {feature: first value or None} (plus `_raw`)."""
    rows: list[dict[str, Any]] = []
    for path in _split_files(examples_uri, split):
        for raw in artifact_io.iter_tfrecords(path):
            rows.append(_row(raw))
            if len(rows) >= limit:
                return rows
    return rows


def trips_request(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows as a `predict --instances` file: the raw trip fields a client sends."""
    instances = []
    for row in rows:
        instance = {}
        for key in f.RAW_FEATURE_KEYS:
            value = row.get(key)
            if value is None or value == "":
                continue
            instance[key] = float(value) if key in f.FLOAT_FEATURE_KEYS else value
        instances.append(instance)
    return {"instances": instances}


def predict_examples(model_uri: str, rows: list[dict[str, Any]]) -> list[float]:
    """The model's fares for serialized examples (its tf.Example signature)."""
    import tensorflow as tf
    from tfx.utils import path_utils

    model = tf.saved_model.load(path_utils.serving_model_path(model_uri))
    signature = model.signatures[f.SERVING_TF_EXAMPLE_SIGNATURE]
    out = signature(**{f.SERVING_TF_EXAMPLE_INPUT_KEY: tf.constant([r["_raw"] for r in rows])})
    return [float(x) for x in out[f.PREDICTION_KEY].numpy().reshape(-1)]


def sample_examples(examples_uri: str, split: str, size: int, seed: int) -> list[dict[str, Any]]:
    """A uniform random sample of `size` examples of a split (all when it has fewer), in the
    split's order, as read_examples gives them; the same sample for the same seed.

    Reservoir sampling over the serialized records: one pass, `size` records held, so a
    split of millions is sampled without reading it into memory.
    """
    import random

    rng = random.Random(seed)
    chosen: list[tuple[int, bytes]] = []
    seen = 0
    for path in _split_files(examples_uri, split):
        for raw in artifact_io.iter_tfrecords(path):
            if len(chosen) < size:
                chosen.append((seen, raw))
            else:
                slot = rng.randrange(seen + 1)
                if slot < size:
                    chosen[slot] = (seen, raw)
            seen += 1
    return [_row(raw) for _, raw in sorted(chosen, key=lambda item: item[0])]
