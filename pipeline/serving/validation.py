"""Turns a TF Serving REST predict body into validated trips, or a 4xx error saying what is
wrong and where.

The two forms of TF Serving's predict API are accepted:
- row format, `{"instances": [...]}`, answered with `{"predictions": [...]}`;
- columnar format, `{"inputs": {...}}`, answered with `{"outputs": [...]}`;
with an optional `"signature_name"`. An instance is either an object of raw trip fields
(the `serving_default` signature) or `{"b64": "<serialized tf.Example>"}` (the
`serving_tf_example` signature, chosen automatically when the instances are b64 objects).

Rules, the same for both forms and both signatures (and for gRPC, see `tensors`):
- JSON named inputs the signature does not have are rejected (400), never silently dropped: a
  misspelt optional field would otherwise be served as "missing" without anyone noticing.
  TF Serving's REST layer (`json_tensor.cc`) refuses an unknown, missing or mistyped named
  input with INVALID_ARGUMENT, its 400, as here.
- A tf.Example is read once, by the signature's parse op (`tf.io.parse_example` with its
  spec), after a wire-level scan refuses (400, naming the instance and the feature) what
  parsers read differently: a feature named twice, a feature holding several lists or kinds,
  fields a tf.Example does not have. That one reading is checked, logged and run (the model
  gets tf.Examples re-encoded from it). Features the model does not declare (the label,
  post-trip fields, census tracts, anything) are ignored and reported back
  (`PredictRequest.ignored_features`) so the stats can count them; a declared feature of
  the wrong kind is a 400. `strict_examples` rejects undeclared features instead. A
  tf.Example leaves a missing value out: a named-input sentinel in it is refused.
- An optional field may be omitted or `null` (JSON) / left out (tf.Example); it is then
  passed to the model as missing, exactly as training examples lack it. The named-tensor
  sentinels (`-1` for an integer, `""` for a string) are accepted as "missing" too.
- A required field must be present; NaN and Infinity are refused (JSON cannot carry them
  and a model input must be finite); an integer field refuses numbers with a fraction; a
  number field refuses strings; a string must be valid Unicode; every value must lie in
  the range the curated schema (`pipeline/schema/schema.pbtxt`) declares for its field, so
  the model is never asked about a trip it cannot have seen (a latitude of 2^70 would be
  answered with a fare of 1e23).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import math
from collections.abc import Callable, Collection
from typing import Any

from taxifare_modules import features as f

B64_KEY = "b64"
SIGNATURE_NAME_KEY = "signature_name"
INSTANCES_KEY = "instances"
INPUTS_KEY = "inputs"
SERVABLE_SIGNATURES = (f.SERVING_DEFAULT_SIGNATURE, f.SERVING_TF_EXAMPLE_SIGNATURE)

_FLOAT32_MAX = 3.4028234663852886e38
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_RANGES = {f.HOUR_KEY: f.HOUR_RANGE, f.DAY_KEY: f.DAY_RANGE, f.MONTH_KEY: f.MONTH_RANGE}
_MIN_VALUES = {f.TIMESTAMP_KEY: 0}  # seconds since the epoch


def schema_ranges(
    names: Collection[str] = f.RAW_FEATURE_KEYS,
) -> dict[str, tuple[float, float]]:
    """(lowest, highest) valid value of each of `names` (the raw fields by default) that the
    curated schema gives a domain."""
    ranges: dict[str, tuple[float, float]] = {}
    for feature in _curated_schema().feature:
        if feature.name not in names:
            continue
        if feature.HasField("float_domain"):
            domain = feature.float_domain
            low = domain.min if domain.HasField("min") else -_FLOAT32_MAX
            high = domain.max if domain.HasField("max") else _FLOAT32_MAX
            ranges[feature.name] = (low, high)
        elif feature.HasField("int_domain"):
            domain = feature.int_domain
            low = domain.min if domain.HasField("min") else _INT64_MIN
            high = domain.max if domain.HasField("max") else _INT64_MAX
            ranges[feature.name] = (low, high)
    return ranges


@functools.lru_cache(maxsize=1)
def _curated_schema() -> Any:
    from pipeline.curated_schema import read_shipped_schema

    return read_shipped_schema()


def label_maximum() -> float:
    """The highest fare the curated schema allows (`fare`'s domain); the server never answers
    a predicted fare above it."""
    return schema_ranges((f.LABEL_KEY,))[f.LABEL_KEY][1]


_SCHEMA_RANGES = schema_ranges()
_FIELD_LIST = ", ".join(f.RAW_FEATURE_KEYS)
_RAW_KEYS = frozenset(f.RAW_FEATURE_KEYS)
_FLOAT_KEYS = frozenset(f.FLOAT_FEATURE_KEYS)
_INT_KEYS = frozenset(f.INT_FEATURE_KEYS)
_REQUIRED_KEYS = frozenset(f.REQUIRED_FEATURE_KEYS)
_OPTIONAL_KEYS = frozenset(f.OPTIONAL_FEATURE_KEYS)
# (lowest, highest) valid value of each integer field.
_INT_BOUNDS = {
    key: _SCHEMA_RANGES.get(key, _RANGES.get(key, (_MIN_VALUES.get(key, _INT64_MIN), _INT64_MAX)))
    for key in f.INT_FEATURE_KEYS
}
# (lowest, highest) valid value of each float field.
_FLOAT_BOUNDS = {
    key: _SCHEMA_RANGES.get(key, (-_FLOAT32_MAX, _FLOAT32_MAX)) for key in f.FLOAT_FEATURE_KEYS
}
# JSON nested deeper than this is refused before it is walked.
MAX_JSON_DEPTH = 64

# A validated trip: the raw fields it has (float, int or str); missing optional fields absent.
Trip = dict[str, Any]


class RequestError(Exception):
    """What the client did wrong, with the HTTP status to answer (and, for a 405, the
    method the URL allows)."""

    def __init__(self, message: str, status: int = 400, allow: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.allow = allow


def unknown_label(label: str) -> RequestError:
    """The 400 for a version label, worded as TF Serving words an unknown one (its labels
    are set in its model config; this server has none)."""
    return RequestError(
        f"Unrecognized servable version label: {label}; this server has no version labels,"
        " name a version number or none"
    )


@dataclasses.dataclass(frozen=True)
class _NonFinite:
    """Stands for a NaN or Infinity literal in the body, so it can be reported in place."""

    literal: str


@dataclasses.dataclass
class PredictRequest:
    """A validated predict request.

    Attributes:
      signature_name: the signature to call.
      columnar: True for the `inputs` form (answered with `outputs`).
      trips: the raw fields of each instance: what was checked, what is logged and, for
        both signatures, what the model runs.
      examples: for `serving_tf_example`, the tf.Examples the model runs: re-encoded from
        `trips` (the values TensorFlow's parser read from the client's bytes), never the
        client's bytes themselves; else None.
      ignored_features: tf.Example features the model does not declare -> how many of the
        request's instances carried them (they were ignored, as TF Serving ignores them).
    """

    signature_name: str
    columnar: bool
    trips: list[Trip]
    examples: list[bytes] | None = None
    ignored_features: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.trips)


def parse_json_body(body: bytes) -> Any:
    """Parses a request body as JSON.

    Raises:
      RequestError: the body is not JSON. NaN and Infinity are let through as markers so the
        validation can name the field and instance that carry them.
    """
    import orjson

    if not body.strip():
        raise RequestError(
            f"request body is empty; send a JSON object with {INSTANCES_KEY!r} or {INPUTS_KEY!r}"
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # the strict parser failed; the standard one says where, and allows NaN
    depth = _nesting_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise RequestError(
            f"request body is nested {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted"
        )
    try:
        return json.loads(body, parse_constant=_NonFinite)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"request body is not valid JSON: {e}") from None
    except RecursionError:  # nesting hidden from the bracket count is still refused
        raise RequestError("request body is nested too deeply") from None


def _nesting_depth(body: bytes) -> int:
    """How deep brackets nest in `body`, counted outside strings (a cheap scan)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def parse_predict_request(
    body: Any, max_instances: int, strict_examples: bool = False
) -> PredictRequest:
    """Validates a parsed predict body.

    Args:
      body: the parsed JSON.
      max_instances: the most instances one request may carry.
      strict_examples: reject tf.Example features the model does not declare (TF Serving,
        and this server by default, ignore them).

    Returns:
      The validated request.

    Raises:
      RequestError: with a message naming the field and the instance index at fault.
    """
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {_describe(body)}")
    for key in body:
        if key not in (SIGNATURE_NAME_KEY, INSTANCES_KEY, INPUTS_KEY):
            raise RequestError(
                f"unknown key {key!r} in the request; expected {INSTANCES_KEY!r} or"
                f" {INPUTS_KEY!r}, and optionally {SIGNATURE_NAME_KEY!r}"
            )
    if INSTANCES_KEY in body and INPUTS_KEY in body:
        raise RequestError(
            f"request has both {INSTANCES_KEY!r} and {INPUTS_KEY!r}; send exactly one"
        )
    if INSTANCES_KEY not in body and INPUTS_KEY not in body:
        raise RequestError(
            f"request has neither {INSTANCES_KEY!r} (row format) nor {INPUTS_KEY!r}"
            " (columnar format)"
        )
    signature = body.get(SIGNATURE_NAME_KEY)
    if signature == "":  # TF Serving's "the default signature"; false, 0 and [] are not
        signature = None
    if signature is not None:
        if not isinstance(signature, str):
            raise RequestError(
                f"{SIGNATURE_NAME_KEY!r} must be a string, got {_describe(signature)}"
            )
        if signature not in SERVABLE_SIGNATURES:
            raise RequestError(
                f"unknown signature {signature!r}; this model serves"
                f" {', '.join(map(repr, SERVABLE_SIGNATURES))}"
            )
    if INSTANCES_KEY in body:
        return _parse_instances(body[INSTANCES_KEY], signature, max_instances, strict_examples)
    return _parse_inputs(body[INPUTS_KEY], signature, max_instances, strict_examples)


def _parse_instances(
    instances: Any, signature: str | None, max_instances: int, strict: bool
) -> PredictRequest:
    if not isinstance(instances, list):
        raise RequestError(f"{INSTANCES_KEY!r} must be a list, got {_describe(instances)}")
    _check_count(len(instances), INSTANCES_KEY, max_instances)
    if signature is None:
        signature = (
            f.SERVING_TF_EXAMPLE_SIGNATURE
            if _b64_value(instances[0]) is not None
            else f.SERVING_DEFAULT_SIGNATURE
        )
    trips: list[Trip] = []
    if signature == f.SERVING_TF_EXAMPLE_SIGNATURE:
        examples, trips, ignored = _parse_b64_items(
            instances, INSTANCES_KEY, f" for signature {signature!r}", strict
        )
        return PredictRequest(signature, False, trips, examples, ignored)
    for i, instance in enumerate(instances):
        where = f"{INSTANCES_KEY}[{i}]"
        if _b64_value(instance) is not None:
            raise RequestError(
                f"{where}: a {{{B64_KEY!r}: ...}} instance is a serialized tf.Example, which"
                f" signature {f.SERVING_TF_EXAMPLE_SIGNATURE!r} takes, not {signature!r}"
            )
        if not isinstance(instance, dict):
            raise RequestError(
                f"{where}: expected an object of raw trip fields, got {_describe(instance)}"
            )
        trips.append(_parse_trip(instance, where, lambda key, w=where: f"{w}.{key}"))
    return PredictRequest(signature, False, trips)


def _parse_b64_items(
    items: list, label: str, context: str, strict: bool
) -> tuple[list[bytes], list[Trip], dict[str, int]]:
    """Decodes `{"b64": ...}` items (row or column form) into examples, their trips and the
    counts of the features the model ignores."""
    sent: list[bytes] = []
    wheres: list[str] = []
    ignored: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"{label}[{i}]"
        value = _b64_value(item)
        if value is None:
            raise RequestError(
                f"{where}: expected {{{B64_KEY!r}: <base64 serialized tf.Example>}}{context},"
                f" got {_describe(item)}"
            )
        sent.append(_decode_b64(value, where))
        wheres.append(f"{where}.{B64_KEY}")
    trips, examples = parse_examples(sent, wheres, strict, ignored)
    return examples, trips, ignored


def _parse_inputs(
    inputs: Any, signature: str | None, max_instances: int, strict: bool
) -> PredictRequest:
    # TF Serving lets a single-input signature take the list itself instead of a dict.
    examples_column: Any = None
    if isinstance(inputs, list):
        examples_column, label = inputs, INPUTS_KEY
    elif isinstance(inputs, dict) and set(inputs) == {f.SERVING_TF_EXAMPLE_INPUT_KEY}:
        examples_column = inputs[f.SERVING_TF_EXAMPLE_INPUT_KEY]
        label = f"{INPUTS_KEY}.{f.SERVING_TF_EXAMPLE_INPUT_KEY}"
    elif not isinstance(inputs, dict):
        raise RequestError(f"{INPUTS_KEY!r} must be an object of columns, got {_describe(inputs)}")
    if signature is None:
        signature = (
            f.SERVING_TF_EXAMPLE_SIGNATURE
            if examples_column is not None
            else f.SERVING_DEFAULT_SIGNATURE
        )
    if signature == f.SERVING_TF_EXAMPLE_SIGNATURE:
        if examples_column is None:
            raise RequestError(
                f"signature {signature!r} takes {INPUTS_KEY!r} as"
                f" {{{f.SERVING_TF_EXAMPLE_INPUT_KEY!r}: [{{{B64_KEY!r}: ...}}, ...]}}"
            )
        if not isinstance(examples_column, list):
            raise RequestError(f"{label} must be a list, got {_describe(examples_column)}")
        _check_count(len(examples_column), label, max_instances)
        examples, trips, ignored = _parse_b64_items(examples_column, label, "", strict)
        return PredictRequest(signature, True, trips, examples, ignored)
    if not isinstance(inputs, dict):
        raise RequestError(
            f"signature {signature!r} takes {INPUTS_KEY!r} as an object of columns, one list"
            " per raw trip field"
        )
    for key, column in inputs.items():
        if key not in f.RAW_FEATURE_KEYS:
            raise RequestError(
                f"{INPUTS_KEY}: unknown field {key!r} (the raw trip fields are: {_FIELD_LIST})"
            )
        if not isinstance(column, list):
            raise RequestError(
                f"{INPUTS_KEY}.{key} must be a list with one value per instance, got"
                f" {_describe(column)}"
            )
    for key in f.REQUIRED_FEATURE_KEYS:
        if key not in inputs:
            raise RequestError(f"{INPUTS_KEY}: missing required field {key!r}")
    lengths = {key: len(column) for key, column in inputs.items()}
    count = next(iter(lengths.values()))
    for key, length in lengths.items():
        if length != count:
            first = next(iter(lengths))
            raise RequestError(
                f"{INPUTS_KEY}.{key} has {length} values but {INPUTS_KEY}.{first} has {count};"
                " every column needs one value per instance"
            )
    _check_count(count, INPUTS_KEY, max_instances)
    trips = []
    for i in range(count):
        row = {key: column[i] for key, column in inputs.items()}
        trips.append(
            _parse_trip(row, f"{INPUTS_KEY}[{i}]", lambda key, i=i: f"{INPUTS_KEY}.{key}[{i}]")
        )
    return PredictRequest(signature, True, trips)


def _check_count(count: int, label: str, max_instances: int) -> None:
    if count == 0:
        raise RequestError(f"{label!r} is empty; send at least one instance")
    if count > max_instances:
        raise RequestError(
            f"{label!r} has {count} instances; at most {max_instances} are accepted per request"
        )


def _parse_trip(instance: dict, where: str, field_where: Callable[[str], str]) -> Trip:
    """Validates one instance of raw fields; `where` names it, `field_where(key)` a field."""
    for key in instance:
        if key not in _RAW_KEYS:
            hint = " (a {'b64': ...} object goes alone)" if key == B64_KEY else ""
            raise RequestError(
                f"{where}: unknown field {key!r}{hint} (the raw trip fields are: {_FIELD_LIST})"
            )
    trip: Trip = {}
    for key in f.RAW_FEATURE_KEYS:
        value = instance.get(key)
        if value is not None:
            try:
                value = _check_value(key, value)
            except _BadValueError as e:  # the place is named only now: most values are fine
                raise RequestError(f"{field_where(key)}: {e}") from None
        if value is None:
            if key in _REQUIRED_KEYS:
                raise RequestError(f"{where}: missing required field {key!r}")
            continue
        trip[key] = value
    return trip


class _BadValueError(ValueError):
    """A value failed its check; the message goes after the place that names it."""


def check_value(key: str, value: Any, where: str) -> float | int | str | None:
    """Validates one raw field's value.

    Args:
      key: the raw feature name.
      value: the value as parsed from JSON (or read from a tf.Example).
      where: how the error message names the place, e.g. `instances[3].trip_start_hour`.

    Returns:
      The value as the model's dtype wants it (float, int or str), or None if it is the
      "missing" sentinel of the field's dtype.

    Raises:
      RequestError: the value is of the wrong type, not finite or out of range.
    """
    try:
        return _check_value(key, value)
    except _BadValueError as e:
        raise RequestError(f"{where}: {e}") from None


def check_raw_value(key: str, value: Any) -> float | int | str | None:
    """`check_value` without the place, for callers that name it only on failure.

    Raises:
      ValueError: the value is bad; the message says why (not where).
    """
    return _check_value(key, value)


def _check_value(key: str, value: Any) -> float | int | str | None:
    """`check_value` without the place: raises _BadValueError."""
    # The common cases first: a plain valid value of the field's own type.
    kind = type(value)
    if key in _FLOAT_KEYS:
        low, high = _FLOAT_BOUNDS[key]
        if kind is float and low <= value <= high:  # NaN fails too
            return value
    elif key in _INT_KEYS:
        if kind is int:
            low, high = _INT_BOUNDS[key]
            if low <= value <= high and not (value == f.MISSING_INT and key in _OPTIONAL_KEYS):
                return value
    elif kind is str and value != f.MISSING_STRING and value.isascii():
        return value
    return _check_value_slowly(key, value)


def _check_value_slowly(key: str, value: Any) -> float | int | str | None:
    if isinstance(value, _NonFinite) or (isinstance(value, float) and not math.isfinite(value)):
        literal = value.literal if isinstance(value, _NonFinite) else repr(value)
        remedy = (
            "a required field must be a finite number"
            if key in _REQUIRED_KEYS
            else "omit the field or send null if the value is missing"
        )
        raise _BadValueError(f"{literal} is not a valid value; {remedy}")
    if key in _FLOAT_KEYS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _BadValueError(f"expected a number, got {_describe(value)}")
        if abs(value) > _FLOAT32_MAX:
            raise _BadValueError(f"{value} is out of the float32 range")
        low, high = _FLOAT_BOUNDS[key]
        if not low <= value <= high:
            raise _BadValueError(f"{value} is out of range; it must be in {low}..{high}")
        return float(value)
    if key in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _BadValueError(f"expected an integer, got {_describe(value)}")
        if isinstance(value, float):
            if not value.is_integer():
                raise _BadValueError(f"expected an integer, got {value!r}")
            value = int(value)
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _BadValueError(f"{value} is out of the int64 range")
        if value == f.MISSING_INT and key in _OPTIONAL_KEYS:
            return None
        low, high = _INT_BOUNDS[key]
        if not low <= value <= high:
            if high == _INT64_MAX:
                raise _BadValueError(f"{value} is out of range; it must be >= {low}")
            raise _BadValueError(f"{value} is out of range; it must be in {low}..{high}")
        return value
    if not isinstance(value, str):
        raise _BadValueError(f"expected a string, got {_describe(value)}")
    if value == f.MISSING_STRING:
        if key in _REQUIRED_KEYS:
            raise _BadValueError("a required field must not be empty")
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
        raise _BadValueError("the string is not valid Unicode (a lone surrogate)") from None
    return value


def _b64_value(instance: Any) -> Any:
    """The `b64` value of `{"b64": ...}` or `{"examples": {"b64": ...}}`, else None."""
    if isinstance(instance, dict) and len(instance) == 1:
        if B64_KEY in instance:
            return instance[B64_KEY]
        inner = instance.get(f.SERVING_TF_EXAMPLE_INPUT_KEY)
        if isinstance(inner, dict) and set(inner) == {B64_KEY}:
            return inner[B64_KEY]
    return None


def _decode_b64(value: Any, where: str) -> bytes:
    """The bytes of one `b64` value."""
    where = f"{where}.{B64_KEY}"
    if not isinstance(value, str):
        raise RequestError(f"{where}: expected a base64 string, got {_describe(value)}")
    # Standard or URL-safe alphabet, padding optional, as clients differ.
    text = value.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"{where}: invalid base64: {e}") from None
    return data


