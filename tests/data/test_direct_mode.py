"""Beam's DirectRunner mode chosen by the input's size, unless the config names one."""

from __future__ import annotations

import pytest

from pipeline.config import AUTO_MULTI_PROCESSING_BYTES, BeamConfig, load_config
from pipeline.data_source import describe_direct_mode, input_size_bytes

MIB = 2**20


def _spans(folder, sizes: dict[str, int]) -> None:
    for name, size in sizes.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.truncate(size)  # sparse: the size is what counts


def test_auto_is_in_memory_when_small_or_unknown_and_multi_process_when_large():
    auto = BeamConfig()
    assert auto.direct_running_mode == "auto"
    assert auto.direct_mode(None) == ("in_memory", 1)
    assert auto.direct_mode(AUTO_MULTI_PROCESSING_BYTES) == ("in_memory", 1)
    assert auto.direct_mode(AUTO_MULTI_PROCESSING_BYTES + 1) == ("multi_processing", 0)
    named = BeamConfig(direct_running_mode="multi_threading", direct_num_workers=3)
    assert named.direct_mode(10 * AUTO_MULTI_PROCESSING_BYTES) == ("multi_threading", 3)
    assert "--direct_running_mode=multi_processing" in auto.to_args(100 * MIB)


def test_the_size_is_that_of_the_latest_span_only(tmp_path):
    _spans(
        tmp_path,
        {"span-201601/a.csv": 200 * MIB, "span-201602/a.csv": 3 * MIB, "span-201602/b.csv": MIB},
    )
    cfg = load_config(
        "configs/local.yaml", [f"data.input={tmp_path}", "data.pattern=span-{SPAN}/*.csv"]
    )
    assert input_size_bytes(cfg, str(tmp_path)) == 4 * MIB
    assert describe_direct_mode(cfg, str(tmp_path)) == (
        "Beam DirectRunner in_memory, 1 worker(s) (auto: input 4.0 MiB)"
    )
    _spans(tmp_path, {"span-201603/a.csv": 70 * MIB})
    assert describe_direct_mode(cfg, str(tmp_path)) == (
        "Beam DirectRunner multi_processing, one per core (auto: input 70.0 MiB)"
    )
    forced = load_config(
        "configs/local.yaml",
        [f"data.input={tmp_path}", "data.pattern=span-{SPAN}/*.csv",
         "beam.direct_running_mode=in_memory"],
    )  # fmt: skip
    assert "in_memory" in describe_direct_mode(forced, str(tmp_path))
    assert "set by beam.direct_running_mode" in describe_direct_mode(forced, str(tmp_path))


@pytest.mark.parametrize("big", [False, True])
def test_the_pipeline_gets_the_chosen_mode(tmp_path, big):
    from pipeline import dag

    _spans(tmp_path, {"trips.csv": (80 if big else 2) * MIB})
    cfg = load_config("configs/local.yaml", [f"data.input={tmp_path}"])
    args = dag.create_pipeline(cfg, str(tmp_path)).beam_pipeline_args
    mode = "multi_processing" if big else "in_memory"
    assert f"--direct_running_mode={mode}" in args
    assert f"--direct_num_workers={0 if big else 1}" in args
