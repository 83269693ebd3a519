"""Will the exported SavedModel load, and take our JSON trips, in the endpoint's container?

The Vertex endpoint serves the model with a prebuilt TensorFlow Serving image
(`<region>-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest` by default) whose
TensorFlow can be older than the one that trained and exported the model (2.16 here). TF
Serving's loader builds every node of the graph and of its function library from its own op
registry, so the model loads only if

- every op it uses is registered in the serving TensorFlow ("Op type not registered");
- every attr the serving TensorFlow's op requires (no default there) is set, and attr values
  are among the ones it allows ("Value for attr 'dtype' of bfloat16 is not in the list of
  allowed values": a function's nodes are validated when it is instantiated, so this can
  pass the load and fail the first request instead);
- each node has as many inputs as the op takes;
- the GraphDef's `versions.min_consumer` is not newer than the serving TensorFlow.

An attr the serving TensorFlow's op does not have is *not* a load failure: TensorFlow 2.15
logs "NodeDef mentions attribute ... not in the op definition ... Unknown attributes will be
ignored" and runs the op as it defines it. `tf.saved_model.save` strips attrs left at their
default, so such an attr is in the file only when set to something else, and the op may then
compute differently: those are reported as warnings (MatMul's `grad_a`/`grad_b`, added in
2.16, are such attrs; they are gradient hints, false unless set).

`check_serving_compat` checks those against the op registry of the serving image's
TensorFlow, a data file under `serving_ops/` dumped from that real TensorFlow by
`pipeline.vertex.serving_ops_dump`. It reads only the SavedModel's `saved_model.pb` (through
`tf.io.gfile`: the model may be on gs://). An image whose TensorFlow version is not known, or
has no op file, is reported as not checked, not as a fault. A serving TensorFlow not older
than the exporting one needs no file: TensorFlow loads graphs of earlier releases.

`check_instances` checks the `serving_default` signature against the JSON the container's
`:predict` takes, `{"instances": [{name: value, ...}, ...]}` (TF Serving's REST row format):
every input a named tensor whose first dimension is the batch, each instance an object with
exactly the signature's input names, each value of the input's dtype and inner shape.

What this does not do: run TensorFlow Serving (no image can be pulled here), or check kernels
(an op registered but with no kernel for a dtype on the serving device fails at the first
request, not at load).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_LOG = logging.getLogger(__name__)

# The tag set TF Serving (and so Vertex's prebuilt container) loads.
SERVE_TAG = "serve"
SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
# The op files shipped beside this module: serving_ops/tf<major>-<minor>.json.
_OPS_FOLDER = "serving_ops"

# Vertex's prebuilt TF Serving images, e.g. us-docker.pkg.dev/vertex-ai/prediction/
# tf2-cpu.2-15:latest (or @sha256:...); and TensorFlow's own tensorflow/serving:2.15.1[-gpu].
_VERTEX_IMAGE = re.compile(
    r"(?:^|/)vertex-ai(?:-restricted)?/prediction/tf2?-(?:cpu|gpu)\.(\d+)-(\d+)(?:[:@].*)?$"
)
_TF_SERVING_IMAGE = re.compile(r"(?:^|/)tensorflow/serving:(\d+)\.(\d+)(?:\.\d+)?(?:-gpu)?$")

# TF Serving's predict API takes these signatures.
_PREDICT_METHODS = (
    "tensorflow/serving/predict",
    "tensorflow/serving/classify",
    "tensorflow/serving/regress",
)
_JSON_FLOAT_DTYPES = ("DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16")
_JSON_INT_DTYPES = (
    "DT_INT8",
    "DT_INT16",
    "DT_INT32",
    "DT_INT64",
    "DT_UINT8",
    "DT_UINT16",
    "DT_UINT32",
    "DT_UINT64",
)
_MAX_EXAMPLES = 3  # nodes named per problem


class ServingCompatError(RuntimeError):
    """The model would not load, or not take our instances, in the serving container."""


@dataclasses.dataclass(frozen=True)
class ServingCompat:
    """What check_serving_compat found.

    Attributes:
      serving_image: the image checked against.
      serving_version: its TensorFlow as "2.15", or None when the image is not known.
      checked: False when there was nothing to check against (see `note`).
      problems: one line per fault that stops the model loading or running there; empty
        when it loads.
      warnings: attrs set to a non-default value that the serving TensorFlow's ops do not
        have (it ignores them: the model loads, but such an op may compute differently).
      note: what was checked, or why it could not be.
    """

    serving_image: str
    serving_version: str | None
    checked: bool
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    note: str

    @property
    def ok(self) -> bool:
        """True unless a problem was found (an unchecked image is not a problem)."""
        return not self.problems


def serving_tf_version(serving_image: str) -> tuple[int, int] | None:
    """The TensorFlow (major, minor) of a prebuilt serving image, or None if unknown."""
    for pattern in (_VERTEX_IMAGE, _TF_SERVING_IMAGE):
        match = pattern.search(serving_image.strip())
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def ops_file_name(version: tuple[int, int]) -> str:
    """The data file holding TensorFlow `version`'s op registry."""
    return f"tf{version[0]}-{version[1]}.json"


