"""Writes the op registry of the running TensorFlow as a serving_ops/ data file.

`pipeline.vertex.serving_compat` compares an exported SavedModel with the ops of the
TensorFlow inside the endpoint's serving container. Each file under `serving_ops/` was made by
this module, run under that TensorFlow version alone (a throwaway virtualenv holding only
`tensorflow-cpu==<version>`, outside the project's environment):

    python3.10 -m venv tf215 && tf215/bin/pip install tensorflow-cpu==2.15.1
    tf215/bin/python -m pipeline.vertex.serving_ops_dump pipeline/vertex/serving_ops/tf2-15.json

(run from the repository root; it imports nothing but TensorFlow and the standard library).

The file holds, per op: its attrs (type, whether it has a default, the allowed values when
the op restricts them) and its input and output args; and the GraphDef versions the
TensorFlow accepts. It is TensorFlow's own registry (`TF_GetAllOpList`), the one the C++
SavedModel loader of TensorFlow Serving of the same version validates a graph against.
"""

from __future__ import annotations

import json
import sys
from typing import Any

# The file's layout; bump when serving_compat must read it differently.
FORMAT_VERSION = 1


def _allowed(attr: Any) -> list[str]:
    """The attr's allowed values as strings: dtype names, or the strings of an enum."""
    from tensorflow.python.framework import dtypes

    values = attr.allowed_values.list
    if values.type:
        return sorted(dtypes.as_dtype(t).name for t in values.type)
    return sorted(s.decode() for s in values.s)


def _arg(arg: Any) -> dict[str, Any]:
    """An input or output arg: its name and how many tensors it stands for."""
    entry: dict[str, Any] = {"name": arg.name}
    if arg.number_attr:
        entry["number_attr"] = arg.number_attr
    if arg.type_list_attr:
        entry["type_list_attr"] = arg.type_list_attr
    if arg.is_ref:
        entry["is_ref"] = True
    return entry


def op_registry() -> dict[str, Any]:
    """The running TensorFlow's registered ops and GraphDef versions, as the file holds them."""
    import tensorflow as tf
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session

    buffer = pywrap_tf_session.TF_GetAllOpList()
    op_list = op_def_pb2.OpList.FromString(pywrap_tf_session.TF_GetBuffer(buffer))
    ops: dict[str, Any] = {}
    for op in sorted(op_list.op, key=lambda o: o.name):
        attrs = {}
        for attr in op.attr:
            entry: dict[str, Any] = {
                "type": attr.type,
                "has_default": attr.HasField("default_value"),
            }
            allowed = _allowed(attr) if attr.HasField("allowed_values") else []
            if allowed:
                entry["allowed_values"] = allowed
            attrs[attr.name] = entry
        ops[op.name] = {
            "attrs": attrs,
            "inputs": [_arg(a) for a in op.input_arg],
            "outputs": [_arg(a) for a in op.output_arg],
        }
    return {
        "format_version": FORMAT_VERSION,
        "tensorflow_version": tf.__version__,
        # A GraphDef loads when its versions.min_consumer <= graph_def_version and
        # graph_def_version is not in its versions.bad_consumers.
        "graph_def_version": tf.version.GRAPH_DEF_VERSION,
        "ops": ops,
    }


def write_registry(path: str) -> int:
    """Writes op_registry() to `path` (one op a line, so a diff shows what changed).

    Returns:
      The number of ops written.
    """
    registry = op_registry()
    ops = registry.pop("ops")
    head = json.dumps(registry, sort_keys=True)[:-1]
    lines = [f"{json.dumps(name)}: {json.dumps(op, sort_keys=True)}" for name, op in ops.items()]
    text = head + ', "ops": {\n' + ",\n".join(lines) + "\n}}\n"
    json.loads(text)  # the file is one JSON document
    with open(path, "w") as fh:  # a file of the repository, written by a person
        fh.write(text)
    return len(ops)


def main(argv: list[str]) -> int:
    """`python -m pipeline.vertex.serving_ops_dump OUT.json`."""
    if len(argv) != 2:
        print("usage: python -m pipeline.vertex.serving_ops_dump OUT.json", file=sys.stderr)
        return 2
    import tensorflow as tf

    count = write_registry(argv[1])
    print(f"wrote {count} ops of TensorFlow {tf.__version__} to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
