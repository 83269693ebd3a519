"""A default (not --verbose) run prints the progress lines and the summary, and nothing else:
no per-epoch Keras lines, no TensorFlow, CUDA, absl or Beam banners."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
# What a quiet run may print on stderr: its own messages and one line per component.
_OWN = re.compile(r"^(taxifare: .*|  [A-Za-z_0-9]+ +(done|cached|FAILED|skipped).*)$")


def test_a_default_run_prints_its_progress_and_summary_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "GRPC_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--config", "configs/smoke.yaml",
         "--set", f"root={tmp_path / 'root'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1100,
    )  # fmt: skip
    assert done.returncode in (0, 4), done.stderr[-3000:]
    foreign = [line for line in done.stderr.splitlines() if line and not _OWN.match(line)]
    assert not foreign, "\n".join(foreign[:20])
    assert "Epoch" not in done.stdout + done.stderr
    assert done.stdout.lstrip().startswith("taxifare run summary")
