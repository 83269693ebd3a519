"""DriftCheck and SkewCheck, run by their own TFX executors on artifacts whose URIs are on
TensorFlow's `ram://` filesystem (a stand-in for `gs://` that plain file calls cannot reach).

With `beam_reads_ram`, Beam reads and writes `ram://` too (through tf.io.gfile), as Dataflow's
workers read and write `gs://`; and every statistics pass SkewCheck runs with the pipeline's
Beam options (the pass that runs on Dataflow) is recorded, so a test fails when such a pass
is handed a path of this machine's disk, which Dataflow's workers cannot read.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import tensorflow as tf
from apache_beam.io.filesystem import BeamIOError, CompressedFile, CompressionTypes, FileMetadata
from apache_beam.io.filesystem import FileSystem as BeamFileSystem

from pipeline.components import monitoring as mon
from pipeline.monitoring.stats import load_statistics_file
from pipeline.monitoring.thresholds import default_thresholds, thresholds_to_json
from taxifare_modules import features as f

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _artifact(cls, uri: str, **custom):
    artifact = cls()
    artifact.uri = uri
    for key, value in custom.items():
        artifact.set_int_custom_property(key, value)
    tf.io.gfile.makedirs(uri)
    return artifact


def _run(component, inputs: dict, outputs: dict, params: dict) -> None:
    executor = component.EXECUTOR_SPEC.executor_class()
    executor.Do(
        {k: [v] for k, v in inputs.items() if v is not None},
        {k: [v] for k, v in outputs.items()},
        params,
    )


def _statistics(root: str, name: str, stats_file: str):
    from tfx.types import standard_artifacts

    artifact = _artifact(standard_artifacts.ExampleStatistics, f"{root}/{name}")
    tf.io.gfile.makedirs(f"{artifact.uri}/Split-train")
    tf.io.gfile.copy(stats_file, f"{artifact.uri}/Split-train/FeatureStats.pb")
    return artifact


def _schema(root: str):
    from tfx.types import standard_artifacts

    from pipeline.monitoring.cli import _curated_schema_file

    artifact = _artifact(standard_artifacts.Schema, f"{root}/schema")
    tf.io.gfile.copy(_curated_schema_file(), f"{artifact.uri}/schema.pbtxt")
    return artifact


@pytest.fixture()
def ram() -> str:
    return f"ram://pipeline-{uuid.uuid4().hex[:8]}"


class _RamForBeam(BeamFileSystem):
    """Beam's view of TensorFlow's `ram://`, through tf.io.gfile; on only inside
    `beam_reads_ram` (Beam finds file systems by their scheme among FileSystem's subclasses)."""

    active = False

    @classmethod
    def scheme(cls) -> str:
        return "ram" if cls.active else "taxifare-test-ram-off"

    def join(self, basepath: str, *paths: str) -> str:
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path: str) -> None:
        tf.io.gfile.makedirs(path)

    def has_dirs(self) -> bool:
        return True

    def _list(self, dir_or_prefix: str) -> Iterator[FileMetadata]:
        folder = dir_or_prefix.rstrip("/")
        if not tf.io.gfile.isdir(folder):
            return
        for name in tf.io.gfile.listdir(folder):
            path = f"{folder}/{name.rstrip('/')}"
            if not tf.io.gfile.isdir(path):
                yield self.metadata(path)

    def _file(self, path: str, mode: str, compression_type: str):
        raw = tf.io.gfile.GFile(path, mode)
        kind = BeamFileSystem._get_compression_type(path, compression_type)
        return raw if kind == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, kind)

    def create(self, path, mime_type="application/octet-stream", compression_type="auto"):
        tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
        return self._file(path, "wb", compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type="auto"):
        return self._file(path, "rb", compression_type)

    def copy(self, source_file_names, destination_file_names) -> None:
        for source, target in zip(source_file_names, destination_file_names, strict=True):
            tf.io.gfile.copy(source, target, overwrite=True)

    def rename(self, source_file_names, destination_file_names) -> None:
        for source, target in zip(source_file_names, destination_file_names, strict=True):
            tf.io.gfile.rename(source, target, overwrite=True)

    def exists(self, path: str) -> bool:
        return tf.io.gfile.exists(path)

    def size(self, path: str) -> int:
        return tf.io.gfile.stat(path).length

    def last_updated(self, path: str) -> float:
        return time.time()

    def checksum(self, path: str) -> str:
        return str(self.size(path))

    def metadata(self, path: str) -> FileMetadata:
        try:
            return FileMetadata(path, self.size(path), self.last_updated(path))
        except tf.errors.NotFoundError as e:
            raise BeamIOError("Metadata operation failed", {path: e}) from e

    def delete(self, paths) -> None:
        for path in paths:
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            elif tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)


