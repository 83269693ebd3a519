"""A root with four runs: `taxifare runs`, the run reports in a real Chromium, the summary's
next steps run as printed from a fresh shell, and an unchanged re-run that pushes nothing."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipeline import cli, dag, names
from pipeline.runs import COMPLETED, NOT_BLESSED, STOPPED_AT_GATE
from taxifare_modules import features as f
from tests.e2e.runs import serving_state as _serving_state
from tests.e2e.runs import smoke_run
from tests.monitoring.conftest import CHROMIUM_FLAGS, chromium  # noqa: F401 - shared fixture
from tests.serving.helpers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3000)]

REPO = Path(__file__).resolve().parents[2]
_FLAGS = CHROMIUM_FLAGS
# A fresh login shell's environment: no activated venv, nothing of this process.
FRESH_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}


def _run(root: Path, port: int, *overrides: str) -> tuple[int, dict]:
    # The summary writes its commands for a shell with this PATH (`taxifare` when the venv is
    # activated, `.venv/bin/taxifare` otherwise): run as from the fresh shell the commands are
    # run from below, whatever the shell that started the tests had activated.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", FRESH_ENV["PATH"])
        return smoke_run(root, f"serving.port={port}", *overrides)


@pytest.fixture(scope="module")
def history(tmp_path_factory, sample_rows) -> dict:
    """Blessed and pushed; the same again unchanged; not blessed; stopped at the gate."""
    root = tmp_path_factory.mktemp("history") / "root"
    port = free_port()
    runs = {"port": port, "root": root}
    runs["pushed"] = _run(root, port)
    runs["serving_after_push"] = _serving_state(root)
    runs["unchanged"] = _run(root, port)
    runs["serving_after_unchanged"] = _serving_state(root)
    runs["not_blessed"] = _run(root, port, "evaluation.max_rmse=1.0")
    corrupt = tmp_path_factory.mktemp("corrupt")
    rows = [dict(r) for r in sample_rows[:3000]]
    for r in rows[::20]:
        r[f.PAYMENT_TYPE_KEY] = "Bitcoin"
    with open(corrupt / "trips.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    runs["stopped"] = _run(root, port, f"data.input={corrupt}")
    return runs


def test_the_runs_end_as_expected(history):
    assert history["pushed"][0] == cli.EXIT_OK
    assert history["unchanged"][0] == cli.EXIT_OK
    assert history["not_blessed"][0] == cli.EXIT_NOT_BLESSED
    assert history["stopped"][0] == cli.EXIT_ANOMALIES


def test_an_unchanged_rerun_pushes_nothing_new(history):
    _, first = history["pushed"]
    _, again = history["unchanged"]
    assert first["pushed_to"] and again["blessed"] is True
    assert again["pushed_to"] is None
    assert again["already_serving"] == first["pushed_to"]
    # No new version, no file touched: a server has nothing to reload.
    assert history["serving_after_unchanged"] == history["serving_after_push"]
    assert sorted(os.listdir(Path(first["pushed_to"]).parent)) == [Path(first["pushed_to"]).name]


def _pushed_versions_in_mlmd(root: Path) -> dict[str, str]:
    from pipeline.mlmd_run import custom_value, open_store

    store = open_store(str(root / "metadata.sqlite"))
    return {
        a.uri: str(custom_value(a, names.PUSHED_VERSION_PROPERTY))
        for a in store.get_artifacts_by_type("PushedModel")
        if custom_value(a, names.PUSHED_PROPERTY) == 1
    }


def test_runs_lists_each_run_with_its_status_and_figures(history, capsys):
    root = history["root"]
    assert cli.main(["runs", "--root", str(root), "--json"]) == cli.EXIT_OK
    records = json.loads(capsys.readouterr().out)
    names = ["stopped", "not_blessed", "unchanged", "pushed"]  # newest first
    assert [r["run_id"] for r in records] == [history[n][1]["run_id"] for n in names]
    by_name = dict(zip(names, records, strict=True))
    statuses = {n: r["status"] for n, r in by_name.items()}
    assert statuses == {
        "stopped": STOPPED_AT_GATE,
        "not_blessed": NOT_BLESSED,
        "unchanged": COMPLETED,
        "pushed": COMPLETED,
    }
    for name in ("pushed", "unchanged", "not_blessed"):
        record, summary = by_name[name], history[name][1]
        assert record["rmse"] == summary["eval_rmse"]
        assert record["mae"] == summary["eval_mae"]
        assert record["example_count"] == summary["eval_count"]
        assert record["rows_read"] == summary["rows_read"] == 15_002
        assert record["blessed"] == summary["blessed"]
        assert record["metrics_split"] == "test"  # the Evaluator blesses on the test split
        assert record["hyperparameters"]["train_steps"] == 300
        assert record["hyperparameters"]["batch_size"] == 64
        assert record["hyperparameters_source"] == "trainer"
        assert sum(record["split_rows"].values()) == 15_002 - summary["rows_excluded"]
    pushed, unchanged = by_name["pushed"], by_name["unchanged"]
    assert pushed["baseline_model"] is None
    assert unchanged["baseline_model"] == history["pushed"][1]["model_uri"]
    assert unchanged["baseline_rmse"] == history["unchanged"][1]["baseline_rmse"]
    versions = _pushed_versions_in_mlmd(root)
    assert pushed["pushed_version"] == versions[next(iter(versions))]
    assert pushed["pushed_version"] == Path(history["pushed"][1]["pushed_to"]).name
    assert len(versions) == 1
    assert unchanged["pushed_version"] is None
    assert unchanged["already_serving"] == history["pushed"][1]["pushed_to"]
    stopped = by_name["stopped"]
    assert stopped["failed_component"] == dag.ANOMALY_GATE_ID
    assert stopped["rmse"] is None and stopped["blessed"] is None
    assert stopped["rows_read"] == 3000

    # The table: one line per run, newest first, with its status.
    assert cli.main(["runs", "--root", str(root), "--limit", "2"]) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert STOPPED_AT_GATE in lines[1] and NOT_BLESSED in lines[2]
    assert f"${history['not_blessed'][1]['eval_rmse']:.2f}" in lines[2]


HEAVY_MODULES = {"tensorflow", "tfx", "apache_beam", "tensorflow_model_analysis",
                 "tensorflow_data_validation", "tensorflow_transform"}


def _top_level_imports(args: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Runs `python -X importtime -m pipeline <args>`; the top-level modules it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    modules = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return done, modules


def test_runs_and_report_of_a_real_root_read_it_without_tensorflow(history, tmp_path):
    root = str(history["root"])
    done, modules = _top_level_imports(["runs", "--root", root])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "completed" in done.stdout and "$" in done.stdout
    assert not modules & HEAVY_MODULES, sorted(modules & HEAVY_MODULES)
    # Each run's own report (written by `taxifare run`) kept what needs the model to draw.
    run_id = history["pushed"][1]["run_id"]
    done, modules = _top_level_imports(
        ["report", "--root", root, "--run", run_id, "--out", str(tmp_path)]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not modules & HEAVY_MODULES, sorted(modules & HEAVY_MODULES)
    (page,) = tmp_path.glob("report-*.html")
    assert "Predicted vs actual fare" in page.read_text()


def test_runs_of_a_root_without_runs_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["runs", "--root", str(tmp_path)]) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == "" and "holds no runs" in captured.err


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, *_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _page_requests(net_log: Path) -> list[str]:
    """The URLs the page itself asked for (Chromium's own background requests left out)."""
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    starts = [e.get("params", {}) for e in log["events"] if e["type"] == start_job]
    return [p["url"] for p in starts if "url" in p and p.get("initiator") != "not an origin"]


def _text(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match, element_id
    return match.group(1)


def test_the_network_check_sees_a_page_that_fetches(chromium, tmp_path):  # noqa: F811
    page = tmp_path / "fetches.html"
    page.write_text('<html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    _chromium(
        chromium,
        tmp_path / "profile",
        f"--log-net-log={tmp_path / 'net.json'}",
        "--dump-dom",
        page.as_uri(),
    )
    assert _page_requests(tmp_path / "net.json") == ["http://127.0.0.1:9/x.png"]


def _hour_rmse_from_tfma(evaluation_uri: str) -> dict[str, float]:
    import tensorflow_model_analysis as tfma

    found = {}
    for metrics in tfma.load_metrics(evaluation_uri):
        keys = metrics.slice_key.single_slice_keys
        if len(keys) == 1 and keys[0].column == f.HOUR_KEY:
            for kv in metrics.metric_keys_and_values:
                if kv.key.name == "root_mean_squared_error" and kv.key.model_name != "baseline":
                    if not kv.key.is_diff:
                        found[str(keys[0].int64_value)] = kv.value.double_value.value
    return found


@pytest.mark.parametrize("name", ["pushed", "not_blessed", "stopped"])
def test_the_report_renders_offline_with_the_runs_numbers(
    history,
    name,
    chromium,  # noqa: F811
    tmp_path,
    capsys,
):
    root = history["root"]
    _, summary = history[name]
    # `taxifare run` wrote it already; `taxifare report` writes the same page anew.
    assert os.path.isfile(summary["report"])
    out = tmp_path / "reports"
    assert (
        cli.main(["report", "--root", str(root), "--run", summary["run_id"], "--out", str(out)])
        == 0
    )
    report = Path(capsys.readouterr().out.strip())
    assert report == out / f"report-{summary['run_id']}.html" and report.is_file()
    page = report.read_text()
    assert "<script" not in page and "<link" not in page
    screenshot = tmp_path / f"{name}.png"
    shot = _chromium(
        chromium,
        tmp_path / "profile-shot",
        f"--screenshot={screenshot}",
        "--window-size=1280,4000",
        f"--log-net-log={tmp_path / 'net.json'}",
        report.as_uri(),
    )
    assert shot.returncode == 0, shot.stderr[-3000:]
    assert "Uncaught" not in shot.stderr and "ERROR:CONSOLE" not in shot.stderr, shot.stderr
    assert screenshot.stat().st_size > 20_000
    assert _page_requests(tmp_path / "net.json") == []
    dom = _chromium(chromium, tmp_path / "profile-dom", "--dump-dom", report.as_uri())
    assert dom.returncode == 0 and "ERROR:CONSOLE" not in dom.stderr, dom.stderr[-3000:]
    html = dom.stdout
    # Every chart is drawn with both axes labelled.
    charts = html.count('class="chart"')
    assert charts >= 1
    assert html.count("</svg>") >= charts

    if name == "stopped":
        assert _text(html, "status") == STOPPED_AT_GATE
        why = html[html.index('id="why"') : html.index("<h2>Summary</h2>")]
        assert f.PAYMENT_TYPE_KEY in why
        assert all(a["feature"] in why for a in summary["anomalies"])
        assert _text(html, "rows-read") == f"{summary['rows_read']:,}"
        assert "Nothing was pushed" in html
        return
    assert 'id="why"' not in html
    assert _text(html, "status") == (COMPLETED if name == "pushed" else NOT_BLESSED)
    assert _text(html, "rows-read") == f"{summary['rows_read']:,}"
    assert _text(html, "rmse") == f"${summary['eval_rmse']:.2f}"
    assert _text(html, "mae") == f"${summary['eval_mae']:.2f}"
    assert _text(html, "example-count") == f"{summary['eval_count']:,}"
    # RMSE by hour of day: TFMA's own figures.
    from pipeline.mlmd_run import open_store, read_run, run_context

    nodes = read_run(
        open_store(str(root / "metadata.sqlite")),
        run_context(open_store(str(root / "metadata.sqlite")), summary["run_id"]),
    )
    by_hour = _hour_rmse_from_tfma(nodes[dag.EVALUATOR_ID].outputs["evaluation"][0].uri)
    assert len(by_hour) == 24
    for hour, rmse in by_hour.items():
        assert f'<tr><td>{hour}</td><td class="num">${rmse:.2f}</td>' in html, hour
    assert 'aria-label="predicted vs actual"' in html and "actual fare (US dollars)" in html
    if name == "pushed":
        version = Path(summary["pushed_to"]).name
        assert _text(html, "pushed-version") == version
        assert version in _pushed_versions_in_mlmd(root).values()
    else:
        assert summary["blessing_reasons"][0] in html.replace("&#x27;", "'")
        assert "Nothing was pushed" in html


def _line_after(lines: list[str], marker: str) -> str:
    index = next(i for i, line in enumerate(lines) if marker in line)
    return lines[index + 1].strip()


def test_the_next_steps_run_as_printed_from_a_fresh_shell(history, tmp_path):
    _, summary = history["pushed"]
    steps = summary["next_steps"]
    serve = _line_after(steps, "serve it over REST")
    predict = _line_after(steps, "ask it for fares")
    skew = _line_after(steps, "compare the served traffic")
    tensorboard = _line_after(steps, "curves in TensorBoard")
    assert serve.startswith(".venv/bin/taxifare serve ")
    assert predict.startswith(".venv/bin/taxifare predict ")
    logdir = tensorboard.split("--logdir ", 1)[1]
    assert any(p.name.startswith("events.out.tfevents") for p in Path(logdir).rglob("*"))
    trips = json.loads(Path(summary["trips_file"]).read_text())["instances"]
    # A random sample of the tested split, enough for the skew check to judge: the run's
    # smoke data has 3,000 test trips, so 300 of them.
    assert len(trips) == cli.TRIPS_SAMPLE_SIZE
    assert len({json.dumps(t, sort_keys=True) for t in trips}) > 0.9 * len(trips)
    assert sum(f.DROPOFF_LATITUDE_KEY in t for t in trips) > 0.9 * len(trips)

    server = subprocess.Popen(
        ["bash", "-c", f"exec {serve}"],
        cwd=REPO,
        env=FRESH_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{history['port']}/healthz"
        deadline = time.monotonic() + 600
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(1)
        answer = subprocess.run(
            ["bash", "-c", predict], cwd=REPO, env=FRESH_ENV, capture_output=True, text=True
        )
        assert answer.returncode == 0, answer.stderr
        fares = [float(x) for x in answer.stdout.split()]
        assert len(fares) == len(trips) and all(0 < x < 250 for x in fares)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=120)
    checked = subprocess.run(
        ["bash", "-c", skew], cwd=REPO, env=FRESH_ENV, capture_output=True, text=True
    )
    out = Path(skew.split("--out ", 1)[1].split()[0])
    verdict = json.loads((out / "verdict.json").read_text())
    # Untouched trips of the data the model learned from: the demo path ends clean.
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert verdict["found"] is False
    assert verdict["sides"]["serving"]["examples"] == len(trips)
