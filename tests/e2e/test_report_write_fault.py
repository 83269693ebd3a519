"""A run whose component failed and whose report then cannot be written (a full disk) says
what stopped the run, not that the report failed."""

from __future__ import annotations

import errno

import pytest

from pipeline import cli

pytestmark = pytest.mark.e2e


def test_the_components_failure_is_the_one_line_not_the_reports(tmp_path, monkeypatch, capsys):
    def full_disk(summary, cfg, config_path):
        raise OSError(errno.ENOSPC, "No space left on device", f"{cfg.root}/runs/report.html")

    monkeypatch.setattr(cli, "_finish_run", full_disk)
    code = cli.main(
        ["run", "--config", "configs/smoke.yaml", "--set", f"root={tmp_path / 'root'}",
         "--set", "data.min_train_trips=1000000"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == cli.EXIT_ANOMALIES, err
    assert "data.min_train_trips" in err
    assert "report and summary could not be written: [Errno 28]" in err
    assert "Traceback" not in err