@pytest.fixture()
def beam_reads_ram(monkeypatch) -> Iterator[list[dict]]:
    """Beam reads `ram://` as Dataflow reads `gs://`; yields the statistics passes SkewCheck
    ran with the pipeline's Beam options (data_location, output_path of each)."""
    import tensorflow_data_validation as tfdv

    passes: list[dict] = []
    generate = tfdv.generate_statistics_from_tfrecord

    def recorded(data_location, output_path=None, stats_options=None, pipeline_options=None):
        if pipeline_options is not None:
            passes.append({"data_location": data_location, "output_path": output_path})
        return generate(
            data_location,
            output_path=output_path,
            stats_options=stats_options,
            pipeline_options=pipeline_options,
        )

    monkeypatch.setattr(tfdv, "generate_statistics_from_tfrecord", recorded)
    _RamForBeam.active = True
    try:
        yield passes
    finally:
        _RamForBeam.active = False


def assert_workers_can_read(passes: list[dict], root: str) -> None:
    """Every pass with the pipeline's options read and wrote under `root` only."""
    assert passes, "no statistics pass ran with the pipeline's Beam options"
    for run in passes:
        for key in ("data_location", "output_path"):
            assert str(run[key]).startswith(root), (key, run[key])


def _read_json(path: str) -> dict:
    with tf.io.gfile.GFile(path) as fh:
        return json.load(fh)


def test_drift_check_twice_on_a_remote_root(ram, training_stats_file):
    from tfx.types import standard_artifacts

    thresholds = thresholds_to_json(default_thresholds())
    schema = _schema(ram)
    first = _artifact(mon.DriftVerdict, f"{ram}/verdict-1")
    _run(
        mon.DriftCheck,
        {
            "examples": _artifact(standard_artifacts.Examples, f"{ram}/ex1", span=1),
            "statistics": _statistics(ram, "stats-1", training_stats_file),
            "schema": schema,
        },
        {"verdict": first},
        {"thresholds": thresholds, "baseline": f"{ram}/baseline"},
    )
    assert _read_json(f"{first.uri}/verdict.json")["verdict"] == mon.NOT_COMPARED
    assert tf.io.gfile.exists(f"{first.uri}/{mon.STATISTICS_DIR}/FeatureStats.pb")
    # The pointer the next run reads names this verdict and its span.
    pointer = _read_json(f"{ram}/baseline/{mon.LATEST_VERDICT_FILE}")
    assert pointer == {"uri": first.uri, "span": 1, "baseline_span": None}
    second = _artifact(mon.DriftVerdict, f"{ram}/verdict-2")
    _run(
        mon.DriftCheck,
        {
            "examples": _artifact(standard_artifacts.Examples, f"{ram}/ex2", span=2),
            "statistics": _statistics(ram, "stats-2", training_stats_file),
            "schema": schema,
        },
        {"verdict": second},
        {"thresholds": thresholds, "baseline": f"{ram}/baseline"},
    )
    verdict = _read_json(f"{second.uri}/verdict.json")
    assert verdict["verdict"] == "no_drift", verdict["failed_features"]
    assert verdict["notes"] == ["span 2 compared with span 1"]
    assert second.get_int_custom_property(mon.BASELINE_SPAN_PROPERTY) == 1
    assert tf.io.gfile.exists(f"{second.uri}/report.html")
    assert tf.io.gfile.exists(f"{second.uri}/{mon.BASELINE_DIR}/FeatureStats.pb")
    assert second.get_string_custom_property(mon.PREVIOUS_VERDICT_PROPERTY) == first.uri
    assert not first.has_custom_property(mon.PREVIOUS_VERDICT_PROPERTY)
    pointer = _read_json(f"{ram}/baseline/{mon.LATEST_VERDICT_FILE}")
    assert pointer == {"uri": second.uri, "span": 2, "baseline_span": 1}


def _skew_check(ram: str, training_stats_file: str, log: str, model=None):
    """Runs SkewCheck on the `ram` root against the request log `log`; its verdict."""
    inputs = {"statistics": _statistics(ram, "stats", training_stats_file), "schema": _schema(ram)}
    if model is not None:
        inputs["model"] = model
    verdict_artifact = _artifact(mon.SkewVerdict, f"{ram}/skew")
    _run(
        mon.SkewCheck,
        inputs,
        {"verdict": verdict_artifact},
        {
            "serving_logs": log,
            "log_fingerprint": "",
            "thresholds": thresholds_to_json(default_thresholds()),
        },
    )
    return verdict_artifact


def test_skew_check_on_a_remote_root_and_log(ram, training_stats_file, clean_log, reference_model):
    from tfx.types import standard_artifacts

    from tests.monitoring.test_inputs_and_filesystems import _copy_tree

    _copy_tree(clean_log, f"{ram}/log")
    model = _artifact(standard_artifacts.Model, f"{ram}/model")
    _copy_tree(reference_model, f"{model.uri}/Format-Serving")
    verdict_artifact = _skew_check(ram, training_stats_file, f"{ram}/log", model)
    verdict = _read_json(f"{verdict_artifact.uri}/verdict.json")
    # Real trips through the real server, answered by this model: nothing to flag, raw or
    # derived.
    assert verdict["failed_features"] == [], verdict["failed_features"]
    assert {x["name"] for x in verdict["features"]} >= set(f.DERIVED_KEYS)
    assert tf.io.gfile.exists(
        f"{verdict_artifact.uri}/{mon.SERVING_STATISTICS_DIR}/FeatureStats.pb"
    )
    assert verdict_artifact.get_string_custom_property(mon.VERDICT_PROPERTY) == "no_skew"
    # The kept statistics are the binary proto StatisticsGen writes, of the logged trips.
    kept = load_statistics_file(
        f"{verdict_artifact.uri}/{mon.SERVING_STATISTICS_DIR}/FeatureStats.pb"
    )
    assert kept.datasets[0].num_examples == verdict["sides"]["serving"]["examples"]