@functools.lru_cache(maxsize=4)
def load_op_registry(version: tuple[int, int]) -> dict[str, Any] | None:
    """The shipped op registry of TensorFlow `version` (see serving_ops_dump), or None."""
    resource = importlib.resources.files("pipeline.vertex") / _OPS_FOLDER / ops_file_name(version)
    if not resource.is_file():
        return None
    registry = json.loads(resource.read_text())
    if registry.get("format_version") != 1:
        raise ValueError(
            f"{ops_file_name(version)}: unknown format {registry.get('format_version')}"
        )
    return registry


def read_saved_model(model_dir: str) -> Any:
    """The `SavedModel` proto of `model_dir` (gs:// or local).

    Raises:
      ServingCompatError: no saved_model.pb(txt) there, or it does not parse.
    """
    import tensorflow as tf
    from google.protobuf import message, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    binary = tf.io.gfile.join(model_dir, SAVED_MODEL_PB)
    text = tf.io.gfile.join(model_dir, SAVED_MODEL_PBTXT)
    try:
        if tf.io.gfile.exists(binary):
            with tf.io.gfile.GFile(binary, "rb") as fh:
                saved_model.ParseFromString(fh.read())
        elif tf.io.gfile.exists(text):
            with tf.io.gfile.GFile(text, "r") as fh:
                text_format.Parse(fh.read(), saved_model)
        else:
            raise ServingCompatError(f"{model_dir}: no {SAVED_MODEL_PB}: not a SavedModel")
    except (message.DecodeError, text_format.ParseError) as e:
        raise ServingCompatError(f"{model_dir}: the SavedModel does not parse: {e}") from e
    return saved_model


def serving_meta_graph(saved_model: Any, model_dir: str) -> Any:
    """The meta graph TF Serving loads (the one tagged exactly {serve}, else any with serve).

    Raises:
      ServingCompatError: no meta graph is tagged serve.
    """
    graphs = list(saved_model.meta_graphs)
    for wanted in (lambda tags: set(tags) == {SERVE_TAG}, lambda tags: SERVE_TAG in tags):
        for meta_graph in graphs:
            if wanted(meta_graph.meta_info_def.tags):
                return meta_graph
    tags = [list(g.meta_info_def.tags) for g in graphs]
    raise ServingCompatError(
        f"{model_dir}: no meta graph tagged {SERVE_TAG!r} (tags {tags}); TF Serving loads that one"
    )