# tf.Example wire format (example.proto / feature.proto): the tags this server reads.
_TAG_FEATURES = 0x0A  # Example.features = 1, length-delimited
_TAG_ENTRY = 0x0A  # Features.feature (map entry) = 1, length-delimited
_TAG_KEY = 0x0A  # map entry key = 1
_TAG_VALUE = 0x12  # map entry value = 2
_KIND_TAGS = {0x0A: "bytes_list", 0x12: "float_list", 0x1A: "int64_list"}  # Feature oneof
_TAG_PACKED = 0x0A  # a list's `value` = 1, packed (length-delimited)
_TAG_FIXED32 = 0x0D  # FloatList.value = 1, one unpacked float
_TAG_VARINT = 0x08  # Int64List.value = 1, one unpacked int64
# raw field -> the list kind a tf.Example carries it in (and the signature parses it from).
_EXPECTED_KINDS = {
    **{key: "float_list" for key in f.FLOAT_FEATURE_KEYS},
    **{key: "int64_list" for key in f.INT_FEATURE_KEYS},
    **{key: "bytes_list" for key in f.STRING_FEATURE_KEYS},
}


class _WireError(ValueError):
    """The bytes are not a tf.Example as TensorFlow reads it; the message says why."""

    def __init__(self, message: str, feature: str | None = None) -> None:
        super().__init__(message)
        self.feature = feature


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The unsigned varint at `pos` (at most 10 bytes, within `end`) and the position after."""
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _WireError("a varint is truncated or longer than 64 bits")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >= 1 << 64:
                raise _WireError("a varint is longer than 64 bits")
            return value, pos
        shift += 7


def _delimited(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The (start, stop) of the length-delimited field whose length is at `pos`."""
    length, start = _varint(data, pos, end)
    stop = start + length
    if stop > end:
        raise _WireError("a length-delimited field runs past the end of its message")
    return start, stop


