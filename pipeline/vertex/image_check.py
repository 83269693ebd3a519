"""`taxifare check-image`: the environment holds what the compiled Vertex spec runs.

The Dockerfile's last build step runs it inside the image, so an image that could not run
a step of the pipeline fails to build instead of failing on Vertex after the first paid
steps. The tests run it on the development environment, which is installed from the same
lock the same way. It checks:

- every executor class and module function (run_fn, preprocessing_fn, tuner_fn) the spec
  names by dotted path imports, and every custom artifact type the spec names imports as
  TFX's Vertex entrypoint imports it (spec_checks.check_artifact_types);
- every package of the lock that is installed has the locked version, and the stack the
  pipeline runs on (TensorFlow, TFX, Beam, ...) is installed;
- TensorFlow's `tf.keras` is Keras 2 (TF_USE_LEGACY_KERAS=1 is in effect);
- the curated schema the spec names parses and has every raw feature.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from typing import Any

# The stack every step imports: each must be installed at its locked version.
STACK = (
    "tensorflow",
    "tfx",
    "apache-beam",
    "tensorflow-transform",
    "tensorflow-model-analysis",
    "tensorflow-data-validation",
    "tfx-bsl",
    "ml-metadata",
    "tf-keras",
    "kfp",
    "google-cloud-aiplatform",
    "google-cloud-bigquery",
    "protobuf",
    "numpy",
    "pyarrow",
)
# The task parameters that hold module code by dotted path.
_CODE_PARAMETERS = ("run_fn", "preprocessing_fn", "tuner_fn", "stats_options_updater_fn")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==([^\s;]+)", re.M)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(lock_text: str) -> dict[str, str]:
    """The pinned versions of a uv/pip-compile lock, by normalized package name."""
    return {_normalize(name): version for name, version in _PIN.findall(lock_text)}


def spec_code_paths(job: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, dotted path) of every executor class and module function the spec names."""
    spec = job.get("pipelineSpec", job)
    found = []
    for label, executor in sorted(spec.get("deploymentSpec", {}).get("executors", {}).items()):
        args = executor.get("container", {}).get("args", [])
        for flag in ("--executor_class_path", "--class_path"):
            if flag in args:
                found.append((label, args[args.index(flag) + 1]))
    for task, node in sorted(spec.get("root", {}).get("dag", {}).get("tasks", {}).items()):
        for key, value in node.get("inputs", {}).get("parameters", {}).items():
            constant = value.get("runtimeValue", {}).get("constantValue", {})
            if key in _CODE_PARAMETERS and constant.get("stringValue"):
                found.append((f"{task}.{key}", constant["stringValue"]))
    return found


def check_code_paths(job: dict[str, Any]) -> list[str]:
    """Problems: executor classes and module functions of the spec that do not import."""
    problems = []
    for where, path in spec_code_paths(job):
        # As TFX resolves them (module, then attribute), with the underlying error kept.
        module, _, name = path.rpartition(".")
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as e:
            problems.append(f"{where}: {path} does not import ({type(e).__name__}: {e})")
    return problems


def check_versions(pins: dict[str, str]) -> list[str]:
    """Problems: installed packages off their locked version, stack packages missing."""
    problems = []
    for name in STACK:
        if name not in pins:
            problems.append(f"{name}: not pinned in the lock")
    for name, pinned in sorted(pins.items()):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            # The image leaves out the lock's test tools; the stack must be there.
            if name in STACK:
                problems.append(f"{name}: not installed (the lock pins {pinned})")
            continue
        if _normalize(installed) != _normalize(pinned):
            problems.append(f"{name}: {installed} installed, the lock pins {pinned}")
    return problems


def check_keras() -> list[str]:
    """Problems: tf.keras is not Keras 2 (TFT and TFMA need tf_keras as tf.keras)."""
    import tensorflow as tf

    # tf.keras is a lazy loader without a version: ask where its Model class comes from.
    home = tf.keras.Model.__module__.split(".")[0]
    if home != "tf_keras":
        return [
            f"tf.keras is the {home} package, not tf_keras (Keras 2): set TF_USE_LEGACY_KERAS=1"
            " before TensorFlow is imported"
        ]
    return []


def spec_schema_files(job: dict[str, Any]) -> list[str]:
    """The schema files the spec's ImportSchemaGen reads."""
    spec = job.get("pipelineSpec", job)
    files = []
    for node in spec.get("root", {}).get("dag", {}).get("tasks", {}).values():
        value = node.get("inputs", {}).get("parameters", {}).get("schema_file")
        if value:
            files.append(value["runtimeValue"]["constantValue"]["stringValue"])
    return files


def check_schema(path: str) -> list[str]:
    """Problems: the schema file is missing, does not parse or lacks a raw feature."""
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    from taxifare_modules import features

    if not tf.io.gfile.exists(path):
        return [f"schema {path}: not found"]
    with tf.io.gfile.GFile(path) as fh:
        text = fh.read()
    try:
        schema = text_format.Parse(text, schema_pb2.Schema())
    except text_format.ParseError as e:
        return [f"schema {path}: does not parse ({e})"]
    wanted = {*features.RAW_FEATURE_KEYS, features.LABEL_KEY}
    missing = sorted(wanted - {f.name for f in schema.feature})
    return [f"schema {path}: lacks the features {missing}"] if missing else []


def check_image(
    jobs: dict[str, dict[str, Any]], lock_text: str, schema_override: str | None = None
) -> list[str]:
    """Every problem of this environment for running the compiled `jobs` (by source name).

    Args:
      jobs: compiled PipelineJobs by where they came from (a config or spec file).
      lock_text: the requirements lock the environment was installed from.
      schema_override: read this schema file instead of the path the specs name (a test
        outside the image, where the image's path does not exist).
    """
    from pipeline.vertex.spec_checks import check_artifact_types

    problems = check_versions(lock_pins(lock_text)) + check_keras()
    schemas: set[str] = set()
    for source, job in jobs.items():
        found = check_code_paths(job) + check_artifact_types(job)
        problems += [f"{source}: {p}" for p in found]
        schemas.update(spec_schema_files(job))
    if schema_override is not None:
        schemas = {schema_override}
    for path in sorted(schemas):
        if path.startswith("gs://"):
            continue  # a schema.path on gs:// is read at run time, not from the image
        problems += check_schema(path)
    return problems
