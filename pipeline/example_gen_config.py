"""The custom_config of this project's ExampleGen executors: a Struct of settings.

TFX's ExampleGen takes a `CustomConfig` proto holding an `Any`; the streaming CSV ExampleGen
(its fare range) and the BigQuery one (its read settings) both pack a `google.protobuf.Struct`
there, written and read by the two functions below.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils


def struct_custom_config(values: dict[str, Any]) -> example_gen_pb2.CustomConfig:
    """A custom_config carrying `values` as a Struct."""
    struct = struct_pb2.Struct()
    struct.update(values)
    config = example_gen_pb2.CustomConfig()
    config.custom_config.Pack(struct)
    return config


def read_struct_custom_config(exec_properties: dict[str, Any], component: str) -> dict[str, Any]:
    """The values of an executor's Struct custom_config; {} when it has none.

    Raises:
      ValueError: the custom_config holds another message (named, with `component`).
    """
    text = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if not text:
        return {}
    config = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(text, config)
    struct = struct_pb2.Struct()
    if not config.custom_config.Unpack(struct):
        raise ValueError(
            f"{component} custom_config holds {config.custom_config.type_url}, not the Struct"
            " of settings pipeline.example_gen_config.struct_custom_config writes"
        )
    return json_format.MessageToDict(struct)