def _list_count(data: bytes, kind: str, pos: int, end: int, name: str) -> int:
    """How many values the `kind` list in data[pos:end] holds.

    TensorFlow's parser reads either one packed run of values or only unpacked values, and
    stops at anything else, where protobuf would merge them all: such a list is refused.
    """
    count = 0
    packed = unpacked = False
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag == _TAG_PACKED and kind != "bytes_list":
            if packed or unpacked:
                raise _WireError(
                    f"its {kind} mixes value runs (several packed runs or packed"
                    " with unpacked values)",
                    name,
                )
            packed = True
            start, pos = _delimited(data, pos, end)
            if kind == "float_list":
                if (pos - start) % 4:
                    raise _WireError(f"its {kind} holds a partial float", name)
                count += (pos - start) // 4
            else:
                while start < pos:
                    _, start = _varint(data, start, pos)
                    count += 1
        elif tag == _TAG_PACKED:  # a bytes_list value
            _, pos = _delimited(data, pos, end)
            count += 1
        elif tag == _TAG_FIXED32 and kind == "float_list" and not packed:
            unpacked = True
            pos += 4
            if pos > end:
                raise _WireError(f"its {kind} holds a partial float", name)
            count += 1
        elif tag == _TAG_VARINT and kind == "int64_list" and not packed:
            unpacked = True
            _, pos = _varint(data, pos, end)
            count += 1
        elif tag == {"float_list": _TAG_FIXED32, "int64_list": _TAG_VARINT}.get(kind):
            raise _WireError(f"its {kind} mixes a packed run with unpacked values", name)
        else:
            raise _WireError(f"its {kind} holds a field other than its values", name)
    return count


