"""The one place the project touches private internals of its libraries.

TensorFlow, tf_keras, absl, TFX and google-cloud-aiplatform each have something this
project needs that their public API does not offer. Every such use is a function here,
whose docstring names the internal, says why it is used and what breaks if an upgrade
changes it; `tests/unit/test_compat.py` checks each one, so an upgrade that changes an
internal fails there, with its name, rather than somewhere downstream. Nothing here is
imported at module level: each library is imported by the function that needs it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

# Libraries whose functions are called as they are, as TensorFlow does for `keras`.
UNCONVERTED_LIBRARIES = ("tf_keras", "tensorflow_transform")

# ---------------------------------------------------------------------------------------
# TensorFlow AutoGraph


def skip_autograph_of_libraries() -> None:
    """Adds "do not convert" rules for UNCONVERTED_LIBRARIES (idempotent, process-wide).

    Internal: `tensorflow.python.autograph.core.config.CONVERSION_RULES` (a tuple of
    `DoNotConvert`/`Convert` rules, first match wins) and `config.DoNotConvert`.

    Why: AutoGraph converts the Python source of every function a `tf.function` calls,
    unless the function's module matches a "do not convert" rule. TensorFlow 2.16's rules
    name `keras` (Keras 2 lived there, written to run unconverted) but not `tf_keras`, where
    Keras 2 lives now (TF_USE_LEGACY_KERAS=1). Without a rule, the first `model.fit` and
    every exported signature re-parse and rewrite thousands of Keras functions: on this
    project's model that was about 35 s of a 45 s training run on two cores, for graphs
    identical to the unconverted ones. TensorFlow Transform is graph-style library code too.
    Our own code is still converted.

    If it changes: an ImportError/AttributeError at import of `taxifare_modules.model` or
    `.preprocessing` (module or names gone), or, if the table is no longer read, training
    and export silently become slow again.
    """
    from tensorflow.python.autograph.core import config

    present = {str(rule) for rule in config.CONVERSION_RULES}
    missing = tuple(
        rule
        for rule in (config.DoNotConvert(name) for name in UNCONVERTED_LIBRARIES)
        if str(rule) not in present
    )
    if missing:
        config.CONVERSION_RULES = missing + tuple(config.CONVERSION_RULES)


# ---------------------------------------------------------------------------------------
# tf_keras saving


@contextlib.contextmanager
def keras_saving_without_traces() -> Iterator[None]:
    """Within it, `tf.saved_model.save` of a tf_keras model leaves out Keras' layer traces.

    Internal: `tf_keras.src.saving.legacy.saved_model.utils.keras_option_scope`, the scope
    `model.save(..., save_traces=False)` itself uses; `tf.saved_model.save` (which takes our
    own serving signatures) has no such argument.

    Why: every client (TF Serving, TFMA, `taxifare serve`) calls the signatures, and
    tracing each of the model's ~80 layers' call functions again took most of the export.

    If it changes: an ImportError on export (module moved), or, if the option is no longer
    read, exports are slow again and carry per-layer functions.
    """
    from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope

    with keras_option_scope(save_traces=False):
        yield


# ---------------------------------------------------------------------------------------
# TensorFlow concrete functions (the serving fast path)


def signature_flat_input_order(signature: Any, inputs: dict[str, Any]) -> list[str] | None:
    """The input names of a loaded signature in the order its flat call takes them.

    Internal: `tensorflow.python.eager.polymorphic_function.concrete_function.
    ConcreteFunction`, `function_type_utils.canonicalize_function_inputs`,
    `FunctionType.unpack_inputs` and `distribute_utils.is_distributed_variable`: the
    binding a signature call does (`signature(**inputs)`) before it calls the function.

    Why: see `call_signature_flat`; the order is learnt by binding `inputs` once.

    Returns:
      The names, or None when the signature is not a plain ConcreteFunction over these
      exact tensors (binding converted or dropped one, or it captures distributed
      variables), or when TensorFlow lacks these internals: then the caller keeps the
      public call.

    If it changes: None (the public, slower call is used; the compat test fails).
    """
    try:
        from tensorflow.python.distribute import distribute_utils
        from tensorflow.python.eager.polymorphic_function import function_type_utils
        from tensorflow.python.eager.polymorphic_function.concrete_function import (
            ConcreteFunction,
        )

        if not isinstance(signature, ConcreteFunction):
            return None
        bound = function_type_utils.canonicalize_function_inputs(
            (), inputs, signature.function_type
        )
        flat = signature.function_type.unpack_inputs(bound)
        names_by_id = {id(tensor): name for name, tensor in inputs.items()}
        order = [names_by_id.get(id(tensor)) for tensor in flat]
        if None in order or sorted(order) != sorted(inputs):
            return None  # the binding converted or dropped an input: keep the public call
        if any(distribute_utils.is_distributed_variable(c) for c in signature.captured_inputs):
            return None
    except Exception:  # a TensorFlow without these internals: keep the public call
        return None
    return order  # type: ignore[return-value]


def call_signature_flat(signature: Any) -> Callable[[list[Any]], Any]:
    """A function calling a loaded signature with its input tensors in flat order.

    Internal: `ConcreteFunction._call_flat(args, captured_inputs)`, what a signature call
    ends in after matching keyword arguments to its input structure.

    Why: that matching checks and casts each input, which costs more CPU than this
    project's model itself; the server's inputs are always tensors of the declared dtypes,
    in the order `signature_flat_input_order` gave.

    If it changes: an AttributeError or TypeError on the first call; the server checks the
    flat call against the public call at load and keeps the public one if they differ.
    """
    from tensorflow.python.eager.polymorphic_function.concrete_function import (
        ConcreteFunction,
    )

    call_flat = ConcreteFunction._call_flat

    def call(flat_inputs: list[Any]) -> Any:
        return call_flat(signature, flat_inputs, signature.captured_inputs)

    return call


# ---------------------------------------------------------------------------------------
# absl logging


def hold_absl_logger_level(ceiling: int = logging.INFO) -> Callable[[], None]:
    """Keeps the absl logger's level at `ceiling` or below until the returned release().

    Internal: absl's `--verbosity` flag sets the absl logger's level by calling the
    logger's own `setLevel` whenever the flag's value is set, so parsing absl flags (which
    some libraries do mid-run, resetting them to their defaults) puts the logger back at
    WARNING. The logger's `setLevel` is replaced on the instance to cap the level; the
    stdlib's `logging._checkLevel` turns a level name into its number as `setLevel` does.

    Why: TFX's orchestrators log node start/finish at INFO through absl; the progress
    lines of a run are made from those records.

    If it changes: a run's per-component progress lines silently stop after a library
    parses absl flags.

    Returns:
      release(): restores the logger's class `setLevel` and the level it had before.
    """
    absl_logger = logging.getLogger("absl")
    original = absl_logger.setLevel
    previous_level = absl_logger.level

    def capped_set_level(level: int | str) -> None:
        original(min(logging._checkLevel(level), ceiling))

    absl_logger.setLevel = capped_set_level  # type: ignore[method-assign]
    capped_set_level(absl_logger.level or ceiling)

    def release() -> None:
        del absl_logger.setLevel  # back to the class's method
        absl_logger.setLevel(previous_level)

    return release


# ---------------------------------------------------------------------------------------
# google-cloud-aiplatform PipelineJob


def pipeline_job_resource(job: Any) -> Any:
    """The `aiplatform_v1` PipelineJob message an unsubmitted `aiplatform.PipelineJob` holds.

    Internal: `PipelineJob._gca_resource`, built by the constructor from the compiled spec
    and sent as-is by `job.submit()`; the SDK has no public read of it before submission.

    Why: `taxifare submit --dry-run` shows the exact request `submit()` would send.

    If it changes: the dry run fails with an AttributeError, or shows a request that is
    not the one sent.
    """
    return job._gca_resource


def pipeline_job_parent(job: Any) -> str:
    """The `projects/<project>/locations/<region>` an `aiplatform.PipelineJob` is created in.

    Internal: `PipelineJob._parent`, the parent `submit()` sends the create request to.

    Why: the dry run's request and its REST URL name it.

    If it changes: the dry run fails with an AttributeError, or names the wrong parent.
    """
    return job._parent


def pipeline_job_dashboard_uri(job: Any) -> str:
    """The Cloud Console page of a submitted `aiplatform.PipelineJob`.

    Internal: `PipelineJob._dashboard_uri()`, the link the SDK itself logs on submission.

    Why: `taxifare submit` prints where to watch the run it started.

    If it changes: `taxifare submit` fails with an AttributeError after submitting.
    """
    return job._dashboard_uri()


# ---------------------------------------------------------------------------------------
# TFX (the Vertex rehearsal's stand-ins)


def replace_tfx_vertex_training_launch(launch: Callable[..., None]) -> None:
    """Makes TFX's Trainer call `launch` where it would create a Vertex AI training job.

    Internal: `tfx.extensions.google_cloud_ai_platform.runner._launch_cloud_training
    (project, training_job, enable_vertex, vertex_region)`, which the public
    `runner.start_cloud_training` calls with the CustomJob it built.

    Why: `taxifare rehearse` runs the CustomJob's worker pools as local processes.

    If it changes: a rehearsal's Trainer reaches the real Vertex AI client and fails
    without credentials.
    """
    from tfx.extensions.google_cloud_ai_platform import runner

    runner._launch_cloud_training = launch


def replace_tfx_vertex_job_client(make_client: Callable[[str], Any]) -> None:
    """Makes TFX's VertexJobClient use `make_client(region)` as its API client.

    Internal: `tfx.extensions.google_cloud_ai_platform.training_clients.VertexJobClient`'s
    `create_client()`, which sets `self._client` from `self._region`.

    Why: the rehearsal builds the client with anonymous credentials (it sends nothing).

    If it changes: a rehearsal's Trainer asks for Google Cloud credentials.
    """
    from tfx.extensions.google_cloud_ai_platform import training_clients

    def create_client(self: Any) -> None:
        self._client = make_client(self._region)

    training_clients.VertexJobClient.create_client = create_client


def kubeflow_v2_executor_flags_parser() -> Callable[[list[str]], Any]:
    """The argument parser of TFX's Vertex task entrypoint (`kubeflow_v2_run_executor`).

    Internal: `tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor.
    _parse_flags`, the `flags_parser` its own `__main__` passes to `absl.app.run`.

    Why: the rehearsal runs that entrypoint's `main` after installing its stand-ins.

    If it changes: every rehearsed task fails at start with an AttributeError.
    """
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor

    return kubeflow_v2_run_executor._parse_flags


# ---------------------------------------------------------------------------------------
# TFMA's metrics proto, without TFMA

_TFMA_METRICS_MODULE = "tensorflow_model_analysis.proto.metrics_for_slice_pb2"


def _load_proto_module(package_name: str, module_name: str, relative_path: str) -> Any:
    """A generated `*_pb2` module of an installed package, loaded from its file without
    running the package's `__init__`, and registered under its real module name (so the
    package, if imported later in the process, reuses it: one set of descriptors)."""
    import importlib.util
    import os
    import sys

    if module_name in sys.modules:
        return sys.modules[module_name]
    package = importlib.util.find_spec(package_name)
    if package is None or not package.submodule_search_locations:
        raise ImportError(f"{package_name} is not installed")
    path = os.path.join(list(package.submodule_search_locations)[0], relative_path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        raise ImportError(f"{module_name} is not at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def tfma_metrics_for_slice_pb2() -> Any:
    """TFMA's `metrics_for_slice_pb2` module, loaded without importing TFMA itself.

    Internal: the file `tensorflow_model_analysis/proto/metrics_for_slice_pb2.py`, which
    depends on nothing but protobuf's own `wrappers_pb2`. It is loaded from the installed
    package's folder and registered under its real module name, so a later
    `import tensorflow_model_analysis` in the same process reuses it (one set of
    descriptors in protobuf's pool).

    Why: `import tensorflow_model_analysis` imports TensorFlow and Beam (over ten seconds);
    `taxifare runs` reads the Evaluator's few overall metrics and must answer in about a
    second.

    If it changes: `taxifare runs` fails with ImportError naming the file (moved, or now
    importing other TFMA modules).
    """
    return _load_proto_module(
        "tensorflow_model_analysis", _TFMA_METRICS_MODULE, "proto/metrics_for_slice_pb2.py"
    )
