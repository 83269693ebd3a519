"""The pieces of `taxifare rehearse`, each on its own: the submitted spec localized, the span
folders, the task order and the parallel scheduler, the estimate, the emulated step cache, the
resolver queries against ML Metadata, the training job's cluster environment, Beam on file://
URIs and the stand-in endpoint."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.vertex import rehearse, stand_ins

REPO = Path(__file__).resolve().parents[2]
VERTEX = REPO / "configs" / "vertex.yaml"


@pytest.fixture(scope="module")
def submitted(tmp_path_factory):
    """configs/vertex.yaml compiled as `taxifare compile` compiles it for submission."""
    from pipeline.vertex.compiler import compile_pipeline

    cfg = load_config(VERTEX)
    return cfg, compile_pipeline(cfg, tmp_path_factory.mktemp("spec") / "pipeline.json")


def test_the_submitted_spec_is_changed_only_where_this_machine_cannot_reach(submitted, tmp_path):
    from pipeline.vertex.component_config import beam_pipeline_args

    cfg, job = submitted
    local_data = str(tmp_path / "data")
    rehearsed, notes = rehearse.localize(job, cfg, tmp_path, local_data)
    text = json.dumps(rehearsed)
    assert "gs://" not in text and "DataflowRunner" not in text
    root = (tmp_path / "pipeline").resolve().as_uri()
    assert rehearsed["runtimeConfig"]["gcsOutputDirectory"] == root
    assert len(notes) == 3
    # Undoing the three replacements gives back the submitted spec, byte for byte: nothing
    # else was changed (the pattern, the parameters, the containers, the queries).
    direct = cfg.vertex.model_copy(
        update={"dataflow": cfg.vertex.dataflow.model_copy(update={"runner": "DirectRunner"})}
    )
    undone = json.loads(text.replace(root, cfg.vertex.pipeline_root))
    for executor in undone["pipelineSpec"]["deploymentSpec"]["executors"].values():
        container = executor.get("container")
        for step in [container, *container.get("lifecycle", {}).values()] if container else []:
            step["args"] = rehearse._replace_sublist(
                step["args"],
                beam_pipeline_args(direct, cfg.beam),
                beam_pipeline_args(cfg.vertex, cfg.beam),
            )
    example_gen = undone["pipelineSpec"]["root"]["dag"]["tasks"]["CsvExampleGen"]
    constant = example_gen["inputs"]["parameters"]["input_base"]["runtimeValue"]["constantValue"]
    assert constant["stringValue"] == local_data
    constant["stringValue"] = cfg.data.input
    assert undone == job
    # The spec keeps the config's span pattern: the driver resolves the span here too.
    assert "span-{SPAN}/*.csv" in text


def test_a_spec_that_does_not_hold_the_config_cannot_be_localized(submitted, tmp_path):
    cfg, job = submitted
    other = cfg.model_copy(
        update={"vertex": cfg.vertex.model_copy(update={"project": "another-project"})}
    )
    with pytest.raises(rehearse.RehearsalError, match="Beam options"):
        rehearse.localize(job, other, tmp_path, str(tmp_path))
    moved = cfg.model_copy(update={"data": cfg.data.model_copy(update={"input": "gs://b/x"})})
    with pytest.raises(rehearse.RehearsalError, match="input_base"):
        rehearse.localize(job, moved, tmp_path, str(tmp_path))


def test_span_folders_advance_as_tfx_resolves_them(tmp_path):
    from tfx.components.example_gen import input_processor
    from tfx.proto import example_gen_pb2

    local = rehearse.LocalInput(tmp_path / "data", "span-{SPAN}/*.csv")
    assert local.spans() == []
    splits = [example_gen_pb2.Input.Split(name="single_split", pattern="span-{SPAN}/*.csv")]
    resolved = []
    for _ in range(2):
        local.add_span()
        processor = input_processor.FileBasedInputProcessor(str(local.folder), splits, None)
        resolved.append(processor.resolve_span_and_version()[0])
    # TFX's own span resolution (what ExampleGen's driver runs) takes the newest folder.
    assert resolved == [1, 2] and local.spans() == [1, 2]
    assert (tmp_path / "data" / "span-2" / "data.csv").stat().st_size > 1_000_000
    with pytest.raises(rehearse.RehearsalError, match="date specs"):
        rehearse.LocalInput(tmp_path, "{YYYY}-{MM}-{DD}/*.csv")
    with pytest.raises(rehearse.RehearsalError, match="cannot name a local file"):
        rehearse.LocalInput(tmp_path, "span-{SPAN}/trips-[0-9].csv").path_for(1)


def test_tasks_run_after_what_they_read():
    job = {
        "pipelineSpec": {
            "root": {
                "dag": {
                    "tasks": {
                        "c": {"dependentTasks": ["b"]},
                        "b": {
                            "inputs": {
                                "artifacts": {
                                    "x": {
                                        "taskOutputArtifact": {
                                            "producerTask": "a",
                                            "outputArtifactKey": "o",
                                        }
                                    }
                                }
                            }
                        },
                        "a": {},
                    }
                }
            }
        }
    }
    assert rehearse.task_order(job) == ["a", "b", "c"]
    job["pipelineSpec"]["root"]["dag"]["tasks"]["a"]["dependentTasks"] = ["c"]
    with pytest.raises(rehearse.RehearsalError, match="cycle"):
        rehearse.task_order(job)


def _result(task: str, status: str = "ok") -> rehearse.TaskResult:
    return rehearse.TaskResult(1, task, status, 0.0)


def _skipped(task: str) -> rehearse.TaskResult:
    return _result(task, "skipped")


def test_the_scheduler_runs_ready_tasks_together_and_after_their_dependencies():
    # a -> (b, c) -> d; e alone.
    needs = {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}, "e": set()}
    lock = threading.Lock()
    started, ended = [], []
    running = [0, 0]  # now, most at once
    # b and c must overlap: each waits at the barrier for the other (a timeout fails it).
    barrier = threading.Barrier(2, timeout=60)

    def work(task: str) -> rehearse.TaskResult:
        with lock:
            started.append(task)
            running[0] += 1
            running[1] = max(running)
        if task in ("b", "c"):
            barrier.wait()
        with lock:
            running[0] -= 1
            ended.append(task)
        return _result(task)

    done = []
    results = rehearse.run_scheduled(
        needs, work, 2, skipped=_skipped, on_done=lambda r: done.append(r.task)
    )
    assert {t: r.status for t, r in results.items()} == dict.fromkeys(needs, "ok")
    for task, deps in needs.items():
        assert all(ended.index(d) < started.index(task) for d in deps), (task, started, ended)
    assert running[1] == 2  # never more than the pool, and the pool was used
    assert sorted(done) == sorted(needs)
    with pytest.raises(ValueError, match="at least 1"):
        rehearse.run_scheduled(needs, work, 0, skipped=_skipped)


def test_a_failure_stops_its_dependents_and_independent_tasks_finish():
    needs = {"a": set(), "b": {"a"}, "c": {"b"}, "x": set(), "y": {"x"}}
    ran = []

    def work(task: str) -> rehearse.TaskResult:
        ran.append(task)
        return _result(task, "failed" if task == "a" else "ok")

    results = rehearse.run_scheduled(needs, work, 2, skipped=_skipped)
    assert {t: r.status for t, r in results.items()} == {
        "a": "failed",
        "b": "skipped",
        "c": "skipped",
        "x": "ok",
        "y": "ok",
    }
    assert sorted(ran) == ["a", "x", "y"]
    # A cached task counts as done for its dependents.
    results = rehearse.run_scheduled(
        {"a": set(), "b": {"a"}},
        lambda t: _result(t, "cached" if t == "a" else "ok"),
        1,
        skipped=_skipped,
    )
    assert results["b"].status == "ok"


def test_the_estimate_follows_the_schedule():
    chain = {"a": set(), "b": {"a"}, "c": {"b"}}
    seconds = {"a": 10.0, "b": 20.0, "c": 30.0}
    assert rehearse.estimate_seconds(chain, seconds, 2) == 60.0
    apart = {"a": set(), "b": set(), "c": set()}
    assert rehearse.estimate_seconds(apart, seconds, 1) == 60.0
    assert rehearse.estimate_seconds(apart, seconds, 2) == 30.0  # c, then a and b beside it
    assert rehearse.estimate_seconds(apart, seconds, 3) == 30.0
    # The longest chain starts first: with one slot to spare, the long chain a->b is not
    # left waiting behind the short x.
    mixed = {"a": set(), "b": {"a"}, "x": set(), "y": set()}
    times = {"a": 10.0, "b": 50.0, "x": 10.0, "y": 10.0}
    assert rehearse.critical_path(mixed, times)["a"] == 60.0
    assert rehearse.estimate_seconds(mixed, times, 2) == 60.0
    assert rehearse.descendants(chain, {"b"}) == {"b", "c"}


def test_the_cache_key_changes_with_what_vertex_keys_on():
    component = {"executorLabel": "e", "outputDefinitions": {"artifacts": {"o": {}}}}
    container = {"image": "i", "command": ["python"], "args": ["--x"]}
    params = {"p": {"stringValue": "1"}}
    inputs = {"x": [{"name": "artifacts/1", "uri": "file:///a", "metadata": {}}]}
    key = rehearse.cache_key("t", component, container, params, inputs)
    # The same task on the same inputs: a hit, whatever the input's URI or metadata say.
    same = {"x": [{"name": "artifacts/1", "uri": "file:///elsewhere", "metadata": {"k": 1}}]}
    assert rehearse.cache_key("t", dict(component), dict(container), dict(params), same) == key
    changed = [
        rehearse.cache_key("t", component, container, {"p": {"stringValue": "2"}}, inputs),
        rehearse.cache_key(
            "t", component, container, params, {"x": [{"name": "artifacts/2", "uri": "u"}]}
        ),
        rehearse.cache_key("t", component, {**container, "args": ["--y"]}, params, inputs),
        rehearse.cache_key("t", component, {**container, "image": "j"}, params, inputs),
        rehearse.cache_key("other", component, container, params, inputs),
    ]
    assert key not in changed and len(set(changed)) == len(changed)


# A container task of a small spec: records the ExecutorInput it was given.
_EXECUTOR = """
import json, os, sys
with open(os.environ["REHEARSAL_TEST_RECORD"], "a") as fh:
    fh.write(json.dumps({"task": sys.argv[2], "input": json.loads(sys.argv[1])}) + "\\n")