def _scan_feature(data: bytes, pos: int, end: int, name: str) -> tuple[str | None, int]:
    """The kind and value count of the Feature in data[pos:end] (None, 0 if it has no kind)."""
    if pos == end:
        return None, 0
    kind = _KIND_TAGS.get(data[pos])
    if kind is None:
        raise _WireError("it holds a field that is not a value list", name)
    start, stop = _delimited(data, pos + 1, end)
    if stop != end:
        # Protobuf keeps the last list, TensorFlow's parser the first: never guess.
        raise _WireError("it holds more than one value list (or kind)", name)
    return kind, _list_count(data, kind, start, stop, name)


def _scan_example(data: bytes) -> dict[str, tuple[str | None, int]]:
    """Reads a serialized tf.Example at the wire level, bounded by its length.

    Returns:
      feature name -> (kind, number of values).

    Raises:
      _WireError: the bytes are not a tf.Example in the form TensorFlow and protobuf read
        alike: anything but features in the Example, map entries that are not exactly a key
        then a value, a feature named twice, a feature with several lists or kinds.
    """
    found: dict[str, tuple[str | None, int]] = {}
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] != _TAG_FEATURES:
            raise _WireError("it holds a field other than its features")
        start, pos = _delimited(data, pos + 1, end)
        while start < pos:
            if data[start] != _TAG_ENTRY:
                raise _WireError("its features hold a field other than feature entries")
            entry, stop = _delimited(data, start + 1, pos)
            start = stop
            if entry >= stop or data[entry] != _TAG_KEY:
                raise _WireError("a feature entry does not start with its name")
            key_start, key_stop = _delimited(data, entry + 1, stop)
            try:
                name = data[key_start:key_stop].decode("utf-8")
            except UnicodeDecodeError:
                raise _WireError("a feature name is not UTF-8 text") from None
            if key_stop >= stop or data[key_stop] != _TAG_VALUE:
                raise _WireError("the entry has no value after its name", name)
            value_start, value_stop = _delimited(data, key_stop + 1, stop)
            if value_stop != stop:
                raise _WireError("the entry holds more than a name and a value", name)
            if name in found:
                raise _WireError("the feature appears more than once", name)
            found[name] = _scan_feature(data, value_start, value_stop, name)
    return found