def _short(value: Any) -> str:
    from google.protobuf import text_format

    text = text_format.MessageToString(value, as_one_line=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _nodes(graph_def: Any) -> Iterable[tuple[Any, str]]:
    """Every NodeDef of the graph and of its function library, with where it is."""
    for node in graph_def.node:
        yield node, f"node {node.name!r}"
    for function in graph_def.library.function:
        for node in function.node_def:
            yield node, f"node {node.name!r} of function {function.signature.name!r}"


def _dtype_names(value: Any) -> list[str]:
    """A type or list(type) AttrValue's dtypes by name (float32, ...)."""
    from tensorflow.python.framework import dtypes

    kind = value.WhichOneof("value")
    if kind == "type":
        return [dtypes.as_dtype(value.type).name]
    if kind == "list" and value.list.type:
        return [dtypes.as_dtype(t).name for t in value.list.type]
    return []


def _input_count(node: Any, op: Mapping[str, Any]) -> int | None:
    """How many data inputs the op takes with this node's attrs (None: cannot tell)."""
    total = 0
    for arg in op["inputs"]:
        if "number_attr" in arg:
            attr = node.attr.get(arg["number_attr"])
            if attr is None:
                return None
            total += attr.i
        elif "type_list_attr" in arg:
            attr = node.attr.get(arg["type_list_attr"])
            if attr is None:
                return None
            total += len(attr.list.type)
        else:
            total += 1
    return total


class _Findings:
    """Problems grouped by their text, each with the first few places it was seen at."""

    def __init__(self) -> None:
        self.places: dict[str, list[str]] = {}
        self.counts: dict[str, int] = {}

    def add(self, problem: str, place: str) -> None:
        self.counts[problem] = self.counts.get(problem, 0) + 1
        places = self.places.setdefault(problem, [])
        if len(places) < _MAX_EXAMPLES:
            places.append(place)

    def lines(self) -> list[str]:
        out = []
        for problem, places in self.places.items():
            more = self.counts[problem] - len(places)
            where = ", ".join(places) + (f" and {more} more" if more else "")
            out.append(f"{problem} (at {where})")
        return out


def graph_problems(meta_graph: Any, registry: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Why `meta_graph` would fail in the TensorFlow of `registry`, and what it would ignore.

    Args:
      meta_graph: a `MetaGraphDef` (the serve one of the SavedModel).
      registry: an op file's content (see serving_ops_dump).

    Returns:
      (problems, warnings): faults that stop the model loading or running, one line each;
      and attrs set to a non-default value that the TensorFlow's ops lack (ignored there).
    """
    version = registry["tensorflow_version"]
    ops = registry["ops"]
    graph_def = meta_graph.graph_def
    problems = []
    consumer = registry["graph_def_version"]
    if graph_def.versions.min_consumer > consumer:
        problems.append(
            f"the graph needs a consumer of GraphDef version {graph_def.versions.min_consumer}"
            f" or later; TensorFlow {version} is {consumer}"
        )
    if consumer in graph_def.versions.bad_consumers:
        problems.append(f"the graph names GraphDef version {consumer} (TensorFlow {version}) bad")
    functions = {f.signature.name for f in graph_def.library.function}
    # The exporting TensorFlow's definitions of the ops the graph uses (with their defaults).
    producer = {op.name: op for op in meta_graph.meta_info_def.stripped_op_list.op}
    findings = _Findings()
    ignored = _Findings()
    for node, place in _nodes(graph_def):
        if node.op in functions:
            continue  # a call of a function of the library, whose nodes are checked too
        op = ops.get(node.op)
        if op is None:
            findings.add(f"op {node.op!r} is not registered in TensorFlow {version}", place)
            continue
        attrs = op["attrs"]
        for name, value in node.attr.items():
            if name.startswith("_"):
                continue  # internal attrs: not validated against the op
            if name not in attrs:
                if _is_producer_default(producer.get(node.op), name, value):
                    continue
                ignored.add(
                    f"op {node.op!r} sets attr {name!r} ({_short(value)}), which TensorFlow"
                    f" {version}'s {node.op} does not have: it ignores the attr",
                    place,
                )
                continue
            allowed = attrs[name].get("allowed_values")
            if allowed:
                kind = value.WhichOneof("value")
                given = _dtype_names(value) or ([value.s.decode()] if kind == "s" else [])
                bad = sorted(set(given) - set(allowed))
                if bad:
                    findings.add(
                        f"op {node.op!r} attr {name!r} is {bad}, not among TensorFlow"
                        f" {version}'s allowed values {allowed}",
                        place,
                    )
        for name, attr in attrs.items():
            if not attr["has_default"] and name not in node.attr:
                findings.add(
                    f"op {node.op!r} leaves out attr {name!r}, which TensorFlow {version}'s"
                    f" {node.op} requires (it has a default only in a later release)",
                    place,
                )
        expected = _input_count(node, op)
        given = sum(1 for i in node.input if not i.startswith("^"))
        if expected is not None and given != expected:
            findings.add(
                f"op {node.op!r} is given {given} inputs; TensorFlow {version}'s {node.op}"
                f" takes {expected}",
                place,
            )
    return problems + findings.lines(), ignored.lines()


def _is_producer_default(op_def: Any, name: str, value: Any) -> bool:
    """Whether `value` is the exporting TensorFlow's default for the attr (None: unknown)."""
    if op_def is None:
        return False
    for attr in op_def.attr:
        if attr.name == name:
            return attr.HasField("default_value") and attr.default_value == value
    return False


def _exporting_version() -> tuple[int, int]:
    import tensorflow as tf

    major, minor = tf.__version__.split(".")[:2]
    return int(major), int(minor)


def check_serving_compat(model_dir: str, serving_image: str) -> ServingCompat:
    """Checks that the SavedModel in `model_dir` loads in the TF Serving of `serving_image`.

    Args:
      model_dir: the exported SavedModel (local or gs://).
      serving_image: the endpoint's serving container image URI.

    Returns:
      What was found: `problems` empty when it loads; `warnings` the attrs it would
      ignore; `checked` False when the image's
      TensorFlow is unknown or has no op file (nothing to check against; not a fault).

    Raises:
      ServingCompatError: `model_dir` holds no SavedModel with a serve meta graph.
    """
    meta_graph = serving_meta_graph(read_saved_model(model_dir), model_dir)
    version = serving_tf_version(serving_image)
    if version is None:
        return ServingCompat(
            serving_image,
            None,
            False,
            (),
            (),
            f"not checked: the TensorFlow version of serving image {serving_image!r} is not"
            " known (a Vertex prebuilt tf2-cpu/tf2-gpu image or tensorflow/serving:X.Y is)",
        )
    name = f"{version[0]}.{version[1]}"
    registry = load_op_registry(version)
    if registry is None:
        exporting = _exporting_version()
        if version >= exporting:
            return ServingCompat(
                serving_image,
                name,
                True,
                (),
                (),
                f"serving TensorFlow {name} is not older than the exporting TensorFlow"
                f" {exporting[0]}.{exporting[1]}, which it loads graphs of",
            )
        return ServingCompat(
            serving_image,
            name,
            False,
            (),
            (),
            f"not checked: no op list of TensorFlow {name} is shipped ({_OPS_FOLDER}/"
            f"{ops_file_name(version)}; make it with pipeline.vertex.serving_ops_dump)",
        )
    problems, warnings = graph_problems(meta_graph, registry)
    nodes = sum(1 for _ in _nodes(meta_graph.graph_def))
    ops = len({n.op for n, _ in _nodes(meta_graph.graph_def)})
    verdict = f"{len(problems)} problem(s)" if problems else "every op is there"
    if warnings:
        verdict += f", {len(warnings)} ignored attr(s)"
    return ServingCompat(
        serving_image,
        name,
        True,
        tuple(problems),
        tuple(warnings),
        f"checked {nodes} nodes ({ops} op types) against TensorFlow"
        f" {registry['tensorflow_version']}'s op registry: {verdict}",
    )


def require_serving_compat(model_dir: str, serving_image: str) -> ServingCompat:
    """check_serving_compat, raising when the model would fail there (logs the rest).

    The note (what was checked, or why not) is logged, and each warning.

    Raises:
      ServingCompatError: a problem was found (all of them are in the message), or
        `model_dir` is not a SavedModel with a serve meta graph.
    """
    result = check_serving_compat(model_dir, serving_image)
    if result.problems:
        raise ServingCompatError(
            f"the model in {model_dir} would fail in serving image {serving_image}"
            f" (TensorFlow {result.serving_version}):\n  "
            + "\n  ".join(result.problems)
            + "\nSet vertex.endpoint.serving_image to an image of the training TensorFlow"
            " version (a custom TF Serving image), or export without these ops."
        )
    (_LOG.info if result.checked else _LOG.warning)("serving image: %s", result.note)
    for warning in result.warnings:
        _LOG.warning("serving image %s: %s", serving_image, warning)
    return result


def _value_shape(value: Any, where: str) -> tuple[list[int], list[Any]]:
    """A JSON value's shape (nested lists) and its leaves; ragged lists raise ValueError."""
    if isinstance(value, list):
        if not value:
            return [0], []
        shapes_leaves = [_value_shape(v, where) for v in value]
        inner = shapes_leaves[0][0]
        if any(s != inner for s, _ in shapes_leaves):
            raise ValueError(f"{where}: a ragged list")
        return [len(value), *inner], [leaf for _, leaves in shapes_leaves for leaf in leaves]
    return [], [value]


def _leaf_problem(leaf: Any, dtype: str) -> str | None:
    """Why a JSON leaf cannot become a value of `dtype` (None: it can)."""
    if dtype == "DT_STRING":
        is_b64 = isinstance(leaf, dict) and set(leaf) == {"b64"} and isinstance(leaf["b64"], str)
        return None if isinstance(leaf, str) or is_b64 else "not a string"
    if dtype == "DT_BOOL":
        return None if isinstance(leaf, bool) else "not true/false"
    if isinstance(leaf, bool) or not isinstance(leaf, (int, float)):
        return "not a number"
    if dtype in _JSON_INT_DTYPES and not isinstance(leaf, int):
        return "not an integer"
    if isinstance(leaf, float) and not math.isfinite(leaf):
        return "not finite (strict JSON has no NaN or Infinity)"
    return None


def signature_inputs(
    meta_graph: Any, signature_name: str
) -> dict[str, tuple[str, list[int] | None]]:
    """The signature's inputs: name -> (dtype name, dims with -1 unknown; None: any rank).

    Raises:
      ServingCompatError: no such signature.
    """
    from tensorflow.core.framework import types_pb2

    signature = meta_graph.signature_def.get(signature_name)
    if signature is None:
        raise ServingCompatError(
            f"no signature {signature_name!r} (the model has {sorted(meta_graph.signature_def)})"
        )
    return {
        name: (
            types_pb2.DataType.Name(info.dtype),
            None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim],
        )
        for name, info in signature.inputs.items()
    }


def instance_problems(
    meta_graph: Any, instances: Sequence[Any], signature_name: str = "serving_default"
) -> list[str]:
    """Why TF Serving's REST predict would refuse `{"instances": instances}` for the signature.

    Args:
      meta_graph: the serve `MetaGraphDef`.
      instances: JSON instances (as after json.loads), e.g. [{"pickup_latitude": 41.88, ...}].
      signature_name: the signature the container calls (serving_default unless the body
        names another).
    """
    signature = meta_graph.signature_def.get(signature_name)
    if signature is None:
        return [
            f"no signature {signature_name!r} (the model has {sorted(meta_graph.signature_def)})"
        ]
    problems = []
    if signature.method_name not in _PREDICT_METHODS:
        problems.append(
            f"signature {signature_name!r} has method {signature.method_name!r}, which predict"
            f" does not serve"
        )
    inputs = signature_inputs(meta_graph, signature_name)
    json_dtypes = ("DT_STRING", "DT_BOOL", *_JSON_FLOAT_DTYPES, *_JSON_INT_DTYPES)
    for name, (dtype, dims) in sorted(inputs.items()):
        if dtype not in json_dtypes:
            problems.append(f"input {name!r} is {dtype}, which JSON cannot carry")
        if dims is not None and (not dims or dims[0] != -1):
            problems.append(
                f"input {name!r} has shape {dims}: the row format stacks instances along a"
                " first (batch) dimension of any size"
            )
    if not instances:
        return problems + ["no instances to check"]
    shapes: dict[str, list[int]] = {}
    for index, instance in enumerate(instances):
        where = f"instance {index}"
        if len(inputs) == 1 and not isinstance(instance, dict):
            instance = {next(iter(inputs)): instance}  # a lone input may be given bare
        if not isinstance(instance, dict):
            problems.append(f"{where}: not an object of named inputs {sorted(inputs)}")
            continue
        missing = sorted(set(inputs) - set(instance))
        if missing:
            problems.append(f"{where}: lacks input(s) {missing}, which the signature requires")
        unknown = sorted(set(instance) - set(inputs))
        if unknown:
            problems.append(f"{where}: has {unknown}, which are not inputs of the signature")
        for name in sorted(set(inputs) & set(instance)):
            dtype, dims = inputs[name]
            try:
                shape, leaves = _value_shape(instance[name], f"{where} {name!r}")
            except ValueError as e:
                problems.append(str(e))
                continue
            if dims is not None and len(shape) != len(dims) - 1:
                problems.append(
                    f"{where} {name!r}: a value of rank {len(shape)}; the input's shape {dims}"
                    f" takes rank {len(dims) - 1} per instance"
                )
                continue
            if dims is not None and any(
                d not in (-1, s) for d, s in zip(dims[1:], shape, strict=True)
            ):
                problems.append(f"{where} {name!r}: shape {shape} does not fit {dims[1:]}")
                continue
            if shapes.setdefault(name, shape) != shape:
                problems.append(f"{where} {name!r}: shape {shape}, unlike instance 0's")
            for leaf in leaves:
                why = _leaf_problem(leaf, dtype)
                if why:
                    problems.append(f"{where} {name!r}: {leaf!r} is {why} ({dtype})")
                    break
    return problems


def check_instances(
    model_dir: str, instances: Sequence[Any], signature_name: str = "serving_default"
) -> list[str]:
    """instance_problems for the SavedModel in `model_dir` (local or gs://).

    Raises:
      ServingCompatError: no SavedModel with a serve meta graph there.
    """
    meta_graph = serving_meta_graph(read_saved_model(model_dir), model_dir)
    return instance_problems(meta_graph, instances, signature_name)
