"""The display decoder of tf.Examples gives what TensorFlow's own message class gives."""

from __future__ import annotations

import random

import pytest
import tensorflow as tf

from pipeline.example_wire import ExampleDecodeError, decode_example
from tests.trips import row_to_example


def _tf_values(data: bytes) -> dict[str, list]:
    example = tf.train.Example.FromString(data)
    found = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        found[key] = list(getattr(feature, kind).value) if kind else []
    return found


def test_real_trips_decode_as_tensorflow_decodes_them(sample_rows):
    for row in sample_rows[:200]:
        data = row_to_example(row)
        assert decode_example(data) == _tf_values(data)


def test_random_examples_of_every_kind_decode_exactly():
    rng = random.Random(7)
    for _ in range(300):
        example = tf.train.Example()
        for i in range(rng.randrange(6)):
            feature = example.features.feature[f"f{i}"]
            kind = rng.choice(["bytes", "float", "int", "empty"])
            n = rng.randrange(4)
            if kind == "bytes":
                feature.bytes_list.value.extend(rng.randbytes(rng.randrange(5)) for _ in range(n))
            elif kind == "float":
                feature.float_list.value.extend(
                    float(tf.constant(rng.uniform(-1e6, 1e6), tf.float32)) for _ in range(n)
                )
            elif kind == "int":
                feature.int64_list.value.extend(rng.randrange(-(2**63), 2**63) for _ in range(n))
        data = example.SerializeToString()
        assert decode_example(data) == _tf_values(data)


def test_bytes_that_are_not_an_example_are_an_error_not_a_guess():
    with pytest.raises(ExampleDecodeError):
        decode_example(b"\x0a\xff\xff\xff")