@functools.lru_cache(maxsize=1)
def _example_parser() -> tuple[Callable[[Any], dict[str, Any]], dict[str, list[str]]]:
    """`tf.io.parse_example` with the `serving_tf_example` signature's parse spec (one
    VarLenFeature per raw field, as the trainer exports it; `versions.check_example_parsing`
    holds a model to it), as a graph function.

    Returns:
      The function (serialized examples -> list kind -> (row of each value, index of its
      field in the kind's field list, the values)) and each kind's field list. Three outputs
      per kind, and the concrete function called directly, cost a fraction of an eager op or
      a `tf.function` call with an output per field.
    """
    import tensorflow as tf

    dtypes = {"float_list": tf.float32, "int64_list": tf.int64, "bytes_list": tf.string}
    spec = {key: tf.io.VarLenFeature(dtypes[kind]) for key, kind in _EXPECTED_KINDS.items()}
    keys_by_kind = {
        kind: [key for key, of in _EXPECTED_KINDS.items() if of == kind] for kind in dtypes
    }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def parse(examples: Any) -> dict[str, Any]:
        parsed = tf.io.parse_example(examples, spec)
        out = {}
        for kind, keys in keys_by_kind.items():
            out[kind] = (
                tf.concat([parsed[key].indices[:, 0] for key in keys], 0),
                tf.concat(
                    [tf.fill(tf.shape(parsed[key].values), i) for i, key in enumerate(keys)], 0
                ),
                tf.concat([parsed[key].values for key in keys], 0),
            )
        return out

    return parse.get_concrete_function(), keys_by_kind


