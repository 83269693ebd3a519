"""The pipeline image installs the lock's runtime packages only (no test or lint tools)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# requirements.in's test and lint tools (and the local SQL engine of the BigQuery tests):
# nothing the pipeline runs imports them.
DEV_TOOLS = {"pytest", "pytest-timeout", "ruff", "duckdb", "sqlglot"}


def _lock_graph() -> dict[str, set[str]]:
    """Package -> the packages (or -r requirements.in) it is installed for, from the lock."""
    graph: dict[str, set[str]] = {}
    current = None
    for line in (REPO / "requirements.lock").read_text().splitlines():
        pinned = re.match(r"^([A-Za-z0-9_.-]+)==", line)
        if pinned:
            current = pinned.group(1).lower()
            graph[current] = set()
            continue
        via = re.match(r"^\s+#\s+(?:via\s+)?(-r requirements\.in|[A-Za-z0-9_.-]+)\s*$", line)
        if current and via and via.group(1) != "via":
            graph[current].add(via.group(1).lower())
    return graph


def _dev_only(graph: dict[str, set[str]]) -> set[str]:
    """The dev tools and every package installed only for them (transitively)."""
    dev = set(DEV_TOOLS)
    changed = True
    while changed:
        changed = False
        for package, wanted_by in graph.items():
            if package not in dev and wanted_by and wanted_by <= dev:
                dev.add(package)
                changed = True
    return dev


def test_the_image_leaves_out_exactly_the_dev_only_packages():
    dockerfile = (REPO / "Dockerfile").read_text()
    match = re.search(r'^ARG DEV_ONLY="([^"]*)"', dockerfile, re.M)
    assert match, "the Dockerfile names its DEV_ONLY packages"
    graph = _lock_graph()
    assert DEV_TOOLS <= set(graph), "the lock has the dev tools"
    assert set(match.group(1).split()) == _dev_only(graph)
    # Runtime packages named in requirements.in stay in the image.
    assert {"httpx", "pydantic", "uvicorn"} <= set(graph) - _dev_only(graph)


def test_the_image_installs_the_lock_as_make_does_and_checks_itself():
    import apache_beam

    dockerfile = (REPO / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    # The same uv as `make venv`, syncing the lock into a virtualenv.
    (make_uv,) = re.findall(r"^UV_VERSION := (\S+)$", makefile, re.M)
    assert re.search(rf"^ARG UV_VERSION={re.escape(make_uv)}$", dockerfile, re.M)
    assert "uv pip sync" in dockerfile and "uv pip sync" in makefile
    assert "tfx-oss-public" not in dockerfile
    # Beam's worker boot of the installed Beam, as Dataflow's entrypoint.
    assert f"COPY --from=apache/beam_python3.10_sdk:{apache_beam.__version__} " in dockerfile
    assert re.search(r'^ENTRYPOINT \["/opt/apache/beam/boot"\]$', dockerfile, re.M)
    # The last build step checks the image against the shipped Vertex configs.
    runs = re.findall(r"^RUN (.*?)(?<!\\)$", dockerfile, re.M | re.S)
    last = runs[-1]
    assert "taxifare check-image" in last
    assert "vertex.yaml" in last and "vertex-bigquery.yaml" in last


def test_the_gpu_lock_is_the_lock_plus_cuda_libraries_only():
    def pins(name: str) -> dict[str, str]:
        text = (REPO / name).read_text()
        return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M))

    cpu, gpu = pins("requirements.lock"), pins("requirements-gpu.lock")
    # Every tested pin is the GPU image's too, at the same version.
    assert {name: gpu.get(name) for name in cpu} == cpu
    added = set(gpu) - set(cpu)
    assert added and all(name.startswith("nvidia-") and name.endswith("-cu12") for name in added)
    assert "nvidia-cudnn-cu12" in added
    # The Dockerfile builds either lock.
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG LOCK=requirements.lock$", dockerfile, re.M)
    assert "COPY ${LOCK} /opt/taxifare/requirements.lock" in dockerfile
