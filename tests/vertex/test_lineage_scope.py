"""The latest blessed model a Vertex run resolves is its own pipeline's.

TFX compiles the LatestBlessedModelResolver into metadata queries over the project's whole
regional store; the compiler scopes them to the pipeline root, and each shipped Vertex config
has a root (and name, endpoint and drift pointer) of its own. The scoped query is evaluated
on an ML Metadata store as the rehearsal evaluates Vertex's filters; Vertex's own filter
service is not run here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import dag
from pipeline.config import load_config
from pipeline.vertex import compiler
from pipeline.vertex.component_config import endpoint_name

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [REPO / "configs" / "vertex.yaml", REPO / "configs" / "vertex-bigquery.yaml"]


def _resolver_filters(job: dict) -> dict[str, str]:
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    return {
        f"{name}/{key}": query["filter"]
        for name, executor in executors.items()
        for key, query in executor.get("resolver", {}).get("outputArtifactQueries", {}).items()
    }


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, dict]:
    out = tmp_path_factory.mktemp("scoped")
    specs = {}
    for path in SHIPPED:
        target = out / f"{path.stem}.json"
        compiler.compile_pipeline(load_config(path), target)
        # The written file is what is submitted.
        specs[path] = json.loads(target.read_text())
    return specs


def test_every_resolver_query_is_scoped_to_the_pipeline_root(compiled):
    for path, job in compiled.items():
        root = load_config(path).vertex.pipeline_root
        filters = _resolver_filters(job)
        assert len(filters) == 2, filters  # the blessing and the model it names
        for where, text in filters.items():
            assert text.endswith(f' AND uri="{root}/*"'), (path.name, where, text)
            assert "state=LIVE" in text


def test_each_shipped_config_has_its_own_lineage():
    configs = [load_config(path) for path in SHIPPED]
    for field in (
        lambda c: c.name,
        lambda c: c.vertex.pipeline_root,
        lambda c: endpoint_name(c.vertex, c.name),
        dag.drift_baseline_dir,
    ):
        values = [field(c) for c in configs]
        assert len(set(values)) == len(values), values
    # Neither root is inside the other, so neither pipeline's scope holds the other's runs.
    roots = [c.vertex.pipeline_root.rstrip("/") + "/" for c in configs]
    assert not roots[0].startswith(roots[1]) and not roots[1].startswith(roots[0])


def test_the_scoped_query_finds_this_pipelines_blessing_only(compiled, tmp_path):
    from pipeline.vertex.rehearse import MetadataStore

    job = compiled[SHIPPED[0]]
    query = next(t for k, t in _resolver_filters(job).items() if "blessing" in k)
    root = load_config(SHIPPED[0]).vertex.pipeline_root
    other = load_config(SHIPPED[1]).vertex.pipeline_root
    store = MetadataStore(tmp_path / "mlmd.sqlite")
    # The other pipeline's blessing is the newer one: unscoped, it would be taken.
    store.record(
        "tfx.ModelBlessing",
        {"name": "ours", "uri": f"{root}/123/taxifare-1/Evaluator_1/blessing",
         "metadata": {"blessed": 1, "current_model_id": 7}},
    )  # fmt: skip
    store.record(
        "tfx.ModelBlessing",
        {"name": "theirs", "uri": f"{other}/123/taxifare-bigquery-1/Evaluator_2/blessing",
         "metadata": {"blessed": 1, "current_model_id": 8}},
    )  # fmt: skip
    assert store.query(query)["name"] == "ours"
    unscoped = query[: query.index(" AND uri=")]
    assert store.query(unscoped)["name"] == "theirs"


def test_an_unscoped_resolver_query_fails_the_spec_check(compiled):
    import copy

    from pipeline.vertex import spec_checks

    job = copy.deepcopy(compiled[SHIPPED[0]])
    for executor in job["pipelineSpec"]["deploymentSpec"]["executors"].values():
        for query in executor.get("resolver", {}).get("outputArtifactQueries", {}).values():
            query["filter"] = query["filter"][: query["filter"].index(" AND uri=")]
    problems = spec_checks.check_resolver_queries(job)
    assert len(problems) == 2
    assert all("not scoped to the pipeline root" in p for p in problems)