def parse_examples(
    examples: list[bytes],
    wheres: list[str],
    strict: bool = False,
    ignored: dict[str, int] | None = None,
) -> tuple[list[Trip], list[bytes]]:
    """Validates serialized tf.Examples of raw trip fields, read once by TensorFlow's parser.

    Each example is first scanned at the wire level (bounded by its length) and refused if
    TensorFlow's parser and protobuf could read it differently (a feature named twice, a
    feature with several lists or kinds, fields a tf.Example does not have). The values are
    then those `tf.io.parse_example` reads with the signature's parse spec, and they alone
    are checked, logged and run: the model is given canonical tf.Examples re-encoded from
    the checked trips, never the client's bytes.

    Args:
      examples: the serialized tf.Examples.
      wheres: how error messages name each, e.g. `instances[3].b64`.
      strict: reject features the model does not declare instead of ignoring them.
      ignored: if given, each ignored feature name's count is incremented here.

    Returns:
      The trips (missing optional fields absent) and the tf.Examples the model is to run.

    Raises:
      RequestError: naming the instance and the feature at fault.
    """
    scans = []
    for data, where in zip(examples, wheres, strict=True):
        try:
            scan = _scan_example(data)
        except _WireError as e:
            place = f"{where}.{e.feature}" if e.feature is not None else where
            raise RequestError(
                f"{place}: the bytes are not a serialized tf.Example TensorFlow reads"
                f" unambiguously: {e}"
            ) from None
        for key, (kind, count) in scan.items():
            expected = _EXPECTED_KINDS.get(key)
            if expected is None:
                if strict:
                    raise RequestError(
                        f"{where}: unknown feature {key!r} in the tf.Example (the raw trip"
                        f" fields are: {_FIELD_LIST})"
                    )
                if ignored is not None:
                    ignored[key] = ignored.get(key, 0) + 1
                continue
            if kind is not None and kind != expected:
                raise RequestError(
                    f"{where}.{key}: expected a {expected} in the tf.Example, got a {kind}"
                )
            if count > 1:
                raise RequestError(f"{where}.{key}: expected one value, got {count}")
        for key in f.REQUIRED_FEATURE_KEYS:
            if scan.get(key, (None, 0))[1] == 0:
                raise RequestError(f"{where}: missing required feature {key!r} in the tf.Example")
        scans.append(scan)
    columns = _parse_with_tensorflow(examples, wheres)
    trips: list[Trip] = [{} for _ in examples]
    for key in f.RAW_FEATURE_KEYS:
        rows, values = columns[key]
        for row, value in zip(rows, values, strict=True):
            where = f"{wheres[row]}.{key}"
            if scans[row].get(key, (None, 0))[1] != 1:  # never seen: the two agree
                raise RequestError(f"{where}: TensorFlow read a value the scan did not find")
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise RequestError(f"{where}: the value is not UTF-8 text") from None
            checked = check_value(key, value, where)
            if checked is None:
                # A tf.Example says "missing" by leaving the feature out; its signature would
                # run a sentinel as a value, so it is refused rather than guessed at.
                raise RequestError(
                    f"{where}: {value!r} is the missing-value sentinel of named inputs; leave"
                    " the feature out of the tf.Example when the value is missing"
                )
            trips[row][key] = checked
    for row, scan in enumerate(scans):
        for key in f.RAW_FEATURE_KEYS:
            if scan.get(key, (None, 0))[1] == 1 and key not in trips[row]:
                raise RequestError(
                    f"{wheres[row]}.{key}: the scan found a value TensorFlow did not read"
                )
    from pipeline.serving.versions import trip_to_example

    return trips, [trip_to_example(trip).SerializeToString() for trip in trips]


