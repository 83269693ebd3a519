"""The pieces of `taxifare rehearse`, each on its own: the task order, the resolver queries
against ML Metadata, the training job's cluster environment, Beam on file:// URIs and the
stand-in endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.vertex import rehearse, stand_ins

REPO = Path(__file__).resolve().parents[2]
VERTEX = REPO / "configs" / "vertex.yaml"


def test_the_config_is_changed_only_where_this_machine_cannot_reach(tmp_path):
    cfg = load_config(VERTEX)
    changed, notes = rehearse.rehearsal_config(cfg, tmp_path)
    assert changed.vertex.pipeline_root == (tmp_path / "pipeline").resolve().as_uri()
    assert changed.vertex.pipeline_root.startswith("file:///")
    assert changed.vertex.dataflow.runner == "DirectRunner"
    assert changed.data.input == "tfx-sample"
    assert len(notes) == 3
    # Everything else is the config's.
    assert changed.vertex.training == cfg.vertex.training
    assert changed.vertex.endpoint == cfg.vertex.endpoint
    assert changed.training == cfg.training


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
