"""Each private internal `taxifare_modules.compat` relies on, checked against the installed
libraries: an upgrade that changes one fails here, naming it, not somewhere downstream."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tensorflow as tf

from taxifare_modules import compat

UPGRADE = "a library upgrade changed an internal taxifare_modules.compat relies on: "


def _function_names(export_dir) -> set[str]:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    return {fn.signature.name for fn in saved.meta_graphs[0].graph_def.library.function}


def _our_function(x):
    return x + 1


def test_autograph_leaves_tf_keras_and_tft_unconverted_but_converts_our_code():
    import tensorflow_transform as tft
    import tf_keras
    from tensorflow.python.autograph.core import config
    from tensorflow.python.autograph.impl import conversion

    ours = [str(config.DoNotConvert(name)) for name in compat.UNCONVERTED_LIBRARIES]
    before = tuple(config.CONVERSION_RULES)
    try:
        config.CONVERSION_RULES = tuple(r for r in before if str(r) not in ours)
        layer_call = tf_keras.layers.Dense(1).call
        if conversion.is_allowlisted(layer_call):
            pytest.fail(
                UPGRADE + "AutoGraph already leaves tf_keras unconverted without our rule;"
                " skip_autograph_of_libraries may no longer be needed"
            )
        compat.skip_autograph_of_libraries()
        compat.skip_autograph_of_libraries()  # idempotent
        rules = [str(r) for r in config.CONVERSION_RULES]
        for rule in ours:
            assert rules.count(rule) == 1, UPGRADE + f"{rule!r} is not in {rules}"
        assert conversion.is_allowlisted(layer_call), (
            UPGRADE + "AutoGraph no longer reads CONVERSION_RULES: tf_keras code gets converted"
        )
        assert conversion.is_allowlisted(tft.scale_to_z_score), UPGRADE + "TFT gets converted"
        assert not conversion.is_allowlisted(_our_function), "our own code must still convert"
    finally:
        config.CONVERSION_RULES = before
        compat.skip_autograph_of_libraries()


def test_keras_saving_without_traces_leaves_out_the_layer_call_functions(tmp_path):
    import tf_keras

    model = tf_keras.Sequential([tf_keras.layers.Dense(2, name="dense_a")])
    model(tf.zeros([1, 3]))
    signature = tf.function(lambda x: {"y": model(x)}).get_concrete_function(
        tf.TensorSpec([None, 3], tf.float32)
    )
    traced, untraced = tmp_path / "traced", tmp_path / "untraced"
    tf.saved_model.save(model, str(traced), signatures=signature)
    with compat.keras_saving_without_traces():
        tf.saved_model.save(model, str(untraced), signatures=signature)

    def layer_traces(path):
        return {n for n in _function_names(path) if "call_and_return_conditional_losses" in n}

    assert layer_traces(traced), "tf_keras saves per-layer traces by default (the test's premise)"
    assert not layer_traces(untraced), (
        UPGRADE + "tf_keras' keras_option_scope(save_traces=False) no longer drops the traces"
    )
    x = tf.constant([[1.0, 2.0, 3.0]])
    loaded = tf.saved_model.load(str(untraced))
    np.testing.assert_array_equal(loaded.signatures["serving_default"](x=x)["y"], model(x))


def test_the_flat_call_of_a_loaded_signature_answers_as_the_signature_does(tmp_path):
    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.scale = tf.Variable([1.5, -2.0, 0.25])

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.float32, name="b_first"),
                tf.TensorSpec([None], tf.int64, name="a_second"),
                tf.TensorSpec([None], tf.string, name="c_third"),
            ]
        )
        def serve(self, b_first, a_second, c_third):
            lengths = tf.cast(tf.strings.length(c_third), tf.float32)
            mixed = b_first * self.scale[0] - tf.cast(a_second, tf.float32) * self.scale[1]
            return {"out": mixed / (lengths + self.scale[2])}

    tiny = Tiny()
    tf.saved_model.save(tiny, str(tmp_path), signatures={"serving_default": tiny.serve})
    signature = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    inputs = {
        "c_third": tf.constant([b"x", b"abc", b""]),
        "a_second": tf.constant([3, -1, 7], tf.int64),
        "b_first": tf.constant([0.1, 2.5, -4.0]),
    }
    order = compat.signature_flat_input_order(signature, inputs)
    assert order is not None, (
        UPGRADE + "TensorFlow's ConcreteFunction / function_type_utils binding changed;"
        " the server falls back to the slower public signature call"
    )
    assert sorted(order) == sorted(inputs)
    call = compat.call_signature_flat(signature)
    flat = call([inputs[name] for name in order])
    expected = signature(**inputs)
    assert set(flat) == set(expected) == {"out"}
    assert flat["out"].numpy().tobytes() == expected["out"].numpy().tobytes(), (
        UPGRADE + "ConcreteFunction._call_flat answers differently from the signature call"
    )
    # A tensor of another dtype is converted by the binding: no flat call then.
    converted = dict(inputs, a_second=tf.constant([3, -1, 7], tf.int32))
    assert compat.signature_flat_input_order(signature, converted) is None


def test_absl_flag_resets_cannot_lower_the_absl_logger_while_held():
    from absl import flags
    from absl import logging as absl_logging

    logger = logging.getLogger("absl")
    assert logger is absl_logging.get_absl_logger(), UPGRADE + "absl logs elsewhere"
    verbosity = flags.FLAGS["verbosity"]
    before_level, before_verbosity = logger.level, verbosity.value
    try:
        logger.setLevel(logging.INFO)
        verbosity.value = absl_logging.WARNING  # what parsing the flags to defaults does
        assert logger.level == logging.WARNING, (
            "absl no longer resets its logger when the verbosity flag is set; the hold in"
            " hold_absl_logger_level may no longer be needed"
        )
        release = compat.hold_absl_logger_level(logging.INFO)
        assert logger.level == logging.INFO
        verbosity.value = absl_logging.WARNING
        assert logger.level <= logging.INFO, (
            UPGRADE + "absl sets its logger's level without the logger's setLevel; run"
            " progress lines would stop after a library parses absl flags"
        )
        logger.setLevel("DEBUG")  # names and lower levels pass as they are
        assert logger.level == logging.DEBUG
        release()
        assert "setLevel" not in vars(logger) and logger.level == logging.WARNING
    finally:
        logger.__dict__.pop("setLevel", None)
        verbosity.value = before_verbosity
        logger.setLevel(before_level)


def test_an_offline_pipeline_job_exposes_its_resource_parent_and_dashboard(tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform, aiplatform_v1

    spec = {
        "displayName": "tiny",
        "labels": {"tfx_version": "1-16-0"},
        "pipelineSpec": {
            "pipelineInfo": {"name": "tiny"},
            "schemaVersion": "2.1.0",
            "sdkVersion": "tfx-1.16.0",
            "root": {"dag": {"tasks": {}}},
        },
        "runtimeConfig": {},
    }
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(spec))
    job = aiplatform.PipelineJob(
        display_name="tiny",
        template_path=str(path),
        pipeline_root="gs://a-bucket/root",
        project="a-project",
        location="europe-west4",
        credentials=AnonymousCredentials(),
    )
    resource = compat.pipeline_job_resource(job)
    assert type(resource) is aiplatform_v1.PipelineJob, (
        UPGRADE + f"PipelineJob._gca_resource is a {type(resource)!r}"
    )
    assert resource.runtime_config.gcs_output_directory == "gs://a-bucket/root"
    assert resource.pipeline_spec["pipelineInfo"]["name"] == "tiny"
    assert compat.pipeline_job_parent(job) == "projects/a-project/locations/europe-west4", (
        UPGRADE + "PipelineJob._parent is not the create request's parent"
    )
    resource.name = "projects/a-project/locations/europe-west4/pipelineJobs/tiny-123"
    uri = compat.pipeline_job_dashboard_uri(job)
    assert uri.startswith("https://console.cloud.google.com/"), UPGRADE + uri
    assert "tiny-123" in uri and "a-project" in uri and "europe-west4" in uri


def test_tfx_vertex_training_reaches_the_replaced_client_and_launch():
    from tfx.extensions.google_cloud_ai_platform import runner, training_clients

    original_launch = runner._launch_cloud_training
    original_create = training_clients.VertexJobClient.create_client
    clients, launches = [], []
    try:
        compat.replace_tfx_vertex_job_client(lambda region: clients.append(region) or region)
        compat.replace_tfx_vertex_training_launch(lambda **kwargs: launches.append(kwargs))
        pool = {"machine_spec": {"machine_type": "n1-standard-4"}, "replica_count": 1}
        runner.start_cloud_training(
            input_dict={},
            output_dict={},
            exec_properties={},
            executor_class_path="a.module.Executor",
            job_args={"project": "a-project", "worker_pool_specs": [pool]},
            job_id=None,
            enable_vertex=True,
            vertex_region="europe-west4",
        )
    finally:
        runner._launch_cloud_training = original_launch
        training_clients.VertexJobClient.create_client = original_create
    assert clients == ["europe-west4"], UPGRADE + "TFX's VertexJobClient.create_client"
    assert len(launches) == 1, UPGRADE + "TFX's runner._launch_cloud_training is not called"
    (launch,) = launches
    assert launch["project"] == "a-project" and launch["vertex_region"] == "europe-west4"
    assert (
        launch["training_job"]["job_spec"]["worker_pool_specs"][0]["machine_spec"]
        == (pool["machine_spec"])
    )


def test_the_kubeflow_v2_executor_flags_parser_reads_the_task_arguments():
    parse = compat.kubeflow_v2_executor_flags_parser()
    args, rest = parse(
        [
            "prog",
            "--executor_class_path=a.module.Executor",
            "--json_serialized_invocation_args={}",
            "--runner=DirectRunner",
        ]
    )
    assert args.executor_class_path == "a.module.Executor", UPGRADE + "TFX's _parse_flags"
    assert args.json_serialized_invocation_args == "{}"
    assert rest == ["prog", "--runner=DirectRunner"]


def test_tfma_metrics_proto_loads_without_tfma_and_is_the_module_tfma_uses():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from taxifare_modules import compat\n"
        "m = compat.tfma_metrics_for_slice_pb2()\n"
        "assert 'tensorflow_model_analysis.api' not in sys.modules, 'TFMA was imported'\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
        "record = m.MetricsForSlice()\n"
        "kv = record.metric_keys_and_values.add()\n"
        "kv.key.name = 'root_mean_squared_error'\n"
        "kv.value.double_value.value = 4.5\n"
        "data = record.SerializeToString()\n"
        "import tensorflow_model_analysis as tfma\n"
        "from tensorflow_model_analysis.proto import metrics_for_slice_pb2\n"
        "assert metrics_for_slice_pb2 is m, 'TFMA loaded a second copy'\n"
        "back = metrics_for_slice_pb2.MetricsForSlice.FromString(data)\n"
        "print(back.metric_keys_and_values[0].value.double_value.value)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, UPGRADE + "TFMA's metrics_for_slice_pb2: " + done.stderr[-2000:]
    assert done.stdout.strip() == "4.5"
