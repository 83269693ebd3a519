"""`taxifare compile` and `taxifare submit`, through the subcommands the CLI registers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pipeline.vertex.cli import add_vertex_parsers

REPO = Path(__file__).resolve().parents[2]
VERTEX = str(REPO / "configs" / "vertex.yaml")
LOCAL = str(REPO / "configs" / "local.yaml")


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="taxifare")
    commands = add_vertex_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return commands[args.command](args)


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """An environment where google.auth finds no Application Default Credentials."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login there
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # not on a Google Cloud VM either


def test_compile_writes_the_spec_and_says_what_runs_where(tmp_path, capsys):
    output = tmp_path / "out" / "taxifare_pipeline.json"
    assert _run("compile", "--config", VERTEX, "--output", str(output)) == 0
    job = json.loads(output.read_text())
    assert "Trainer" in job["pipelineSpec"]["root"]["dag"]["tasks"]
    captured = capsys.readouterr()
    assert captured.out == ""  # what was done is a message (stderr), not output
    out = captured.err
    assert str(output) in out
    assert "trainer tier basic-gpu: 1 x n1-standard-8 + 1 NVIDIA_TESLA_T4" in out
    assert "DataflowRunner" in out


def test_compile_set_overrides_the_tier(tmp_path, capsys):
    output = tmp_path / "p.json"
    code = _run(
        "compile",
        "--config",
        VERTEX,
        "--output",
        str(output),
        "--set",
        "vertex.training.tier=multi-worker",
        "--set",
        "vertex.training.workers=3",
    )
    assert code == 0
    custom = json.loads(
        json.loads(output.read_text())["pipelineSpec"]["root"]["dag"]["tasks"]["Trainer"]["inputs"][
            "parameters"
        ]["custom_config"]["runtimeValue"]["constantValue"]["stringValue"]
    )
    pools = custom["ai_platform_training_args"]["job_spec"]["worker_pool_specs"]
    assert [p["replica_count"] for p in pools] == [1, 3]
    assert "1 x n1-standard-8, 3 x n1-standard-8" in capsys.readouterr().err


def test_submit_dry_run_prints_the_request_offline(tmp_path, capsys, no_credentials):
    output = tmp_path / "p.json"
    assert _run("submit", "--config", VERTEX, "--output", str(output), "--dry-run") == 0
    captured = capsys.readouterr()
    # stdout: only the request, as JSON (the compile summary went to stderr).
    request = json.loads(captured.out)
    assert "compiled pipeline" in captured.err
    assert request["parent"] == "projects/my-gcp-project/locations/us-central1"
    assert request["pipelineJobId"].startswith("taxifare-")
    job = request["pipelineJob"]
    assert job["displayName"] == "taxifare"
    assert job["serviceAccount"] == "taxifare-pipelines@my-gcp-project.iam.gserviceaccount.com"
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://my-gcp-project-taxifare/pipeline"
    # The compiled spec, as aiplatform sends it (it also sets caching on every task).
    compiled = json.loads(output.read_text())["pipelineSpec"]
    assert job["pipelineSpec"]["deploymentSpec"] == compiled["deploymentSpec"]
    assert set(job["pipelineSpec"]["root"]["dag"]["tasks"]) == set(compiled["root"]["dag"]["tasks"])
    assert "nothing sent" in captured.err
    assert "https://us-central1-aiplatform.googleapis.com/v1/projects/my-gcp-project" in (
        captured.err
    )


def test_submit_without_credentials_says_what_is_missing(tmp_path, capsys, no_credentials):
    assert _run("submit", "--config", VERTEX, "--output", str(tmp_path / "p.json")) == 2
    err = capsys.readouterr().err
    assert "no Google Cloud credentials" in err
    assert "gcloud auth application-default login" in err
    assert "GOOGLE_APPLICATION_CREDENTIALS" in err
    assert "Traceback" not in err


def test_submit_a_compiled_template_as_is(tmp_path, capsys, no_credentials):
    template = tmp_path / "given.json"
    assert _run("compile", "--config", VERTEX, "--output", str(template)) == 0
    capsys.readouterr()
    assert _run("submit", "--config", VERTEX, "--template", str(template), "--dry-run") == 0
    request = json.loads(capsys.readouterr().out)
    assert request["pipelineJob"]["pipelineSpec"]["pipelineInfo"]["name"] == "taxifare"
    assert _run("submit", "--config", VERTEX, "--template", str(tmp_path / "nope.json")) == 2
    assert "compiled pipeline not found" in capsys.readouterr().err


def test_config_errors_exit_2_before_any_work(tmp_path, capsys):
    output = tmp_path / "p.json"
    assert _run("compile", "--config", LOCAL, "--output", str(output)) == 2
    assert "no `vertex` section" in capsys.readouterr().err
    code = _run(
        "submit",
        "--config",
        VERTEX,
        "--output",
        str(output),
        "--dry-run",
        "--set",
        "vertex.pipeline_root=build/pipeline",
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "vertex.pipeline_root" in err and "gs://" in err and VERTEX in err
    assert not output.exists()
