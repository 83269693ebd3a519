"""configs/vertex.yaml reads spans: consecutive runs read consecutive span folders.

The compiled spec's ExampleGen input config is resolved by TFX's FileBasedInputProcessor, the
code Vertex's file-based ExampleGen driver runs, over a local folder laid out as the README's
gs:// one (the driver's gs:// listing is not run here).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline import dag
from pipeline.config import load_config
from pipeline.data_source import tfx_sample_dir
from pipeline.vertex.compiler import compile_pipeline

REPO = Path(__file__).resolve().parents[2]


def spans_read_as_folders_arrive(data: Path, splits) -> list[int]:
    """The span TFX's file-based ExampleGen driver resolves for `splits` (a compiled input
    config's) after span-1/, then after span-2/ (a copy of the tfx sample each) arrives."""
    from tfx.components.example_gen import input_processor

    sample = Path(tfx_sample_dir()) / "data.csv"
    spans = []
    for span in (1, 2):
        (data / f"span-{span}").mkdir(parents=True)
        shutil.copy(sample, data / f"span-{span}" / "data.csv")
        processor = input_processor.FileBasedInputProcessor(str(data), splits, None)
        spans.append(processor.resolve_span_and_version()[0])
    return spans


def test_the_compiled_example_gen_takes_the_newest_span(tmp_path):
    from tfx.proto import example_gen_pb2
    from tfx.utils import proto_utils

    job = compile_pipeline(load_config(REPO / "configs" / "vertex.yaml"), tmp_path / "v.json")
    node = job["pipelineSpec"]["root"]["dag"]["tasks"][dag.EXAMPLE_GEN_ID]
    text = node["inputs"]["parameters"]["input_config"]["runtimeValue"]["constantValue"][
        "stringValue"
    ]
    config = example_gen_pb2.Input()
    proto_utils.json_to_proto(text, config)
    assert [s.pattern for s in config.splits] == ["span-{SPAN}/*.csv"]

    # The first run reads span 1; after the next month's folder arrives, span 2.
    assert spans_read_as_folders_arrive(tmp_path / "data", config.splits) == [1, 2]
    assert json.loads(text)["splits"][0]["name"] == "single_split"
