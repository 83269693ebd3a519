"""Sample size in every verdict: each test valid at the sizes it is used at, and a minimum
below which a check says "too few to judge" and finds nothing.

The clean requests are random draws of the real sample (the data the training statistics
describe), written with the server's own request-log writer.
"""

from __future__ import annotations

import json
import random

import pytest
from scipy import stats as sp

from pipeline.monitoring import compare as c
from pipeline.monitoring.cli import EXIT_OK, main
from pipeline.monitoring.thresholds import MIN_EXAMPLES
from pipeline.serving.client import csv_row_to_instance
from taxifare_modules import features as f
from tests.monitoring.conftest import write_log


def test_presence_uses_fishers_exact_test_at_five_examples():
    # Five requests without a dropoff against training where 97% have one: the normal
    # approximation gave p ~ 1e-34; the exact test gives the real, far larger, p.
    training = c.Distribution("numeric", 15_000, 14_550.0)
    serving = c.Distribution("numeric", 5, 0.0)
    p = c.presence_p_value(training, serving)
    exact = sp.fisher_exact([[14_550, 450], [0, 5]]).pvalue
    assert p == pytest.approx(exact, rel=1e-9)
    assert p > 1e-9


def test_small_categorical_counts_use_the_permutation_test():
    # Two values, 9 to 1 in the reference; the current side's 3 examples all have the rare
    # one. The chi-squared approximation does not hold (1 example of 3 expected in a cell):
    # the permutation p-value agrees with Fisher's exact test on the same 2 x 2 table.
    reference, current = {"a": 90.0, "b": 10.0}, {"b": 3.0}
    p, test = c.categorical_test(reference, current, alpha=1e-5)
    assert test == c.PERMUTATION
    exact = sp.fisher_exact([[90, 10], [0, 3]]).pvalue
    assert p == pytest.approx(exact, rel=0.3)
    # Large tables keep the chi-squared test.
    big = {str(h): 500.0 + h for h in range(24)}
    assert c.categorical_test(big, {k: v / 10 for k, v in big.items()}, 1e-3)[1] == c.CHI_SQUARED


def test_the_kolmogorov_smirnov_p_value_is_exact_for_a_small_side():
    # Against a reference far larger than the current side, the two-sample statistic is the
    # one-sample one: its p-value must be the exact one at n = 5, not the limiting law's.
    values = [0.05, 0.1, 0.12, 0.2, 0.9]
    exact = sp.kstest(values, "uniform", method="exact")
    assert c.ks_p_value(exact.statistic, 10**9, 5) == pytest.approx(exact.pvalue, rel=1e-3)


def _skew(log_dir: str, stats: str, out) -> tuple[int, dict]:
    code = main(["skew", "--serving-logs", log_dir, "--training-stats", stats, "--out", str(out)])
    return code, json.loads((out / "verdict.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("n", [5, 20, 100, 1000])
def test_clean_requests_never_raise_skew_at_any_size(n, sample_rows, training_stats_file, tmp_path):
    rows = random.Random(n).sample(sample_rows, n)
    log_dir = str(tmp_path / "log")
    write_log(log_dir, [csv_row_to_instance(r) for r in rows])
    code, verdict = _skew(log_dir, training_stats_file, tmp_path / "out")
    assert verdict["failed_features"] == [], json.dumps(verdict["features"], indent=1)[:3000]
    assert code == EXIT_OK
    assert verdict["sides"]["serving"]["examples"] == n
    assert verdict["sides"]["training"]["examples"] == len(sample_rows)
    expected = "too_few_to_judge" if n < MIN_EXAMPLES else "no_skew"
    assert verdict["verdict"] == expected
    # Served traffic is of another period than training: the time fields are not compared.
    assert set(verdict["not_compared"]) == {f.TIMESTAMP_KEY, f.MONTH_KEY}
    html = (tmp_path / "out" / "report.html").read_text()
    assert f"N = {len(sample_rows):,} training · {n:,} serving examples" in html
    assert "not compared: identifies the span" in html
    if n < MIN_EXAMPLES:
        assert f"too few to judge ({n} &lt; {MIN_EXAMPLES})" in html
        assert all(x["p_value"] is None for x in verdict["features"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_five_trips_without_a_dropoff_are_too_few_to_judge(
    sample_rows, training_stats_file, tmp_path, capsys
):
    # The demo's first five test rows all lacked a dropoff: exit 5 with p = 1.4e-34 before.
    rows = [r for r in sample_rows if r[f.DROPOFF_LATITUDE_KEY] == ""][:5]
    log_dir = str(tmp_path / "log")
    write_log(log_dir, [csv_row_to_instance(r) for r in rows])
    code, verdict = _skew(log_dir, training_stats_file, tmp_path / "out")
    assert code == EXIT_OK
    assert verdict["verdict"] == "too_few_to_judge" and verdict["failed_features"] == []
    out = capsys.readouterr().out
    assert f"too few to judge (5 < {MIN_EXAMPLES})" in out
    assert f"training {len(sample_rows):,}; serving 5" in out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_value_the_schema_forbids_is_found_at_any_size(
    sample_rows, training_stats_file, tmp_path
):
    trips = [csv_row_to_instance(r) for r in sample_rows[:5]]
    for trip in trips:
        trip[f.TIMESTAMP_KEY] *= 1000  # milliseconds: outside the schema's range
    log_dir = str(tmp_path / "log")
    write_log(log_dir, trips)
    code, verdict = _skew(log_dir, training_stats_file, tmp_path / "out")
    assert code == 5 and verdict["failed_features"] == [f.TIMESTAMP_KEY]
