"""The run plan: every check a run needs before its lock, one error type per kind of fault."""

from __future__ import annotations

import pytest

from pipeline import run_plan


def test_a_good_config_and_input_make_a_plan_with_the_input_resolved_once(tmp_path):
    cfg = run_plan.load("configs/smoke.yaml", [f"root={tmp_path / 'root'}"])
    plan = run_plan.plan_run(cfg)
    assert plan.cfg is cfg and plan.data_root.endswith("simple")
    assert plan.input is not None and plan.input.rows == 15_002 and plan.input.files == 1
    assert (tmp_path / "root").is_dir()


@pytest.mark.parametrize(
    "overrides,error,words",
    [
        (["training.seed=-1"], run_plan.UsageError, "training.seed"),
        (["data.input=/no/such/folder"], run_plan.UsageError, "/no/such/folder"),
        (["monitoring.skew.serving_logs=/no/such/log"], run_plan.UsageError, "serving_logs"),
    ],
)
def test_each_usage_fault_is_a_usage_error_naming_it(tmp_path, overrides, error, words):
    with pytest.raises(error, match=words.replace(".", r"\.")):
        cfg = run_plan.load("configs/smoke.yaml", [f"root={tmp_path / 'r'}", *overrides])
        run_plan.plan_run(cfg)


def test_an_endpoints_logging_table_is_a_serving_log_a_local_run_can_name(tmp_path):
    # A bq:// table is read by SkewCheck itself (its query, the run's credentials), not a
    # folder this machine must have.
    table = "bq://my-gcp-project.logging_taxifare_42.request_response_logging"
    cfg = run_plan.load(
        "configs/smoke.yaml", [f"root={tmp_path / 'r'}", f"monitoring.skew.serving_logs={table}"]
    )
    assert run_plan.plan_run(cfg).cfg.monitoring.skew.serving_logs == table


def test_a_malformed_file_is_a_data_error(tmp_path, sample_rows):
    data = tmp_path / "data"
    data.mkdir()
    (data / "trips.csv").write_text(",".join(sample_rows[0]) + "\n" + ",,,,\n")
    cfg = run_plan.load("configs/smoke.yaml", [f"root={tmp_path / 'r'}", f"data.input={data}"])
    with pytest.raises(run_plan.DataError, match="trips.csv: line 2"):
        run_plan.plan_run(cfg)


def test_a_root_inside_the_input_is_refused_before_anything_is_written(tmp_path, sample_rows):
    data = tmp_path / "data"
    data.mkdir()
    (data / "trips.csv").write_text(",".join(sample_rows[0]) + "\n")
    cfg = run_plan.load(
        "configs/smoke.yaml", [f"root={data / 'root'}", f"data.input={data}"]
    )
    with pytest.raises(run_plan.UsageError, match="root"):
        run_plan.plan_run(cfg)
    assert not (data / "root").exists()
