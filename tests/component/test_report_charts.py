"""The run report's distribution charts against the real sample they describe.

The statistics are TFDV's, computed with the options StatisticsGen uses, over the real trips
split three ways; every share a chart draws is checked against the trips themselves.
"""

from __future__ import annotations

import bisect
import datetime
import html
import math
import re

import pytest
import tensorflow as tf

from pipeline.report import page, reads, svg
from taxifare_modules import features as f

SPLITS = ("train", "eval", "test")
# One of TFDV's 100 quantile buckets holds 1% of the values; its sketch adds up to 1% more.
TOLERANCE = 0.02
PLOT_HEIGHT = svg._HEIGHT - svg._TOP - svg._BOTTOM

pytestmark = pytest.mark.slow


def _split_of(index: int) -> str:
    return {4: "eval", 5: "test"}.get(index % 6, "train")


def _column_kinds(rows: list[dict[str, str]]) -> dict[str, str]:
    """Each column's type as CsvExampleGen infers it: int, float or bytes."""
    kinds = {}
    for column in rows[0]:
        values = [r[column] for r in rows if r[column]]
        try:
            [int(v) for v in values]
            kinds[column] = "int"
        except ValueError:
            try:
                [float(v) for v in values]
                kinds[column] = "float"
            except ValueError:
                kinds[column] = "bytes"
    return kinds


def _example(row: dict[str, str], kinds: dict[str, str]) -> bytes:
    # As CsvExampleGen writes a row: an empty cell is a feature present with no values.
    feature = {}
    for column, kind in kinds.items():
        cell = [row[column]] if row[column] else []
        if kind == "int":
            feature[column] = tf.train.Feature(
                int64_list=tf.train.Int64List(value=[int(v) for v in cell])
            )
        elif kind == "float":
            feature[column] = tf.train.Feature(
                float_list=tf.train.FloatList(value=[float(v) for v in cell])
            )
        else:
            feature[column] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[v.encode() for v in cell])
            )
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def split_rows(sample_rows) -> dict[str, list[dict[str, str]]]:
    """The real trips, 4/6 train, 1/6 eval, 1/6 test."""
    found: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for i, row in enumerate(sample_rows):
        found[_split_of(i)].append(row)
    return found


def _statistics(split_rows, root, options) -> str:
    """A StatisticsGen artifact (`Split-<name>/FeatureStats.pb`) of the splits' rows."""
    import tensorflow_data_validation as tfdv

    kinds = _column_kinds(split_rows["train"])
    for split, rows in split_rows.items():
        folder = root / f"Split-{split}"
        folder.mkdir()
        with tf.io.TFRecordWriter(str(folder / "examples.tfrecord")) as writer:
            for row in rows:
                writer.write(_example(row, kinds))
        stats = tfdv.generate_statistics_from_tfrecord(
            str(folder / "examples.tfrecord"), stats_options=options
        )
        (folder / "FeatureStats.pb").write_bytes(stats.SerializeToString())
    return str(root)


@pytest.fixture(scope="module")
def statistics_uri(split_rows, tmp_path_factory) -> str:
    """The three splits' statistics, computed with the options StatisticsGen is given."""
    from pipeline.monitoring.stats_options import monitoring_stats_options

    return _statistics(
        split_rows, tmp_path_factory.mktemp("statistics"), monitoring_stats_options()
    )


@pytest.fixture(scope="module")
def features(statistics_uri) -> dict[str, reads.FeatureSplits]:
    return {x.name: x for x in reads.read_feature_splits(statistics_uri, list(SPLITS))}


@pytest.fixture(scope="module")
def section(features) -> str:
    return "\n".join(page.feature_figures(list(features.values()), list(SPLITS)))


def _figure(section: str, name: str) -> str:
    """The HTML between feature `name`'s heading and the next heading."""
    start = section.index(f"<h3>{name}</h3>")
    end = section.find("<h3>", start + 1)
    return section[start : end if end > 0 else None]


