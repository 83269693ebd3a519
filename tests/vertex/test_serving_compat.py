"""The exported model against the endpoint's serving container: TensorFlow 2.15's op registry
(the prebuilt Vertex image) and the JSON instances TF Serving's REST predict takes.

What each case asserts was seen with the real TensorFlow 2.15.1 (loading the same SavedModels
there): the project's model and a plain MatMul load; GlobalIterId ("Op type not registered")
and a bfloat16 ImageProjectiveTransformV3 ("not in the list of allowed values") fail; MatMul's
2.16 attr grad_a=true loads with "Unknown attributes will be ignored".
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.serving.client import csv_row_to_instance
from pipeline.vertex import component_config, serving_compat
from pipeline.vertex.serving_compat import ServingCompatError
from taxifare_modules import features as f

pytestmark = pytest.mark.slow

VERTEX = Path(__file__).resolve().parents[2] / "configs" / "vertex.yaml"
TF_2_15_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"


@pytest.fixture(scope="module")
def exported_model(sample_rows, tmp_path_factory) -> str:
    """The project's model, exported by the Trainer's own export_model (one epoch)."""
    from tests.model_factory import export_small_model

    model = export_small_model(sample_rows[:300], tmp_path_factory.mktemp("model"), epochs=1)
    return model.export_dir


@pytest.fixture(scope="module")
def trips(sample_rows) -> list[dict]:
    """Complete real trips as the JSON instances a client sends to the endpoint."""
    complete = [r for r in sample_rows[:2000] if all(r[k] for k in f.RAW_FEATURE_KEYS)]
    return [csv_row_to_instance(r) for r in complete[:3]]


def _save(tmp_path: Path, name: str, fn, spec) -> str:
    """A tf.Module SavedModel whose serving_default is `fn` traced on `spec`."""
    import tensorflow as tf

    module = tf.Module()
    module.serve = tf.function(fn, input_signature=[spec])
    path = str(tmp_path / name)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def _matmul(**attrs):
    import tensorflow as tf

    return lambda x: {"y": tf.raw_ops.MatMul(a=x, b=tf.ones([2, 1]), **attrs)}


def _matrix_spec():
    import tensorflow as tf

    return tf.TensorSpec([None, 2], tf.float32, name="x")


def test_the_exported_model_loads_in_the_default_serving_image(exported_model, trips):
    from pipeline.vertex.stand_ins import call_as_prediction_container

    image = component_config.serving_image(load_config(VERTEX).vertex)
    result = serving_compat.require_serving_compat(exported_model, image)
    assert result.checked and result.serving_version == "2.15"
    assert result.problems == () and result.warnings == ()
    # Every op type of the model was looked up in 2.15's registry, not skipped.
    meta_graph = serving_compat.serving_meta_graph(
        serving_compat.read_saved_model(exported_model), exported_model
    )
    registry = serving_compat.load_op_registry((2, 15))
    assert registry["tensorflow_version"].startswith("2.15.")
    functions = {fn.signature.name for fn in meta_graph.graph_def.library.function}
    used = {n.op for n, _ in serving_compat._nodes(meta_graph.graph_def)} - functions
    assert len(used) > 20 and used <= set(registry["ops"])
    # The rows the container stacks from our JSON trips fit serving_default ...
    assert serving_compat.check_instances(exported_model, trips) == []
    # ... and the signature answers them, called as the container calls it.
    fares = call_as_prediction_container(exported_model)
    assert len(fares) == 2 and all(f > 0 for f in fares)


def test_an_op_of_the_model_missing_from_the_registry_is_named(exported_model):
    meta_graph = serving_compat.serving_meta_graph(
        serving_compat.read_saved_model(exported_model), exported_model
    )
    registry = copy.deepcopy(serving_compat.load_op_registry((2, 15)))
    used = {n.op for n, _ in serving_compat._nodes(meta_graph.graph_def)}
    assert "ParseExampleV2" in used  # serving_tf_example parses the request
    del registry["ops"]["ParseExampleV2"]
    problems, warnings = serving_compat.graph_problems(meta_graph, registry)
    assert len(problems) == 1 and warnings == []
    assert "'ParseExampleV2' is not registered in TensorFlow 2.15.1" in problems[0]


def test_an_op_added_after_2_15_fails_the_push(tmp_path):
    import tensorflow as tf

    # GlobalIterId is registered in TensorFlow 2.16, not in 2.15.
    path = _save(
        tmp_path,
        "new_op",
        lambda x: {"y": x + tf.cast(tf.raw_ops.GlobalIterId(), tf.float32)},
        tf.TensorSpec([None], tf.float32, name="x"),
    )
    result = serving_compat.check_serving_compat(path, TF_2_15_IMAGE)
    assert result.checked and len(result.problems) == 1
    assert "op 'GlobalIterId' is not registered in TensorFlow 2.15.1" in result.problems[0]
    with pytest.raises(ServingCompatError, match="GlobalIterId") as raised:
        serving_compat.require_serving_compat(path, TF_2_15_IMAGE)
    assert "vertex.endpoint.serving_image" in str(raised.value)


def test_an_attr_added_after_2_15_with_a_non_default_value_is_reported(tmp_path, caplog):
    # MatMul's grad_a is new in 2.16 (default false). Left at its default, the saver strips
    # it; set, TensorFlow 2.15 ignores it.
    plain = _save(tmp_path, "plain", _matmul(), _matrix_spec())
    hinted = _save(tmp_path, "hinted", _matmul(grad_a=True), _matrix_spec())
    assert serving_compat.check_serving_compat(plain, TF_2_15_IMAGE).warnings == ()
    result = serving_compat.check_serving_compat(hinted, TF_2_15_IMAGE)
    assert result.problems == () and len(result.warnings) == 1
    assert "'MatMul' sets attr 'grad_a' (b: true)" in result.warnings[0]
    assert "TensorFlow 2.15.1's MatMul does not have" in result.warnings[0]
    with caplog.at_level(logging.WARNING, logger=serving_compat.__name__):
        serving_compat.require_serving_compat(hinted, TF_2_15_IMAGE)
    assert any("grad_a" in r.getMessage() for r in caplog.records)


def test_a_dtype_the_serving_op_does_not_allow_is_a_problem(tmp_path):
    import tensorflow as tf

    def fn(x):
        y = tf.raw_ops.ImageProjectiveTransformV3(
            images=x,
            transforms=tf.constant([[1.0, 0, 0, 0, 1, 0, 0, 0]]),
            output_shape=tf.constant([4, 4]),
            fill_value=tf.constant(0.0),
            interpolation="NEAREST",
        )
        return {"y": tf.cast(y, tf.float32)}

    # bfloat16 images are allowed from 2.16 on.
    path = _save(tmp_path, "bf16", fn, tf.TensorSpec([None, 4, 4, 1], tf.bfloat16, name="x"))
    (problem,) = serving_compat.check_serving_compat(path, TF_2_15_IMAGE).problems
    assert "'ImageProjectiveTransformV3' attr 'dtype' is ['bfloat16']" in problem


@pytest.mark.parametrize(
    "image, version",
    [
        (TF_2_15_IMAGE, (2, 15)),
        ("europe-docker.pkg.dev/vertex-ai/prediction/tf2-gpu.2-15:latest", (2, 15)),
        ("us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15@sha256:" + "0" * 64, (2, 15)),
        ("tensorflow/serving:2.15.1-gpu", (2, 15)),
        ("asia-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-12:latest", (2, 12)),
        ("us-central1-docker.pkg.dev/my-gcp-project/serving/tfs:2.16", None),
        ("us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest", None),
    ],
)
def test_the_serving_image_names_its_tensorflow(image, version):
    assert serving_compat.serving_tf_version(image) == version


def test_an_image_of_unknown_tensorflow_is_not_checked(tmp_path, caplog):
    path = _save(tmp_path, "plain", _matmul(), _matrix_spec())
    custom = "us-central1-docker.pkg.dev/my-gcp-project/serving/tfs:2.16"
    with caplog.at_level(logging.WARNING, logger=serving_compat.__name__):
        result = serving_compat.require_serving_compat(path, custom)
    assert not result.checked and result.serving_version is None and result.problems == ()
    assert result.note.startswith("not checked: the TensorFlow version of serving image")
    assert any("not checked" in r.getMessage() for r in caplog.records)
    older = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-12:latest"
    result = serving_compat.check_serving_compat(path, older)
    assert not result.checked and "no op list of TensorFlow 2.12" in result.note


def test_the_registry_dump_and_the_check_read_the_same_format(exported_model):
    from pipeline.vertex import serving_ops_dump

    # The running TensorFlow (the exporting one) dumped as the shipped file was: the model
    # passes against it, and it holds every op 2.15 has.
    current = serving_ops_dump.op_registry()
    shipped = serving_compat.load_op_registry((2, 15))
    assert set(current) == set(shipped)
    assert set(shipped["ops"]) <= set(current["ops"])
    meta_graph = serving_compat.serving_meta_graph(
        serving_compat.read_saved_model(exported_model), exported_model
    )
    assert serving_compat.graph_problems(meta_graph, current) == ([], [])


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda t: t.pop(f.COMPANY_KEY), "lacks input(s) ['company']"),
        (lambda t: t.update(tip=1.0), "has ['tip'], which are not inputs"),
        (lambda t: t.update({f.PICKUP_LATITUDE_KEY: float("nan")}), "not finite"),
        (lambda t: t.update({f.PICKUP_LATITUDE_KEY: "41.9"}), "'41.9' is not a number"),
        (lambda t: t.update({f.HOUR_KEY: 3.5}), "3.5 is not an integer"),
        (lambda t: t.update({f.HOUR_KEY: [3]}), "a value of rank 1"),
        (lambda t: t.update({f.COMPANY_KEY: 7}), "7 is not a string"),
    ],
    ids=[
        "missing",
        "unknown",
        "nan",
        "string-for-float",
        "float-for-int",
        "rank",
        "int-for-string",
    ],
)
def test_an_instance_serving_default_would_refuse_is_named(exported_model, trips, change, expected):
    trip = dict(trips[0])
    change(trip)
    problems = serving_compat.check_instances(exported_model, [trips[1], trip])
    assert len(problems) == 1 and problems[0].startswith("instance 1")
    assert expected in problems[0]


def test_an_input_without_a_batch_dimension_is_named(tmp_path):
    import tensorflow as tf

    path = _save(
        tmp_path,
        "no_batch",
        lambda x: {"y": x * 2.0},
        tf.TensorSpec([3], tf.float32, name="x"),
    )
    problems = serving_compat.check_instances(path, [{"x": [1.0, 2.0, 3.0]}])
    assert any("input 'x' has shape [3]" in p and "batch" in p for p in problems)