def _parse_with_tensorflow(
    examples: list[bytes], wheres: list[str]
) -> dict[str, tuple[list[int], list[Any]]]:
    """raw field -> (row of each value, the values) as `tf.io.parse_example` reads them."""
    import tensorflow as tf

    parse, keys_by_kind = _example_parser()
    # TensorFlow's message quotes the bytes (and fails to decode as UnicodeDecodeError when
    # they are not text): name the first example it refuses instead.
    refused = (tf.errors.InvalidArgumentError, UnicodeDecodeError)
    try:
        parsed = parse(tf.constant(examples, tf.string))
    except refused:
        for data, where in zip(examples, wheres, strict=True):
            try:
                parse(tf.constant([data], tf.string))
            except refused:
                raise RequestError(
                    f"{where}: TensorFlow cannot parse the bytes as a tf.Example"
                ) from None
        raise RequestError("TensorFlow cannot parse the tf.Examples") from None
    columns: dict[str, tuple[list[int], list[Any]]] = {key: ([], []) for key in _EXPECTED_KINDS}
    for kind, (rows, which, values) in parsed.items():
        keys = keys_by_kind[kind]
        for row, index, value in zip(
            rows.numpy().tolist(), which.numpy().tolist(), values.numpy().tolist(), strict=True
        ):
            column = columns[keys[index]]
            column[0].append(row)
            column[1].append(value)
    return columns


def _describe(value: Any) -> str:
    """A short description of a JSON value for error messages."""
    if isinstance(value, _NonFinite):
        return value.literal
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {json.dumps(shown)}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        keys = ", ".join(map(repr, list(value)[:5]))
        return f"an object with keys [{keys}]" if value else "an empty object"
    return type(value).__name__
