"""What a run's report shows, read from the artifacts MLMD points to (through tf.io.gfile)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import tensorflow as tf

from taxifare_modules import features as f

_RMSE = "root_mean_squared_error"
_MAE = "mean_absolute_error"
_COUNT = "example_count"
_COMMON_BINS = 20


@dataclasses.dataclass
class FeatureSplits:
    """One feature's statistics in each split: missing share, mean, and a distribution."""

    name: str
    missing: dict[str, float]  # split -> share of examples without a value
    mean: dict[str, float | None]
    # The distribution on bins shared by every split: (label, share per split).
    bins: list[tuple[str, dict[str, float]]]
    numeric: bool


def _split_stats(uri: str, split: str):
    import tensorflow_data_validation as tfdv

    stats = tfdv.load_stats_binary(os.path.join(uri, f"Split-{split}", "FeatureStats.pb"))
    return stats.datasets[0] if stats.datasets else None


def _common_stats(feature):
    kind = feature.WhichOneof("stats")
    stats = getattr(feature, kind)
    return stats.common_stats, kind


def _missing_share(feature, num_examples: int) -> float:
    # An empty CSV cell is a feature present with no values: missing too.
    common, _ = _common_stats(feature)
    with_value = min(common.num_non_missing, common.tot_num_values or common.num_non_missing)
    if common.max_num_values == 0:
        with_value = 0
    return 1 - with_value / num_examples if num_examples else 0.0


def _compact(value: float) -> str:
    """A bin's middle in at most 8 characters."""
    if abs(value) >= 1e6:
        return f"{value:.3g}"
    return f"{value:.4g}"


def _numeric_bins(per_split: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """Each split's standard histogram spread over shared equal-width bins."""
    hists = {}
    for split, feature in per_split.items():
        standard = [h for h in feature.num_stats.histograms if h.type == h.HistogramType.STANDARD]
        if standard and standard[0].buckets:
            hists[split] = standard[0].buckets
    if not hists:
        return []
    low = min(b.low_value for bs in hists.values() for b in bs)
    high = max(b.high_value for bs in hists.values() for b in bs)
    if high <= low:
        high = low + 1
    width = (high - low) / _COMMON_BINS
    shares = {split: [0.0] * _COMMON_BINS for split in hists}
    for split, buckets in hists.items():
        total = sum(b.sample_count for b in buckets) or 1.0
        for b in buckets:
            span = b.high_value - b.low_value
            for i in range(_COMMON_BINS):
                lo, hi = low + i * width, low + (i + 1) * width
                if span <= 0:
                    last = i == _COMMON_BINS - 1 and b.low_value == hi
                    overlap = 1.0 if lo <= b.low_value < hi or last else 0.0
                else:
                    overlap = max(0.0, min(hi, b.high_value) - max(lo, b.low_value)) / span
                shares[split][i] += b.sample_count * overlap / total
    return [
        (_compact(low + (i + 0.5) * width), {s: shares[s][i] for s in hists})
        for i in range(_COMMON_BINS)
    ]


def _categorical_bins(
    per_split: dict[str, Any], top: int = 24
) -> list[tuple[str, dict[str, float]]]:
    counts: dict[str, dict[str, float]] = {}
    for split, feature in per_split.items():
        ranked = feature.string_stats.rank_histogram.buckets
        if ranked:
            pairs = [(b.label, b.sample_count) for b in ranked]
        else:
            pairs = [(v.value, v.frequency) for v in feature.string_stats.top_values]
        total = sum(count for _, count in pairs)
        for label, count in pairs:
            counts.setdefault(label, {})[split] = count / total if total else 0.0
    first = next(iter(per_split))
    ordered = sorted(counts.items(), key=lambda kv: -kv[1].get(first, 0.0))[:top]
    if all(label.lstrip("-").isdigit() for label, _ in ordered):
        ordered.sort(key=lambda kv: int(kv[0]))
    return ordered


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
        numeric = all(x.WhichOneof("stats") == "num_stats" for x in per_split.values())
        found.append(
            FeatureSplits(
                name=name,
                missing={
                    s: _missing_share(x, datasets[s].num_examples) for s, x in per_split.items()
                },
                mean={s: (x.num_stats.mean if numeric else None) for s, x in per_split.items()},
                bins=_numeric_bins(per_split) if numeric else _categorical_bins(per_split),
                numeric=numeric,
            )
        )
    return found


def read_training_curves(logs_dir: str) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Keras' TensorBoard scalars: metric -> {"train"/"validation" -> [(step, value)]}.

    Per-batch scalars (`batch_*`) are preferred over per-epoch ones (`epoch_*`) for a series.
    """
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    if not tf.io.gfile.isdir(logs_dir):
        return curves
    for side in sorted(tf.io.gfile.listdir(logs_dir)):
        side = side.rstrip("/")
        files = sorted(tf.io.gfile.glob(os.path.join(logs_dir, side, "events.out.tfevents*")))
        by_tag: dict[str, list[tuple[float, float]]] = {}
        for path in files:
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        number = float(value.simple_value)
                    elif value.metadata.plugin_data.plugin_name == "scalars" and value.HasField(
                        "tensor"
                    ):
                        number = float(tf.make_ndarray(value.tensor))
                    else:
                        continue
                    by_tag.setdefault(value.tag, []).append((float(event.step), number))
        for tag, points in by_tag.items():
            prefix, _, metric = tag.partition("_")
            if prefix not in ("batch", "epoch") or not metric:
                continue
            series = curves.setdefault(metric, {})
            if side in series and prefix == "epoch":
                continue  # batch points already there
            series[side] = sorted(points)
    return curves


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
    import tensorflow_model_analysis as tfma

    found = []
    for metrics in tfma.load_metrics(evaluation_uri):
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


def read_examples(examples_uri: str, split: str, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` examples of a split as {feature: first value or None} (plus `_raw`)."""
    pattern = os.path.join(examples_uri, f"Split-{split}", "*")
    files = sorted(tf.io.gfile.glob(pattern))
    rows: list[dict[str, Any]] = []
    for path in files:
        compression = "GZIP" if path.endswith(".gz") else ""
        for raw in tf.data.TFRecordDataset(path, compression_type=compression):
            example = tf.train.Example.FromString(raw.numpy())
            row: dict[str, Any] = {"_raw": raw.numpy()}
            for key, feature in example.features.feature.items():
                kind = feature.WhichOneof("kind")
                values = list(getattr(feature, kind).value) if kind else []
                value = values[0] if values else None
                row[key] = value.decode() if isinstance(value, bytes) else value
            rows.append(row)
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
    for path in sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*"))):
        compression = "GZIP" if path.endswith(".gz") else ""
        for batch in tf.data.TFRecordDataset(path, compression_type=compression).batch(4096):
            for raw in batch.numpy():
                if len(chosen) < size:
                    chosen.append((seen, raw))
                else:
                    slot = rng.randrange(seen + 1)
                    if slot < size:
                        chosen[slot] = (seen, raw)
                seen += 1
    rows: list[dict[str, Any]] = []
    for _, raw in sorted(chosen, key=lambda item: item[0]):
        example = tf.train.Example.FromString(raw)
        row: dict[str, Any] = {"_raw": raw}
        for key, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            values = list(getattr(feature, kind).value) if kind else []
            value = values[0] if values else None
            row[key] = value.decode() if isinstance(value, bytes) else value
        rows.append(row)
    return rows