def test_the_compiled_vertex_skew_check_reads_its_gcs_log(training_stats_file, clean_log, tmp_path):
    """The SkewCheck task of the compiled Vertex spec, with the parameters the spec holds,
    run by its executor on a log at the same path on a non-local filesystem (the bucket
    `gs://b` stood in for by `ram://b`: no Cloud Storage here)."""
    from pipeline.config import load_config
    from pipeline.vertex.compiler import compile_pipeline
    from tests.monitoring.test_inputs_and_filesystems import _copy_tree
    from tests.vertex.test_compile import VERTEX, _params

    bucket = f"b{uuid.uuid4().hex[:8]}"
    cfg = load_config(VERTEX, [f"monitoring.skew.serving_logs=gs://{bucket}/requests"])
    spec = tmp_path / "spec.json"
    compile_pipeline(cfg, spec)
    params = _params(json.loads(spec.read_text()), "SkewCheck")
    assert params["serving_logs"] == f"gs://{bucket}/requests"
    params["serving_logs"] = params["serving_logs"].replace("gs://", "ram://")
    _copy_tree(clean_log, params["serving_logs"])
    ram = f"ram://{bucket}/root"
    verdict_artifact = _artifact(mon.SkewVerdict, f"{ram}/skew")
    _run(
        mon.SkewCheck,
        {"statistics": _statistics(ram, "stats", training_stats_file), "schema": _schema(ram)},
        {"verdict": verdict_artifact},
        params,
    )
    verdict = _read_json(f"{verdict_artifact.uri}/verdict.json")
    assert verdict["verdict"] == "no_skew", verdict["failed_features"]
    assert verdict["sides"]["serving"]["examples"] > 0


def test_a_log_cut_mid_record_is_rewritten_on_the_pipeline_root(
    ram, beam_reads_ram, training_stats_file, clean_log
):
    """A log file cut in its last record (a hard-killed writer) is rewritten without it under
    the verdict, on the remote root, and the pass the pipeline's Beam runs reads it there:
    Dataflow's workers could not read a copy on this container's disk."""
    from pipeline.serving.request_log import check_records, request_log_files
    from tests.monitoring.test_inputs_and_filesystems import _copy_tree

    log = f"{ram}/log"
    _copy_tree(clean_log, log)
    files = request_log_files(log)
    # Every logged instance but the last one, whose record is cut below.
    total = sum(check_records(p)[0] for p in files) - 1
    with tf.io.gfile.GFile(files[-1], "rb") as fh:
        whole = fh.read()
    tf.io.gfile.remove(files[-1])  # (ram:// appends to a file opened for writing)
    with tf.io.gfile.GFile(files[-1], "wb") as fh:
        fh.write(whole[:-7])  # the last record loses its tail
    verdict_artifact = _skew_check(ram, training_stats_file, log)
    verdict = _read_json(f"{verdict_artifact.uri}/verdict.json")
    assert verdict["verdict"] == "no_skew", verdict["failed_features"]
    assert verdict["sides"]["serving"]["examples"] == total
    staged = f"{verdict_artifact.uri}/{mon.SERVING_LOG_DIR}"
    assert_workers_can_read(beam_reads_ram, verdict_artifact.uri)
    assert beam_reads_ram[0]["data_location"].startswith(f"{staged}/")
    names = tf.io.gfile.listdir(staged)
    assert len(names) == len(files)
    # The cut file's copy holds its whole records only; the original is left as it was.
    cut = f"{staged}/{sorted(names)[-1]}"
    assert tf.io.gfile.stat(cut).length < len(whole) - 7
    assert tf.io.gfile.stat(files[-1]).length == len(whole) - 7


def test_a_whole_log_on_the_remote_root_is_read_in_place(
    ram, beam_reads_ram, training_stats_file, clean_log
):
    from tests.monitoring.test_inputs_and_filesystems import _copy_tree

    log = f"{ram}/log"
    _copy_tree(clean_log, log)
    verdict_artifact = _skew_check(ram, training_stats_file, log)
    assert _read_json(f"{verdict_artifact.uri}/verdict.json")["verdict"] == "no_skew"
    assert_workers_can_read(beam_reads_ram, ram)
    # Nothing copied: the pass read the log where it is.
    assert beam_reads_ram[0]["data_location"].startswith(f"{log}/")
    assert not tf.io.gfile.exists(f"{verdict_artifact.uri}/{mon.SERVING_LOG_DIR}")
