"""TensorProtos (TF Serving's gRPC `PredictRequest.inputs`) to a validated `PredictRequest`,
and fares back to a TensorProto, with the same rules and messages as the REST form.

- `serving_default`: one rank-1 tensor per raw field, all of one length (the batch); a
  field left out is missing for every instance (optional fields only); the named-tensor
  sentinels (NaN, -1, "") mean missing. An input the signature does not have is refused.
- `serving_tf_example`: one rank-1 DT_STRING tensor `examples` of serialized tf.Examples,
  read once by the signature's parse op after a wire-level scan refuses ambiguous ones (see
  `validation.parse_examples`; undeclared features ignored and counted).

A tensor's shape is checked before its values are expanded or copied: a claimed count over
the instance limit, a negative size, a one-value fill past the message limit, and
`tensor_content` that is not whole values are INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline.serving.validation import (
    SERVABLE_SIGNATURES,
    PredictRequest,
    RequestError,
    Trip,
    check_raw_value,
    parse_examples,
)
from taxifare_modules import features as f

# tensorflow.DataType values (types.proto), so decoding needs no TensorFlow import.
DT_FLOAT = 1
DT_DOUBLE = 2
DT_INT32 = 3
DT_STRING = 7
DT_INT64 = 9
_DTYPE_NAMES = {
    DT_FLOAT: "DT_FLOAT",
    DT_DOUBLE: "DT_DOUBLE",
    DT_INT32: "DT_INT32",
    DT_STRING: "DT_STRING",
    DT_INT64: "DT_INT64",
}
FIELD_DTYPES = {
    **{key: DT_FLOAT for key in f.FLOAT_FEATURE_KEYS},
    **{key: DT_INT64 for key in f.INT_FEATURE_KEYS},
    **{key: DT_STRING for key in f.STRING_FEATURE_KEYS},
}
_NUMPY_DTYPES = {DT_FLOAT: np.dtype("<f4"), DT_INT64: np.dtype("<i8")}
_OPTIONAL = frozenset(f.OPTIONAL_FEATURE_KEYS)
_OPTIONAL_FLOAT_KEYS = frozenset(f.FLOAT_FEATURE_KEYS) & _OPTIONAL


def _dtype_name(dtype: int) -> str:
    return _DTYPE_NAMES.get(dtype, f"dtype {dtype}")


def _values(name: str, tensor: Any, max_instances: int, max_bytes: int | None) -> list:
    """The values of a rank-1 TensorProto as Python values (bytes for strings).

    The shape is checked before anything is expanded: a shape may claim many values that
    one value fills ("one value fills the shape"), so the claimed count is held to
    `max_instances` and the bytes it would take to `max_bytes` first.
    """
    where = f"inputs.{name}"
    dims = tensor.tensor_shape.dim
    if len(dims) != 1:
        shown = [d.size for d in dims[:8]] + (["..."] if len(dims) > 8 else [])
        raise RequestError(
            f"{where}: expected a rank-1 tensor (one value per instance), got shape {shown}"
        )
    count = dims[0].size
    if count < 0:
        raise RequestError(f"{where}: the shape has a negative size {count}")
    _check_count(count, max_instances)
    dtype = tensor.dtype
    if dtype == DT_STRING:
        if tensor.tensor_content:
            raise RequestError(f"{where}: a DT_STRING tensor carries its values in string_val")
        values = list(tensor.string_val)
    elif tensor.tensor_content:
        content = tensor.tensor_content
        itemsize = _NUMPY_DTYPES[dtype].itemsize
        if len(content) % itemsize:
            raise RequestError(
                f"{where}: tensor_content holds {len(content)} bytes, not a whole number of"
                f" {_dtype_name(dtype)} values ({itemsize} bytes each)"
            )
        if len(content) // itemsize != count:
            raise RequestError(
                f"{where}: shape says {count} values, the tensor holds {len(content) // itemsize}"
            )
        values = np.frombuffer(content, _NUMPY_DTYPES[dtype]).tolist()
    elif dtype == DT_FLOAT:
        values = list(tensor.float_val)
    else:
        values = list(tensor.int64_val)
    if len(values) == 1 and count > 1:  # TensorProto's shorthand: one value fills the shape
        size = len(values[0]) if dtype == DT_STRING else _NUMPY_DTYPES[dtype].itemsize
        _check_fill(where, count, size, max_bytes)
        values = values * count
    if len(values) != count:
        raise RequestError(f"{where}: shape says {count} values, the tensor holds {len(values)}")
    return values


def _check_fill(where: str, count: int, size: int, max_bytes: int | None) -> None:
    """Refuses one value of `size` bytes filling `count` places past the message limit."""
    if max_bytes is not None and count * size > max_bytes:
        raise RequestError(
            f"{where}: one value filling shape [{count}] makes {count * size} bytes, over the"
            f" {max_bytes}-byte message limit"
        )


def _check_count(count: int, max_instances: int) -> None:
    if count == 0:
        raise RequestError("the batch is empty; send at least one instance")
    if count > max_instances:
        raise RequestError(
            f"the batch has {count} instances; at most {max_instances} are accepted per request"
        )


def parse_tensor_request(
    signature_name: str,
    inputs: Mapping[str, Any],
    max_instances: int,
    strict_examples: bool = False,
    max_bytes: int | None = None,
) -> PredictRequest:
    """Validates the inputs of a gRPC PredictRequest.

    Args:
      signature_name: the signature asked for ("" is `serving_default`).
      inputs: input name -> TensorProto.
      max_instances: the most instances one request may carry.
      strict_examples: reject tf.Example features the model does not declare.
      max_bytes: the message limit; a tensor whose shape would expand past it is refused.

    Raises:
      RequestError: (400) naming the input and the instance at fault.
    """
    signature = signature_name or f.SERVING_DEFAULT_SIGNATURE
    if signature not in SERVABLE_SIGNATURES:
        raise RequestError(
            f"unknown signature {signature!r}; this model serves"
            f" {', '.join(map(repr, SERVABLE_SIGNATURES))}"
        )
    if signature == f.SERVING_TF_EXAMPLE_SIGNATURE:
        return _parse_examples(inputs, max_instances, strict_examples, max_bytes)
    return _parse_named(inputs, max_instances, max_bytes)


def _parse_examples(
    inputs: Mapping[str, Any], max_instances: int, strict: bool, max_bytes: int | None
) -> PredictRequest:
    key = f.SERVING_TF_EXAMPLE_INPUT_KEY
    for name in inputs:
        if name != key:
            raise RequestError(
                f"inputs: unknown input {name!r}; signature"
                f" {f.SERVING_TF_EXAMPLE_SIGNATURE!r} takes only {key!r}"
            )
    if key not in inputs:
        raise RequestError(f"inputs: missing input {key!r} (serialized tf.Examples)")
    tensor = inputs[key]
    if tensor.dtype != DT_STRING:
        raise RequestError(f"inputs.{key}: expected DT_STRING, got {_dtype_name(tensor.dtype)}")
    sent = _values(key, tensor, max_instances, max_bytes)
    ignored: dict[str, int] = {}
    wheres = [f"inputs.{key}[{i}]" for i in range(len(sent))]
    trips, examples = parse_examples(sent, wheres, strict, ignored)
    return PredictRequest(f.SERVING_TF_EXAMPLE_SIGNATURE, True, trips, examples, ignored)


def _parse_named(
    inputs: Mapping[str, Any], max_instances: int, max_bytes: int | None
) -> PredictRequest:
    columns: dict[str, list] = {}
    for name in inputs:  # keys, then lookups: a protobuf map's items() view is slower
        tensor = inputs[name]
        expected = FIELD_DTYPES.get(name)
        if expected is None:
            raise RequestError(
                f"inputs: unknown input {name!r} (the raw trip fields are:"
                f" {', '.join(f.RAW_FEATURE_KEYS)})"
            )
        if tensor.dtype != expected:
            raise RequestError(
                f"inputs.{name}: expected {_dtype_name(expected)}, got {_dtype_name(tensor.dtype)}"
            )
        columns[name] = _values(name, tensor, max_instances, max_bytes)
    for key in f.REQUIRED_FEATURE_KEYS:
        if key not in columns:
            raise RequestError(f"inputs: missing required input {key!r}")
    first = next(iter(columns))
    count = len(columns[first])
    for name, values in columns.items():
        if len(values) != count:
            raise RequestError(
                f"inputs.{name} has {len(values)} values but inputs.{first} has {count}; every"
                " input needs one value per instance"
            )
    _check_count(count, max_instances)
    trips: list[Trip] = [{} for _ in range(count)]
    # Fields in the order of RAW_FEATURE_KEYS, as the REST path builds them.
    for name in f.RAW_FEATURE_KEYS:
        values = columns.get(name)
        if values is None:
            continue
        nan_is_missing = name in _OPTIONAL_FLOAT_KEYS
        for i, value in enumerate(values):
            if nan_is_missing and value != value:  # NaN: the float sentinel of a missing value
                continue
            if value.__class__ is bytes:
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise RequestError(f"inputs.{name}[{i}]: the value is not UTF-8 text") from None
            try:
                checked = check_raw_value(name, value)
            except ValueError as e:  # the place is named only now: most values are fine
                raise RequestError(f"inputs.{name}[{i}]: {e}") from None
            if checked is None:
                if name not in _OPTIONAL:
                    raise RequestError(f"inputs.{name}[{i}]: a required value is missing")
                continue
            trips[i][name] = checked
    return PredictRequest(f.SERVING_DEFAULT_SIGNATURE, True, trips)


def fares_tensor(fares: np.ndarray, rank: int, tensor_proto_cls: type) -> Any:
    """The fares as a DT_FLOAT TensorProto of shape [n] (rank 1) or [n, 1] (rank 2)."""
    tensor = tensor_proto_cls(dtype=DT_FLOAT)
    tensor.tensor_shape.dim.add().size = len(fares)
    if rank == 2:
        tensor.tensor_shape.dim.add().size = 1
    tensor.tensor_content = np.asarray(fares, "<f4").tobytes()
    return tensor
