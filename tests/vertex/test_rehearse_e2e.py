"""`taxifare rehearse` on configs/vertex.yaml: the submitted spec, every task, three runs.

Run 1 reads span 1 (made from the tfx sample where configs/vertex.yaml reads gs:// span
folders); span 2 arrives before run 2, which compares it with span 1 and evaluates against
run 1's model; run 3 meets the same data: the data and training steps are step-cache hits, the
Evaluator compares the served model with itself and the Pusher deploys nothing.
"""

from __future__ import annotations

import json
import re

import pytest

from pipeline import cli
from pipeline.vertex.stand_ins import StandInVertex

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

QUICK = [
    "training.train_steps=40",
    "training.eval_steps=5",
    "training.batch_size=64",
    # The Tuner's Vertex job: two trials on two replicas, one short epoch each.
    "tuning.trials=2",
    "tuning.epochs=1",
    "tuning.parallel_trials=2",
    "evaluation.max_rmse=50",
    # Two short trainings differ by noise: the second must still be blessed and pushed.
    "evaluation.max_rmse_increase=10",
    # Run 2's Pusher undeploys run 1's model.
    "vertex.endpoint.keep_previous=0",
]
TASKS = 15
RESOLVER = "LatestBlessedModelResolver-model-resolver"
# What run 3, on unchanged data, must take from the step cache.
CACHED_IN_RUN_3 = (
    "CsvExampleGen",
    "StatisticsGen",
    "ExampleValidator",
    "AnomalyGate",
    "DriftCheck",
    "FareFilter",
    "Transform",
    "Tuner",
    "Trainer",
)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearsal")
    args = ["rehearse", "--config", "configs/vertex.yaml", "--root", str(root)]
    for override in QUICK:
        args += ["--set", override]
    import contextlib
    import io

    out = io.StringIO()
    # The rehearsal's progress and verdict are on stderr (stdout is for requested output).
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(args)
    # Kept beside the artifacts, for a look at a failed assertion's context.
    (root / "output.txt").write_text(out.getvalue())
    return code, out.getvalue(), root


def _lines(text: str, run: int) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        match = re.match(rf"^\s+run {run}\s+(\S+)\s+(\S+)\s+\d+s\s*(.*)$", line)
        if match:
            found[match.group(1)] = f"{match.group(2)} {match.group(3)}"
    return found


def test_three_runs_run_every_task_to_the_end(rehearsal):
    code, text, _ = rehearsal
    assert code == 0, text
    assert "taxifare: rehearsal passed" in text
    assert re.search(r"estimate: about \d+ (min|s) \(run 1 ", text), text
    for run in (1, 2, 3):
        lines = _lines(text, run)
        assert len(lines) == TASKS, lines
        assert all(v.split()[0] in ("ok", "cached") for v in lines.values()), lines
    # Run 1 meets an empty cache; run 2 a new span: only SchemaGen, which reads the schema
    # file alone, comes from the cache.
    assert not [t for t, v in _lines(text, 1).items() if "cached" in v]
    assert [t for t, v in _lines(text, 2).items() if "cached" in v] == ["SchemaGen"]
    assert "not rehearsed: Dataflow" in text


def test_the_submitted_spec_is_rehearsed_with_only_the_unreachable_replaced(rehearsal):
    _, text, root = rehearsal
    submitted = (root / "pipeline.json").read_text()
    rehearsed = (root / "rehearsed.json").read_text()
    assert "gs://" in submitted and "gs://" not in rehearsed
    assert "span-{SPAN}/*.csv" in rehearsed  # the input's pattern is the config's
    assert "for this machine: input gs://my-gcp-project-taxifare/data ->" in text


def test_spans_advance_and_the_second_run_meets_the_first(rehearsal):
    _, text, root = rehearsal
    first, second = _lines(text, 1), _lines(text, 2)
    # ExampleGen's driver resolved the newest span folder; the executor read that span.
    assert first["CsvExampleGen"] == "ok span 1"
    assert second["CsvExampleGen"] == "ok span 2"
    assert "model: none yet" in first[RESOLVER]
    # The latest blessed model of run 1, found in ML Metadata by the spec's own query.
    assert re.search(r"model: file://\S+/rehearsal-1-\w+/Trainer_\w+/model", second[RESOLVER])
    # DriftCheck compared span 2 with span 1 (the verdict's own properties).
    assert "span 1 not compared" in first["DriftCheck"]
    assert "previous verdict" not in first["DriftCheck"]
    assert "span 2 compared with span 1" in second["DriftCheck"]
    assert re.search(
        r"previous verdict file://\S+/rehearsal-1-\w+/DriftCheck_", second["DriftCheck"]
    )
    pointer = root / "pipeline" / "baselines" / "taxifare" / "drift" / "latest_verdict.json"
    assert "/rehearsal-2-" in json.loads(pointer.read_text())["uri"]
    assert first["Evaluator"] == "ok blessed" and second["Evaluator"] == "ok blessed"
    assert "pushed to" in first["Pusher"] and "pushed to" in second["Pusher"]


def test_the_third_run_on_unchanged_data_is_cached_and_deploys_nothing(rehearsal):
    _, text, root = rehearsal
    third = _lines(text, 3)
    for task in CACHED_IN_RUN_3:
        assert third[task].startswith("cached outputs of rehearsal-2-"), (task, third[task])
    assert third["SchemaGen"].startswith("cached outputs of rehearsal-1-")
    # The resolvers always run: the latest blessed model is run 2's, which run 3's cached
    # Trainer output is, so the Evaluator compares the model with itself.
    assert third[RESOLVER].startswith("ok ")
    assert re.search(r"model: file://\S+/rehearsal-2-\w+/Trainer_\w+/model", third[RESOLVER])
    assert third["Evaluator"] == "ok blessed"
    # The served model is not uploaded or deployed again: the Pusher ran on the new
    # blessing, found the model serving and marked it not pushed.
    assert third["Pusher"].startswith("ok not pushed: already serving"), third["Pusher"]
    vertex = StandInVertex(str(root / "endpoint.json"))
    assert len(vertex.calls("UploadModel")) == 2  # runs 1 and 2
    assert len(vertex.calls("DeployModel")) == 2
    assert len(vertex.models()) == 2  # two versions of the pipeline's one Model
    # The endpoint still holds run 2's deployment alone (keep_previous=0).
    endpoint = vertex.load()
    assert [m.id for m in endpoint.deployed_models] == ["2"]
    assert dict(endpoint.traffic_split) == {"2": 100}


def test_the_stand_in_endpoint_keeps_request_logging(rehearsal):
    _, _, root = rehearsal
    endpoint = StandInVertex(str(root / "endpoint.json")).load()
    logging = endpoint.predict_request_response_logging_config
    assert logging.enabled and logging.sampling_rate == pytest.approx(0.1)


def test_artifacts_live_only_under_the_file_uri_root(rehearsal):
    _, _, root = rehearsal
    # Nothing was written with a plain path that took the URI for a folder name.
    assert not list(root.rglob("file:*"))
    assert (root / "metadata.sqlite").is_file()
    # The tasks' times are kept for the next rehearsal's estimate.
    times = json.loads((root / "task_times.json").read_text())
    assert set(times) >= {"CsvExampleGen", "Trainer", "Pusher"}