"""
# ExampleGen's driver in small: the span and fingerprint of the "data" (a file's text).
_DRIVER = """
import json, os, sys
executor_input = json.loads(sys.argv[1])
fingerprint = open(os.environ["REHEARSAL_TEST_DATA"]).read()
out = executor_input["outputs"]["outputFile"]
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as fh:
    json.dump({
        "parameterValues": {"span": 2.0, "input_fingerprint": fingerprint},
        "artifacts": {"out": {"artifacts": [{"metadata": {"span": 2.0}}]}},
    }, fh)
"""


def _small_job(root: Path, parameter: str = "1", cache_b: bool = True) -> dict:
    artifact = {"artifactType": {"schemaTitle": "system.Artifact"}}

    def container(task: str) -> dict:
        return {"image": "i", "command": ["python", "-c", _EXECUTOR], "args": ["{{$}}", task]}

    driven = container("a")
    driven["lifecycle"] = {
        "preCacheCheck": {"command": ["python", "-c", _DRIVER], "args": ["{{$}}"]}
    }
    return {
        "runtimeConfig": {"gcsOutputDirectory": str(root / "pipeline")},
        "pipelineSpec": {
            "pipelineInfo": {"name": "small"},
            "components": {
                "A": {"executorLabel": "ea", "outputDefinitions": {"artifacts": {"out": artifact}}},
                "B": {
                    "executorLabel": "eb",
                    "inputDefinitions": {"artifacts": {"x": artifact}},
                    "outputDefinitions": {"artifacts": {"out": artifact}},
                },
            },
            "deploymentSpec": {
                "executors": {"ea": {"container": driven}, "eb": {"container": container("b")}}
            },
            "root": {
                "dag": {
                    "tasks": {
                        "a": {
                            "componentRef": {"name": "A"},
                            "cachingOptions": {"enableCache": True},
                            "inputs": {
                                "parameters": {
                                    "p": {
                                        "runtimeValue": {
                                            "constantValue": {"stringValue": parameter}
                                        }
                                    }
                                }
                            },
                        },
                        "b": {
                            "componentRef": {"name": "B"},
                            "cachingOptions": {"enableCache": cache_b},
                            "inputs": {
                                "artifacts": {
                                    "x": {
                                        "taskOutputArtifact": {
                                            "producerTask": "a",
                                            "outputArtifactKey": "out",
                                        }
                                    }
                                }
                            },
                        },
                    }
                }
            },
        },
    }


def test_the_step_cache_reuses_outputs_until_a_parameter_or_an_input_changes(tmp_path, monkeypatch):
    record = tmp_path / "record.jsonl"
    data = tmp_path / "data.txt"
    data.write_text("fingerprint-1")
    monkeypatch.setenv("REHEARSAL_TEST_RECORD", str(record))
    monkeypatch.setenv("REHEARSAL_TEST_DATA", str(data))
    schema = ("/none", "/none")
    lines = []

    def statuses(job: dict, run: int, cache: bool = True) -> dict[str, str]:
        rehearsal = rehearse.Rehearsal(job, tmp_path, schema, cache=cache)
        return {r.task: r.status for r in rehearsal.run(run, lines.append, parallel=2)}

    def executed() -> list[dict]:
        return [json.loads(line) for line in record.read_text().splitlines()]

    assert statuses(_small_job(tmp_path), 1) == {"a": "ok", "b": "ok"}
    first = executed()
    # The executor got what the driver wrote: parameters and the output's properties.
    a_input = first[0]["input"]
    assert a_input["inputs"]["parameters"]["span"] == {"intValue": 2}
    assert a_input["inputs"]["parameters"]["input_fingerprint"] == {"stringValue": "fingerprint-1"}
    assert a_input["outputs"]["artifacts"]["out"]["artifacts"][0]["metadata"] == {"span": 2.0}
    # Unchanged: both reuse run 1's outputs and run nothing; b reads a's run-1 artifact.
    assert statuses(_small_job(tmp_path), 2) == {"a": "cached", "b": "cached"}
    assert len(executed()) == 2
    assert any(x.startswith("  run 2  a") and "cached" in x and "rehearsal-1-" in x for x in lines)
    # New data (the driver's fingerprint): a misses, and so does b (a new input artifact).
    data.write_text("fingerprint-2")
    assert statuses(_small_job(tmp_path), 3) == {"a": "ok", "b": "ok"}
    # A changed parameter misses; b's input is a new artifact again.
    assert statuses(_small_job(tmp_path, parameter="2"), 4) == {"a": "ok", "b": "ok"}
    # The same again hits; a task whose spec turns its cache off runs, as does every task
    # with the cache off (orchestrator.enable_cache: false).
    assert statuses(_small_job(tmp_path, parameter="2"), 5) == {"a": "cached", "b": "cached"}
    assert statuses(_small_job(tmp_path, "2", cache_b=False), 6) == {"a": "cached", "b": "ok"}
    assert statuses(_small_job(tmp_path, parameter="2"), 7, cache=False) == {"a": "ok", "b": "ok"}
    assert len(executed()) == 2 + 2 + 2 + 1 + 2
    # Each task's time is kept for the next estimate.
    times = json.loads((tmp_path / rehearse.TASK_TIMES).read_text())
    assert set(times) == {"a", "b"}


def test_the_estimate_counts_unchanged_runs_as_cache_hits(tmp_path):
    job = _small_job(tmp_path)
    rehearsal = rehearse.Rehearsal(job, tmp_path, ("/none", "/none"))
    (estimates, source) = rehearsal.estimate([False, True], 2)
    default = rehearse.DEFAULT_TASK_SECONDS
    # Run 1: a then b; run 2: a's driver still runs, b is a hit.
    assert estimates == [2 * default, rehearse.DRIVER_SECONDS]
    assert "no earlier rehearsal" in source
    (tmp_path / rehearse.TASK_TIMES).write_text(json.dumps({"a": 5.0, "b": 7.0}))
    estimates, source = rehearsal.estimate([False], 2)
    assert estimates == [12.0] and "previous rehearsal" in source


def test_resolver_queries_find_the_latest_blessed_model_in_mlmd(tmp_path):
    store = rehearse.MetadataStore(tmp_path / "m.sqlite")
    blessing = 'schema_title="tfx.ModelBlessing" AND state=LIVE AND metadata.blessed.number_value=1'
    assert store.query(blessing) is None  # nothing recorded yet
    store.record("tfx.Model", {"name": "m1", "uri": "file:///m1", "metadata": {}})
    store.record("tfx.Model", {"name": "m2", "uri": "file:///m2", "metadata": {}})
    store.record(
        "tfx.ModelBlessing",
        {"name": "b1", "uri": "file:///b1", "metadata": {"blessed": 1.0, "current_model_id": "m1"}},
    )
    store.record(
        "tfx.ModelBlessing",
        {"name": "b2", "uri": "file:///b2", "metadata": {"blessed": 0.0, "current_model_id": "m2"}},
    )
    found = store.query(blessing)
    assert found["name"] == "b1" and found["metadata"]["current_model_id"] == "m1"
    # The model resolver's query names the model the blessing was for.
    model_query = (
        'schema_title="tfx.Model" AND state=LIVE AND'
        " name=\"{{$.inputs.artifacts['input'].metadata['current_model_id']}}\""
    )
    text = rehearse._substitute(model_query, {"input": [found]})
    assert store.query(text)["uri"] == "file:///m1"
    assert rehearse._substitute(model_query, {"input": []}) is None
    # A custom type's query as the compiler writes it finds nothing, as on Vertex.
    store.record("pipeline.DriftVerdict", {"name": "v1", "uri": "file:///v1", "metadata": {}})
    assert store.query('schema_title="tfx.Artifact" AND state=LIVE') is None
    assert store.query('schema_title="pipeline.DriftVerdict" AND state=LIVE')["name"] == "v1"
    with pytest.raises(rehearse.RehearsalError, match="cannot evaluate"):
        store.query('schema_title="tfx.Model" AND create_time>0')


def test_each_replica_gets_the_environment_vertex_gives_it():
    pools = [{"replica_count": 1}, {"replica_count": 2}]
    envs = stand_ins.cluster_environments(pools)
    assert len(envs) == 3
    specs = [json.loads(e["CLUSTER_SPEC"]) for e in envs]
    configs = [json.loads(e["TF_CONFIG"]) for e in envs]
    assert [s["task"] for s in specs] == [
        {"type": "workerpool0", "index": 0},
        {"type": "workerpool1", "index": 0},
        {"type": "workerpool1", "index": 1},
    ]
    assert [c["task"] for c in configs] == [
        {"type": "chief", "index": 0},
        {"type": "worker", "index": 0},
        {"type": "worker", "index": 1},
    ]
    cluster = specs[0]["cluster"]
    assert len(cluster["workerpool0"]) == 1 and len(cluster["workerpool1"]) == 2
    assert configs[0]["cluster"] == {
        "chief": cluster["workerpool0"],
        "worker": cluster["workerpool1"],
    }


def test_beam_reads_and_writes_file_uris_through_the_stand_in(tmp_path):
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems

    stand_ins.install()
    root = tmp_path.resolve().as_uri()
    with beam.Pipeline() as p:
        _ = p | beam.Create(["a", "b"]) | beam.io.WriteToText(f"{root}/out/part")
    written = sorted(tmp_path.glob("out/part*"))
    assert len(written) == 1 and written[0].read_text().split() == ["a", "b"]
    match = FileSystems.match([f"{root}/out/part*"])[0]
    assert [m.path for m in match.metadata_list] == [f"{root}/out/{written[0].name}"]
    with beam.Pipeline() as p:
        lines = p | beam.io.ReadFromText(f"{root}/out/part*")
        _ = lines | beam.io.WriteToText(f"{root}/copy/part", shard_name_template="")
    assert (tmp_path / "copy" / "part").read_text().split() == ["a", "b"]


def test_the_stand_in_endpoint_speaks_the_vertex_request_types(tmp_path):
    from google.cloud import aiplatform_v1

    from pipeline.vertex import pusher

    client = stand_ins.StandInEndpointClient(str(tmp_path / "endpoint.json"))
    assert (
        client.list_endpoints(pusher.list_endpoints_request("p-123456", "us-central1", "t")) == []
    )
    endpoint = aiplatform_v1.Endpoint(
        name="projects/p-123456/locations/us-central1/endpoints/1",
        display_name="t",
        deployed_models=[
            aiplatform_v1.DeployedModel(id="1", create_time={"seconds": 1}),
            aiplatform_v1.DeployedModel(id="2", create_time={"seconds": 2}),
            aiplatform_v1.DeployedModel(id="3", create_time={"seconds": 3}),
        ],
        traffic_split={"3": 100},
    )
    client.save(endpoint)
    assert pusher.undeploy_earlier_models(client, "p-123456", "us-central1", "t", 1) == ["1"]
    assert sorted(m.id for m in client.load().deployed_models) == ["2", "3"]
    settings = {"enabled": True, "sampling_rate": 0.5, "bigquery_table": None}
    pusher.apply_request_logging(client, "p-123456", "us-central1", "t", settings)
    logged = client.load().predict_request_response_logging_config
    assert logged.enabled and logged.sampling_rate == 0.5


def test_the_command_refuses_a_pool_of_no_tasks(tmp_path, capsys):
    from pipeline import cli

    args = ["rehearse", "--config", str(VERTEX), "--root", str(tmp_path)]
    assert cli.main([*args, "--parallel", "0"]) == 2
    assert "--parallel must be at least 1, not 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing compiled, nothing run
