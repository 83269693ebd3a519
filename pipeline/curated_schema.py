"""The curated schema shipped with the package (pipeline/schema/schema.pbtxt): where it is and
its parsed contents, for every module that reads it. Imports nothing heavy."""

from __future__ import annotations

import importlib.resources
from typing import Any


def _shipped() -> Any:
    return importlib.resources.files("pipeline") / "schema" / "schema.pbtxt"


def curated_schema_file(cfg: Any) -> str:
    """The curated schema file a run of `cfg` validates with (ImportSchemaGen imports it).

    On Vertex, ImportSchemaGen runs in the pipeline image: the shipped schema is read there
    (see vertex.component_config.IMAGE_SCHEMA_FILE), and `schema.path` must be on gs://.
    """
    if cfg.schema_config.path:
        return cfg.schema_config.path
    if cfg.vertex is not None:
        from pipeline.vertex.component_config import IMAGE_SCHEMA_FILE

        return IMAGE_SCHEMA_FILE
    return shipped_schema_file()


def shipped_schema_file() -> str:
    """The path of the curated schema inside the installed package."""
    return str(_shipped())


def read_shipped_schema() -> Any:
    """The curated schema as a tensorflow_metadata Schema (a fresh copy per call)."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    return text_format.Parse(_shipped().read_text(), schema_pb2.Schema())
