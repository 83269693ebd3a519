"""The pipeline's drift check: which earlier statistics are the previous span's; the summary."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.components.monitoring import BASELINE_DIR, STATISTICS_DIR, choose_baseline
from pipeline.summary import CheckSummary, render_check


@pytest.mark.parametrize(
    ("span", "previous", "has_baseline", "baseline", "chosen", "note"),
    [
        (1, None, False, None, None, "span 1 is the first span"),
        (2, 1, False, None, STATISTICS_DIR, "span 2 compared with span 1"),
        (5, 3, True, 2, STATISTICS_DIR, "span 5 compared with span 3"),
        # A re-run of span 2 finds its own earlier verdict: that verdict's baseline is span 1.
        (2, 2, True, 1, BASELINE_DIR, "span 2 compared with span 1"),
        (1, 1, False, None, None, "span 1 is the first span"),
        (1, 3, True, 2, None, "older than the last span checked (3)"),
    ],
)
def test_previous_span_is_chosen_from_the_latest_verdict(
    span, previous, has_baseline, baseline, chosen, note
):
    got, text = choose_baseline(span, previous, has_baseline, baseline)
    assert got == chosen
    assert note in text


def _check(found: bool, stopped: bool, on_detect: str) -> CheckSummary:
    return CheckSummary(
        check="drift",
        verdict="drift_found" if found else "no_drift",
        found=found,
        failed_features=["trip_start_hour"] if found else [],
        report="/r/report.html",
        verdict_file="/r/verdict.json",
        note="span 2 compared with span 1",
        on_detect=on_detect,
        stopped=stopped,
    )


def test_summary_says_what_was_found_and_whether_the_run_stopped():
    reported = render_check(_check(True, False, "report"), "drift", "")
    assert "DRIFT FOUND in trip_start_hour" in reported[0]
    assert "reported only, the run went on" in reported[0]
    assert "monitoring.drift.on_detect: report" in reported[0]
    assert reported[1].strip() == "report: /r/report.html"
    stopped = render_check(_check(True, True, "stop"), "drift", "")
    assert "the run STOPPED before Transform" in stopped[0]
    # Skew only reported while drift stopped the run: it must not claim the run went on.
    other = render_check(_check(True, False, "report"), "drift", "", run_stopped=True)
    assert "reported only" in other[0] and "went on" not in other[0]
    clean = render_check(_check(False, False, "report"), "drift", "")[0]
    assert clean.startswith("drift        no drift")
    # The label is not compared across spans: the line says where a change of fares shows.
    assert "fare is not compared for drift" in clean
    too_few = dataclasses.replace(_check(False, False, "report"), verdict="too_few_to_judge")
    assert render_check(too_few, "drift", "")[0].startswith("drift        not judged")
    assert render_check(None, "skew", "not checked (x)") == ["skew         not checked (x)"]