def _drawn_shares(figure: str) -> dict[str, list[float]]:
    """Split -> the share each bar draws (its height on the y axis), in bar order."""
    top = max(float(v) for v in re.findall(r'text-anchor="end">([\d.]+)</text>', figure))
    shares: dict[str, list[float]] = {s: [] for s in SPLITS}
    rects = re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"', figure)
    for i, height in enumerate(rects):
        shares[SPLITS[i % len(SPLITS)]].append(float(height) / PLOT_HEIGHT * top / 100)
    return shares


def _values(rows: list[dict[str, str]], name: str) -> list[float]:
    return sorted(float(r[name]) for r in rows if r[name])


def _axis(value: float, log_offset: float | None) -> float:
    return value if log_offset is None else math.log10(1 + value / log_offset)


def _drawn_share_below(x: reads.FeatureSplits, drawn: list[float], value: float) -> float:
    """The share a chart draws below `value`, reading the bar that holds it proportionally."""
    edges = x.edges
    below = 0.0
    for i, share in enumerate(drawn):
        low, high = _axis(edges[i], x.log_offset), _axis(edges[i + 1], x.log_offset)
        cut = _axis(value, x.log_offset)
        below += share * min(max((cut - low) / (high - low), 0.0), 1.0)
    return below


def test_trip_miles_under_85_5_miles_is_drawn_as_the_trips_have_it(features, section, split_rows):
    x = features["trip_miles"]
    drawn = _drawn_shares(_figure(section, "trip_miles"))
    for split in SPLITS:
        values = _values(split_rows[split], "trip_miles")
        truth = bisect.bisect_left(values, 85.5) / len(values)
        assert truth > 0.99
        assert _drawn_share_below(x, drawn[split], 85.5) == pytest.approx(truth, abs=0.01), split
    assert x.quantile_buckets == 100
    assert "100 quantile buckets per split: each share is right to about 1 percentage point." in (
        _figure(section, "trip_miles")
    )


def test_every_numeric_bar_draws_the_share_of_the_data_it_covers(features, section, split_rows):
    numeric = [x for x in features.values() if x.edges is not None]
    assert {x.name for x in numeric} >= {"trip_miles", "trip_seconds", f.LABEL_KEY, "tips"}
    for x in numeric:
        figure = _figure(section, x.name)
        drawn = _drawn_shares(figure)
        titles = re.findall(r"<title>([^<]*)</title>", figure)
        assert len(titles) == len(x.bins) * len(SPLITS)
        for split in SPLITS:
            values = _values(split_rows[split], x.name)
            assert len(drawn[split]) == len(x.edges) - 1
            # Bar heights are the shares the tooltips state...
            for bar, (_, shares) in enumerate(x.bins):
                assert drawn[split][bar] == pytest.approx(shares[split], abs=2e-4), (x.name, bar)
            # ...and the shares below every edge are the data's (up to the quantile buckets).
            total = 0.0
            for bar, edge in enumerate(x.edges[1:]):
                total += drawn[split][bar]
                below = bisect.bisect_left(values, edge * (1 - 1e-6) if edge > 0 else edge - 1e-6)
                at_most = bisect.bisect_right(
                    values, edge * (1 + 1e-6) if edge > 0 else edge + 1e-6
                )
                assert below / len(values) - TOLERANCE <= total, (x.name, split, edge)
                assert total <= at_most / len(values) + TOLERANCE, (x.name, split, edge)
    # Long tails on a log axis, so that the typical trip is not one bar.
    assert features["trip_miles"].log_offset and features["trip_seconds"].log_offset
    assert features[f.PICKUP_LATITUDE_KEY].log_offset is None
    # Trip start times in whole calendar months.
    for edge in features[f.TIMESTAMP_KEY].edges:
        start = datetime.datetime.fromtimestamp(edge, datetime.timezone.utc)
        assert (start.day, start.hour, start.minute, start.second) == (1, 0, 0, 0)


