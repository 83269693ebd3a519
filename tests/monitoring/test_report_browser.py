"""The HTML report in a real headless Chromium: no console errors, charts drawn, screenshot."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from pipeline.monitoring.cli import EXIT_FOUND, main
from taxifare_modules import features as f
from tests.monitoring.conftest import CHROMIUM_FLAGS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

_FLAGS = CHROMIUM_FLAGS


def _chromium(binary: str, profile, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, *_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_report_renders_offline(chromium, hours_shifted_log, training_stats_file, tmp_path):
    out = tmp_path / "report"
    code = main(
        ["skew", "--serving-logs", hours_shifted_log, "--training-stats", training_stats_file]
        + ["--out", str(out)]
    )
    assert code == EXIT_FOUND
    page = (out / "report.html").read_text()
    # Self-contained: nothing fetched from anywhere.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page
    url = (out / "report.html").as_uri()
    screenshot = out / "report.png"
    shot = _chromium(
        chromium,
        tmp_path / "profile-shot",
        f"--screenshot={screenshot}",
        "--window-size=1280,2000",
        url,
    )
    assert shot.returncode == 0, shot.stderr[-3000:]
    assert "Uncaught" not in shot.stderr and "ERROR:CONSOLE" not in shot.stderr, shot.stderr
    assert screenshot.exists() and os.path.getsize(screenshot) > 20_000
    dom = _chromium(chromium, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-3000:]
    assert "Uncaught" not in dom.stderr and "ERROR:CONSOLE" not in dom.stderr
    verdict = json.loads((out / "verdict.json").read_text())
    charts = dom.stdout.count('class="chart"')
    assert charts == verdict["features_checked"]
    assert dom.stdout.count("<rect") > 10 * charts
    # The summary names the failing feature before the per-feature sections.
    summary = dom.stdout.split('class="feature')[0]
    assert f.HOUR_KEY in summary and "1</b> flagged" in summary
    # Readable charts: axes with units, both sides in the legend, presence in words, and
    # the thresholds' real source.
    assert dom.stdout.count("share of examples with a value</text>") == charts
    assert "training (outlined)" in summary and "serving (filled)" in summary
    assert "Has a value: training 100.0% · serving 100.0%" in dom.stdout
    assert "pipeline/monitoring/thresholds.py" in summary
