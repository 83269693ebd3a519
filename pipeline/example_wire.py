"""tf.Example records decoded for display, without importing TensorFlow.

`taxifare report` shows a few trips of a split; TensorFlow's own `tf.train.Example` costs
over ten seconds to import. A tf.Example is a small protocol buffer:

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }   (entries: key = 1, value = 2)
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                            Int64List int64_list = 3; } }
    *List    { repeated ... value = 1; }              (floats and ints packed or not)

This decoder follows protobuf's merge rules for what it reads (a later map entry or oneof
replaces an earlier one, as Python's protobuf does). It is for showing data: the serving
path decodes a request with TensorFlow's own parsing (pipeline/serving/validation.py).
"""

from __future__ import annotations

import struct
from typing import Any

_FLOAT = struct.Struct("<f")


class ExampleDecodeError(ValueError):
    """The bytes are not a tf.Example."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ExampleDecodeError(f"truncated varint at byte {pos}")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes, start: int = 0, end: int | None = None):
    """(field number, wire type, value) per field; value is bytes for length-delimited,
    an int for varints, raw bytes for fixed 32/64."""
    pos, end = start, len(data) if end is None else end
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise ExampleDecodeError(f"field {number} runs past the end at byte {pos}")
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        else:
            raise ExampleDecodeError(f"unsupported wire type {wire} at byte {pos}")
        if pos > end:
            raise ExampleDecodeError("truncated field")
        yield number, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _list_values(kind: int, data: bytes) -> list[Any]:
    values: list[Any] = []
    for number, wire, value in _fields(data):
        if number != 1:
            continue
        if kind == 1:  # bytes_list
            values.append(bytes(value))
        elif kind == 2:  # float_list: packed (wire 2) or one fixed32 (wire 5)
            if len(value) % 4:
                raise ExampleDecodeError(f"a float list of {len(value)} bytes")
            values.extend(v for (v,) in _FLOAT.iter_unpack(value))
        elif wire == 2:  # int64_list, packed
            pos = 0
            while pos < len(value):
                number_value, pos = _varint(value, pos)
                values.append(_signed64(number_value))
        else:
            values.append(_signed64(value))
    return values


def decode_example(data: bytes) -> dict[str, list[Any]]:
    """Feature name -> its values (bytes, floats or ints) of one serialized tf.Example."""
    features: dict[str, list[Any]] = {}
    for number, wire, value in _fields(data):
        if number != 1 or wire != 2:
            continue
        for entry_number, entry_wire, entry in _fields(value):
            if entry_number != 1 or entry_wire != 2:
                continue
            key, feature = b"", b""
            for n, w, v in _fields(entry):
                if n == 1 and w == 2:
                    key = v
                elif n == 2 and w == 2:
                    feature = v
            values: list[Any] = []
            for kind, kind_wire, payload in _fields(feature):
                if kind in (1, 2, 3) and kind_wire == 2:
                    values = _list_values(kind, payload)
            features[key.decode("utf-8", "replace")] = values
    return features