def test_identifiers_read_as_categories_in_full(features, section, split_rows):
    assert "e+" not in section
    for key in f.IGNORED_KEYS + f.AREA_KEYS:
        x = features[key]
        assert x.edges is None and all(m is None for m in x.mean.values()), key
    tracts = features["dropoff_census_tract"]
    labels = [label for label, _ in tracts.bins]
    assert labels[-1] == reads.OTHER_LABEL
    assert len(labels) > 5 and all(re.fullmatch(r"17031\d{6}", v) for v in labels[:-1])
    figure = _figure(section, "dropoff_census_tract")
    for label in labels[:-1]:
        assert f">{label}</text>" in figure
    # The named tracts' shares are the data's, within one quantile bucket and the sketch.
    for split in SPLITS:
        values = [r["dropoff_census_tract"] for r in split_rows[split]]
        values = [v for v in values if v]
        for label, shares in tracts.bins[:-1]:
            assert shares[split] == pytest.approx(values.count(label) / len(values), abs=0.025)
        assert sum(shares[split] for _, shares in tracts.bins) == pytest.approx(1.0)
    areas = [label for label, _ in features[f.PICKUP_AREA_KEY].bins]
    assert all(label.isdigit() and 1 <= int(label) <= f.AREA_COUNT for label in areas[:-1])


def test_a_feature_without_values_shows_no_mean(features, section, split_rows):
    x = features["pickup_census_tract"]
    with_values = {s: sum(1 for r in split_rows[s] if r["pickup_census_tract"]) for s in SPLITS}
    assert x.with_values == with_values and sum(with_values.values()) == 1
    row = re.search(r"<tr><td>pickup_census_tract</td>(.*?)</tr>", section).group(1)
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
    missing, means = cells[: len(SPLITS)], cells[len(SPLITS) :]
    for split, cell_missing, cell_mean in zip(SPLITS, missing, means, strict=True):
        if with_values[split]:
            assert cell_missing.endswith("(1 with a value)") and cell_mean == "-"
        else:
            assert cell_missing == "100% (no values)" and cell_mean == "no values"
    # A handful of trips without a duration is not 0.0% missing.
    row = re.search(r"<tr><td>trip_seconds</td>(.*?)</tr>", section).group(1)
    cells = dict(zip(SPLITS, re.findall(r"<td[^>]*>(.*?)</td>", row), strict=False))
    missing = {s: sum(1 for r in split_rows[s] if not r["trip_seconds"]) for s in SPLITS}
    assert missing["train"]
    for split in SPLITS:
        share = missing[split] / len(split_rows[split])
        assert cells[split] == (f"{share * 100:.2g}%" if share else "0.0%"), split
    empty = ", ".join(s for s in SPLITS if not with_values[s])
    assert f"No values in {empty}." in _figure(section, "pickup_census_tract")


def test_tracts_counted_per_value_are_drawn_with_their_exact_shares(split_rows, tmp_path):
    # Statistics that count the tracts per value (TFDV's categorical statistics), as the
    # pipeline counts community areas.
    from pipeline.monitoring.stats_options import categorical_schema, monitoring_stats_options

    options = monitoring_stats_options()
    options.schema = categorical_schema(f.IGNORED_KEYS)
    two = {s: split_rows[s] for s in ("train", "eval")}
    uri = _statistics(two, tmp_path, options)
    x = {x.name: x for x in reads.read_feature_splits(uri, list(two))}["dropoff_census_tract"]
    assert x.edges is None and x.mean == {"train": None, "eval": None}
    assert x.bins[-1][0] == reads.OTHER_LABEL and len(x.bins) == 25
    for split, rows in two.items():
        values = [r["dropoff_census_tract"] for r in rows if r["dropoff_census_tract"]]
        assert x.with_values[split] == len(values)
        for label, shares in x.bins[:-1]:
            assert re.fullmatch(r"17031\d{6}", label)
            assert shares.get(split, 0.0) == pytest.approx(values.count(label) / len(values))
        assert sum(shares.get(split, 0.0) for _, shares in x.bins) == pytest.approx(1.0)
