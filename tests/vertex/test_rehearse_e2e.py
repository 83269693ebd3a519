"""`taxifare rehearse` on configs/vertex.yaml: the compiled spec, every task, two runs."""

from __future__ import annotations

import json
import re

import pytest

from pipeline import cli
from pipeline.vertex.stand_ins import StandInEndpointClient

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
    return code, out.getvalue(), root


def _lines(text: str, run: int) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        match = re.match(rf"^\s+run {run}\s+(\S+)\s+(\S+)\s+\d+s\s*(.*)$", line)
        if match:
            found[match.group(1)] = f"{match.group(2)} {match.group(3)}"
    return found


def test_both_runs_run_every_task_to_the_end(rehearsal):
    code, text, _ = rehearsal
    assert code == 0, text
    assert "taxifare: rehearsal passed" in text
    for run in (1, 2):
        lines = _lines(text, run)
        assert len(lines) == 15, lines
        assert all(v.startswith("ok") for v in lines.values()), lines
    assert "not rehearsed: Dataflow" in text


def test_the_second_run_meets_the_first(rehearsal):
    _, text, root = rehearsal
    first, second = _lines(text, 1), _lines(text, 2)
    resolver = "LatestBlessedModelResolver-model-resolver"
    assert "model: none yet" in first[resolver]
    # The latest blessed model of run 1, found in ML Metadata by the spec's own query.
    assert re.search(r"model: file://\S+/rehearsal-1-\w+/Trainer_\w+/model", second[resolver])
    # The drift check found run 1's verdict through the baseline pointer (same span: nothing
    # to compare, but the baseline was found, as it must be on Vertex).
    assert "previous verdict" not in first["DriftCheck"]
    assert re.search(
        r"previous verdict file://\S+/rehearsal-1-\w+/DriftCheck_", second["DriftCheck"]
    )
    pointer = root / "pipeline" / "baselines" / "taxifare" / "drift" / "latest_verdict.json"
    assert "/rehearsal-2-" in json.loads(pointer.read_text())["uri"]
    assert first["Evaluator"] == "ok blessed" and second["Evaluator"] == "ok blessed"
    assert "pushed to" in first["Pusher"] and "pushed to" in second["Pusher"]


def test_the_stand_in_endpoint_holds_only_the_new_model(rehearsal):
    _, _, root = rehearsal
    endpoint = StandInEndpointClient(str(root / "endpoint.json")).load()
    assert [m.id for m in endpoint.deployed_models] == ["2"]
    assert dict(endpoint.traffic_split) == {"2": 100}
    logging = endpoint.predict_request_response_logging_config
    assert logging.enabled and logging.sampling_rate == pytest.approx(0.1)


def test_artifacts_live_only_under_the_file_uri_root(rehearsal):
    _, _, root = rehearsal
    # Nothing was written with a plain path that took the URI for a folder name.
    assert not list(root.rglob("file:*"))
    assert (root / "metadata.sqlite").is_file()
