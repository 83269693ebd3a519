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
    args = ["--output", str(tmp_path / "p.json"), "--set", f"vertex.image={DIGEST_IMAGE}"]
    assert _run("submit", "--config", VERTEX, *args) == 2
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


DIGEST_IMAGE = "us-central1-docker.pkg.dev/my-gcp-project/taxifare/pipeline@sha256:" + "ab" * 32


def test_submit_refuses_a_mutable_image_tag(tmp_path, capsys, no_credentials):
    # configs/vertex.yaml names its image by the tag :0.1.0.
    assert _run("submit", "--config", VERTEX, "--output", str(tmp_path / "p.json")) == 2
    err = capsys.readouterr().err
    assert (
        "the pipeline's image is a mutable tag"
        " (us-central1-docker.pkg.dev/my-gcp-project/taxifare/pipeline:0.1.0)" in err
    )
    assert "fully_qualified_digest" in err and "--allow-tag" in err
    # Refused before credentials were even looked for: nothing was sent.
    assert "no Google Cloud credentials" not in err
    # --allow-tag goes on (here to the missing credentials).
    args = ["--output", str(tmp_path / "p.json"), "--allow-tag"]
    assert _run("submit", "--config", VERTEX, *args) == 2
    assert "no Google Cloud credentials" in capsys.readouterr().err
    # A dry run shows the request and says a real submit would refuse it.
    args = ["--output", str(tmp_path / "p.json"), "--dry-run"]
    assert _run("submit", "--config", VERTEX, *args) == 0
    assert "warning: a real submit refuses this" in capsys.readouterr().err


def test_every_pipeline_image_of_the_spec_is_checked(tmp_path, capsys):
    from pipeline.vertex import submit

    spec = tmp_path / "p.json"
    assert _run("compile", "--config", VERTEX, "--output", str(spec), "--set",
                f"vertex.image={DIGEST_IMAGE}") == 0  # fmt: skip
    job = json.loads(spec.read_text())
    assert submit.pipeline_images(job) == {DIGEST_IMAGE}
    assert submit.mutable_images(job) == []
    # A tag in any one place is found: the Dataflow workers', a training pool's.
    text = spec.read_text()
    sdk = text.replace(f"--sdk_container_image={DIGEST_IMAGE}", "--sdk_container_image=w:1", 1)
    assert submit.mutable_images(json.loads(sdk)) == ["w:1"]
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    for task in ("Trainer", "Tuner"):
        value = tasks[task]["inputs"]["parameters"]["custom_config"]["runtimeValue"]
        config = json.loads(value["constantValue"]["stringValue"])
        key = "ai_platform_training_args" if task == "Trainer" else "ai_platform_tuning_args"
        config[key]["job_spec"]["worker_pool_specs"][0]["container_spec"]["image_uri"] = "t:2"
        value["constantValue"]["stringValue"] = json.dumps(config)
    assert submit.mutable_images(job) == ["t:2"]
    assert not submit.is_digest(DIGEST_IMAGE.replace("ab", "zz", 1))
