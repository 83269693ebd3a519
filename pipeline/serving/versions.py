"""Finds, loads and hot-swaps the versions of a model under a TF Serving model directory.

The layout is the one the Pusher writes and TF Serving reads: `<model dir>/<version>/` with
an integer version, each holding `saved_model.pb` and `variables/`. The highest version that
loads is served. A background thread rescans the directory; a new version is loaded once its
files have stopped changing for one scan (the Pusher copies files in place), warmed up with
one call of each signature, and only then swapped in with a single reference assignment:
a request holds the model it started with, so none is answered by a half-loaded model. A
version that fails to load is reported in the status with its error and does not replace
the one being served; it is tried again if its files change.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.serving.field_memo import FieldValueMemo
from taxifare_modules import compat
from taxifare_modules import features as f

_LOG = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"

# TF Serving's ManagerState names and error codes, as its REST status endpoint spells them.
STATE_START = "START"
STATE_LOADING = "LOADING"
STATE_AVAILABLE = "AVAILABLE"
STATE_END = "END"
ERROR_OK = "OK"
ERROR_UNKNOWN = "UNKNOWN"

# Signature inputs of a warm-up call: a complete trip of valid values.
WARM_UP_TRIP: dict[str, Any] = {
    f.PICKUP_LATITUDE_KEY: 41.88,
    f.PICKUP_LONGITUDE_KEY: -87.63,
    f.DROPOFF_LATITUDE_KEY: 41.98,
    f.DROPOFF_LONGITUDE_KEY: -87.90,
    f.PICKUP_AREA_KEY: 32,
    f.DROPOFF_AREA_KEY: 76,
    f.HOUR_KEY: 12,
    f.DAY_KEY: 3,
    f.MONTH_KEY: 6,
    f.TIMESTAMP_KEY: 1_400_000_000,
    f.PAYMENT_TYPE_KEY: "Cash",
    f.COMPANY_KEY: "Taxi Affiliation Services",
}


# The inputs of a one-instance call are tensors made once per (field, value) and reused:
# most values recur (hours, days, areas, payment types, companies, the coarse coordinates),
# so a lone request costs a dictionary lookup per field instead of a tensor conversion. The
# timestamp, new with every trip, is converted each time. The memo holds this many bytes
# at most (its estimate of them).
_ONE_VALUE_TENSORS_MAX_BYTES = 8 * 1024 * 1024
_UNCACHED_KEYS = frozenset({f.TIMESTAMP_KEY})
_MISSING_VALUES = {
    **{key: f.MISSING_FLOAT for key in f.FLOAT_FEATURE_KEYS},
    **{key: f.MISSING_INT for key in f.INT_FEATURE_KEYS},
    **{key: f.MISSING_STRING for key in f.STRING_FEATURE_KEYS},
}


class ModelLoadError(Exception):
    """A version folder does not hold a model this server can serve."""


def trips_to_columns(trips: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Trips as the `serving_default` inputs: one column per raw field, sentinels if missing.

    Args:
      trips: validated trips (raw field -> value; missing optional fields absent).

    Returns:
      float32, int64 and bytes (object) numpy columns keyed by raw feature name.
    """
    columns: dict[str, np.ndarray] = {}
    for key in f.FLOAT_FEATURE_KEYS:
        columns[key] = np.array([t.get(key, f.MISSING_FLOAT) for t in trips], np.float32)
    for key in f.INT_FEATURE_KEYS:
        columns[key] = np.array([t.get(key, f.MISSING_INT) for t in trips], np.int64)
    for key in f.STRING_FEATURE_KEYS:
        columns[key] = np.array(
            [t.get(key, f.MISSING_STRING).encode("utf-8") for t in trips], object
        )
    return columns


def trip_to_tensors(trip: dict[str, Any]) -> dict[str, Any]:
    """One trip as the `serving_default` inputs: shape-[1] tensors, sentinels if missing.

    The tensor of a recurring (field, value) is made once and then reused (see
    `_one_value_tensors`).
    """
    tensors = {}
    for key, missing in _MISSING_VALUES.items():
        value = trip.get(key, missing)
        if key in _UNCACHED_KEYS:
            tensors[key] = _one_value_tensor(key, value)
            continue
        tensors[key] = _one_value_tensors(key, value)
    return tensors


def _one_value_tensor(key: str, value: float | int | str) -> Any:
    """A shape-[1] tensor of a raw field's value, in the field's dtype."""
    import tensorflow as tf

    if key in f.FLOAT_FEATURE_KEYS:
        return tf.constant([value], tf.float32)
    if key in f.INT_FEATURE_KEYS:
        return tf.constant([value], tf.int64)
    return tf.constant([value], tf.string)


_one_value_tensors = FieldValueMemo(_one_value_tensor, _ONE_VALUE_TENSORS_MAX_BYTES)


def trip_to_example(trip: dict[str, Any], extra: dict[str, Any] | None = None) -> Any:
    """A trip as a tf.Example in the training layout: missing fields are left out.

    Args:
      trip: raw field -> value.
      extra: more features (float -> float_list, int -> int64_list, str/bytes -> bytes_list).

    Returns:
      The `tf.train.Example` proto.
    """
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    feature = example.features.feature
    for key, value in trip.items():
        if key in f.FLOAT_FEATURE_KEYS:
            feature[key].float_list.value.append(value)
        elif key in f.INT_FEATURE_KEYS:
            feature[key].int64_list.value.append(value)
        else:
            feature[key].bytes_list.value.append(value.encode("utf-8"))
    for key, value in (extra or {}).items():
        if isinstance(value, float):
            feature[key].float_list.value.append(value)
        elif isinstance(value, int):
            feature[key].int64_list.value.append(value)
        else:
            feature[key].bytes_list.value.append(
                value if isinstance(value, bytes) else value.encode("utf-8")
            )
    return example


def read_signature_defs(path: str) -> dict[str, Any]:
    """The servable signature defs of a SavedModel as TF Serving renders them in JSON.

    Raises:
      ModelLoadError: `saved_model.pb` is missing or is not a SavedModel.
    """
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    pb_path = os.path.join(path, SAVED_MODEL_FILE)
    saved_model = saved_model_pb2.SavedModel()
    try:
        with open(pb_path, "rb") as fh:
            saved_model.ParseFromString(fh.read())
    except FileNotFoundError:
        raise ModelLoadError(f"no {SAVED_MODEL_FILE} in the version folder") from None
    except DecodeError as e:
        raise ModelLoadError(f"{SAVED_MODEL_FILE} is not a SavedModel: {e}") from None
    graphs = [g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags]
    if not graphs:
        raise ModelLoadError(f"{SAVED_MODEL_FILE} has no meta graph tagged 'serve'")
    signature_defs = graphs[0].signature_def
    return {
        name: json_format.MessageToDict(
            signature_defs[name],
            preserving_proto_field_name=True,
            including_default_value_fields=True,
        )
        for name in sorted(signature_defs)
        if name in (f.SERVING_DEFAULT_SIGNATURE, f.SERVING_TF_EXAMPLE_SIGNATURE)
    }


@dataclasses.dataclass(eq=False)
class LoadedModel:
    """One loaded, warmed-up model version. Compared by identity (it keys batches)."""

    version: int
    path: str
    signature_defs: dict[str, Any]
    signatures: dict[str, Any]
    loaded: Any  # the tf.saved_model.load object; its signatures need it alive
    # signature name -> a cheaper call of it (`flat_caller`), where one was verified at load
    callers: dict[str, Callable[[dict[str, Any]], Any]] = dataclasses.field(default_factory=dict)

    def predict(self, signature_name: str, trips: list[dict[str, Any]], examples: Any) -> Any:
        """Calls one signature on a batch and returns the predicted fares (float32 numpy).

        Args:
          signature_name: `serving_default` (uses `trips`) or `serving_tf_example` (uses
            `examples`, the serialized tf.Examples).
          trips: validated trips.
          examples: serialized tf.Examples, or None.
        """
        inputs = self.inputs(signature_name, trips, examples)
        caller = self.callers.get(signature_name)
        outputs = (
            caller(inputs) if caller is not None else self.signatures[signature_name](**inputs)
        )
        return outputs[f.PREDICTION_KEY].numpy().reshape(-1)

    @staticmethod
    def inputs(signature_name: str, trips: list[dict[str, Any]], examples: Any) -> dict[str, Any]:
        """The input tensors of a signature call (see `predict`)."""
        import tensorflow as tf

        if signature_name == f.SERVING_TF_EXAMPLE_SIGNATURE:
            return {f.SERVING_TF_EXAMPLE_INPUT_KEY: tf.constant(examples, tf.string)}
        if len(trips) == 1:
            return trip_to_tensors(trips[0])
        return {k: tf.constant(v) for k, v in trips_to_columns(trips).items()}


def flat_caller(signature: Any, inputs: dict[str, Any]) -> Callable[[dict[str, Any]], Any] | None:
    """A cheaper way to call a loaded signature with tensors of its exact input types.

    Calling a signature (`signature(**inputs)`) first matches the keyword arguments to its
    input structure and checks and casts each one, which costs more CPU than the model of
    this project itself. Our inputs are always tensors of the declared dtypes, so the server
    passes them in the signature's flat order straight to the function underneath (what
    the signature call ends in; TensorFlow internals, see `compat.call_signature_flat`). The
    order is learnt by binding `inputs` once. None if the signature is not of the expected
    kind (then it is called the public way); `load_model` also checks both ways answer alike.
    """
    order = compat.signature_flat_input_order(signature, inputs)
    if order is None:
        return None
    call_flat = compat.call_signature_flat(signature)

    def call(tensors: dict[str, Any]) -> Any:
        return call_flat([tensors[name] for name in order])

    return call


# tensorflow.DataType values (types.proto) of each tf.Example list kind.


def check_example_parsing(signature: Any) -> None:
    """Checks that a `serving_tf_example` signature parses exactly as the server decodes:
    one ParseExampleV2 reading each raw field as a VarLenFeature of its kind. The server
    checks, logs and runs the values it reads with that spec (`validation.parse_examples`),
    so a model that parses otherwise would run values nobody checked.

    Raises:
      ModelLoadError: the signature parses other features, kinds or shapes.
    """
    import tensorflow as tf

    graph = signature.graph.as_graph_def()
    parses = []
    for nodes in [graph.node, *(fn.node_def for fn in graph.library.function)]:
        consts = {n.name: n for n in nodes if n.op == "Const"}
        for node in nodes:
            if node.op.startswith("ParseExample") or node.op.startswith("ParseSingleExample"):
                parses.append((node, consts))
    if len(parses) != 1 or parses[0][0].op != "ParseExampleV2":
        raise ModelLoadError(
            f"signature {f.SERVING_TF_EXAMPLE_SIGNATURE!r} does not parse its examples with one"
            f" ParseExampleV2 (found {[n.op for n, _ in parses]})"
        )
    node, consts = parses[0]
    if node.attr["Tdense"].list.type or node.attr["ragged_value_types"].list.type:
        raise ModelLoadError(
            f"signature {f.SERVING_TF_EXAMPLE_SIGNATURE!r} parses dense or ragged features;"
            " the server decodes every raw field as a VarLenFeature"
        )
    keys_input = node.input[2].split(":")[0].lstrip("^")
    if keys_input not in consts:
        raise ModelLoadError(
            f"signature {f.SERVING_TF_EXAMPLE_SIGNATURE!r} computes its parse keys at run time"
        )
    keys = [k.decode() for k in tf.make_ndarray(consts[keys_input].attr["value"].tensor)]
    parsed = dict(zip(keys, node.attr["sparse_types"].list.type, strict=True))
    from pipeline.serving.tensors import FIELD_DTYPES

    expected = FIELD_DTYPES
    # Every field the server decodes must be parsed the same way. The signature may also
    # parse fields no request carries (the schema's post-trip fields, in the raw feature
    # spec Transform exports): the model gets tf.Examples re-encoded from the decoded trips,
    # so those are absent from every request, as for any client that leaves them out.
    differ = {k: v for k, v in expected.items() if parsed.get(k) != v}
    if differ:
        raise ModelLoadError(
            f"signature {f.SERVING_TF_EXAMPLE_SIGNATURE!r} parses {sorted(parsed.items())};"
            f" the server decodes {sorted(expected.items())}"
        )


def load_model(path: str, version: int) -> LoadedModel:
    """Loads a SavedModel version and checks it answers both serving signatures.

    Raises:
      ModelLoadError: the folder is not a servable model of this project.
    """
    signature_defs = read_signature_defs(path)
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # TF raises many types for a broken model; all mean "cannot load"
        raise ModelLoadError(f"cannot load the SavedModel: {type(e).__name__}: {e}") from None
    signatures = {}
    for name in (f.SERVING_DEFAULT_SIGNATURE, f.SERVING_TF_EXAMPLE_SIGNATURE):
        if name not in loaded.signatures:
            raise ModelLoadError(f"the SavedModel has no {name!r} signature")
        signatures[name] = loaded.signatures[name]
    check_example_parsing(signatures[f.SERVING_TF_EXAMPLE_SIGNATURE])
    model = LoadedModel(version, path, signature_defs, signatures, loaded)
    example = trip_to_example(WARM_UP_TRIP).SerializeToString()
    try:
        for name in signatures:
            fare = model.predict(name, [WARM_UP_TRIP], [example])
            if fare.shape != (1,) or not np.isfinite(fare).all():
                raise ModelLoadError(f"signature {name!r} answered {fare!r} for a valid trip")
            _add_flat_caller(model, name, example)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"warm-up call failed: {type(e).__name__}: {e}") from None
    return model


def _add_flat_caller(model: LoadedModel, name: str, example: bytes) -> None:
    """Uses `flat_caller` for signature `name` if it answers the warm-up trip (one and two
    at a time) exactly as the signature call does."""
    trips = [WARM_UP_TRIP, WARM_UP_TRIP]
    signature = model.signatures[name]
    caller = flat_caller(signature, model.inputs(name, trips[:1], [example]))
    if caller is None:
        _LOG.info("version %d: signature %r is called the public way", model.version, name)
        return
    for count in (1, 2):
        inputs = model.inputs(name, trips[:count], [example] * count)
        fares = caller(inputs)[f.PREDICTION_KEY].numpy()
        expected = signature(**inputs)[f.PREDICTION_KEY].numpy()
        if not np.array_equal(fares, expected):
            _LOG.warning(
                "version %d: the direct call of %r answered %r, the signature %r; using the"
                " signature",
                model.version,
                name,
                fares,
                expected,
            )
            return
    model.callers[name] = caller


@dataclasses.dataclass
class VersionStatus:
    """What the server knows about one version folder (TF Serving's ModelVersionStatus)."""

    version: int
    state: str
    error_code: str = ERROR_OK
    error_message: str = ""

    def to_json(self) -> dict[str, Any]:
        """The status as TF Serving's REST API renders it."""
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


def _fingerprint(path: str) -> tuple | None:
    """Names, sizes and mtimes of every file under `path`; None if not a model yet."""
    if not os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
        return None
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except FileNotFoundError:  # removed while scanning: not stable
                return None
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


# TF Serving's version numbers are int64 (ModelSpec.version, ModelVersionStatus.version).
MAX_VERSION = 2**63 - 1


def is_version_name(name: str) -> bool:
    """Whether a folder or URL name is a version number: ASCII digits only (Python's
    `isdigit` also takes superscripts and other scripts' digits) of a value that fits in
    int64, as every version field of TF Serving's protocol is."""
    return name.isascii() and name.isdigit() and int(name) <= MAX_VERSION


class VersionManager:
    """Serves the highest loadable version of a model directory and swaps in new ones.

    Folders whose name is not a version number are ignored (with one warning each). A
    version folder that still has no model `empty_timeout_seconds` after it appeared is
    reported as failed (it is loaded if its files come later).

    Args:
      model_dir: the versioned model directory.
      poll_seconds: how often to rescan it.
      loader: loads one version (for tests); `load_model` by default.
      empty_timeout_seconds: how long a version folder may stay without a model.
    """

    def __init__(
        self,
        model_dir: str,
        poll_seconds: float = 1.0,
        loader: Callable[[str, int], LoadedModel] = load_model,
        empty_timeout_seconds: float = 60.0,
    ) -> None:
        self.model_dir = model_dir
        self.poll_seconds = poll_seconds
        self.empty_timeout_seconds = empty_timeout_seconds
        self._empty_since: dict[int, float] = {}
        self._ignored_names: set[str] = set()
        self._loader = loader
        self._current: LoadedModel | None = None
        self._statuses: dict[int, VersionStatus] = {}
        # Per version: the fingerprint last seen, and the one a load last failed on.
        self._seen: dict[int, tuple | None] = {}
        self._failed: dict[int, tuple | None] = {}
        self._removed: set[int] = set()  # served versions whose folder went away
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> LoadedModel | None:
        """The version being served (None until one has loaded)."""
        return self._current

    def statuses(self) -> list[VersionStatus]:
        """Every version seen, highest first."""
        with self._lock:
            return [dataclasses.replace(s) for _, s in sorted(self._statuses.items(), reverse=True)]

    def status(self, version: int) -> VersionStatus | None:
        """The status of one version, or None if it was never seen."""
        with self._lock:
            found = self._statuses.get(version)
            return dataclasses.replace(found) if found else None

    def start(self) -> None:
        """Loads the highest loadable version now, then watches for new ones in a thread."""
        self.scan(wait_until_stable=False)
        self._thread = threading.Thread(target=self._watch, name="model-versions", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stops watching; waits up to `timeout` seconds for a load in progress (the watcher
        is a daemon thread, so a load still running then does not keep the process)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.scan()
            except Exception:  # keep serving the current version whatever the disk does
                _LOG.exception("scanning %s failed", self.model_dir)

    def _versions_on_disk(self) -> list[int]:
        try:
            names = os.listdir(self.model_dir)
        except FileNotFoundError:
            return []
        versions = []
        for name in names:
            if not os.path.isdir(os.path.join(self.model_dir, name)):
                continue
            if is_version_name(name):
                versions.append(int(name))
            elif name not in self._ignored_names:
                self._ignored_names.add(name)
                why = (
                    f"a version number is at most {MAX_VERSION} (int64)"
                    if name.isascii() and name.isdigit()
                    else "a version folder's name is an integer"
                )
                _LOG.warning("ignoring folder %r in the model directory: %s", name, why)
        return sorted(versions, reverse=True)

    def _set_status(self, version: int, state: str, code: str = ERROR_OK, msg: str = "") -> None:
        with self._lock:
            self._statuses[version] = VersionStatus(version, state, code, msg)

    def scan(self, wait_until_stable: bool = True) -> None:
        """Looks for versions newer than the served one and swaps in the highest that loads.

        Args:
          wait_until_stable: load a folder only once its files are unchanged since the last
            scan (a copy may be in progress). Off for the first scan at startup.
        """
        current = self._current
        # A removed served folder is a rollback: the highest remaining version that loads
        # takes over (as in TF Serving); until one does, the removed one keeps serving.
        removed = current is not None and not os.path.isdir(current.path)
        if removed and current.version not in self._removed:
            self._removed.add(current.version)
            _LOG.warning("the folder of served version %d was removed", current.version)
        floor = None if current is None or removed else current.version
        on_disk = self._versions_on_disk()
        with self._lock:  # forget folders that went away (the served one stays listed)
            for version in set(self._statuses) - set(on_disk):
                if current is None or version != current.version:
                    del self._statuses[version]
                    self._seen.pop(version, None)
                    self._failed.pop(version, None)
                    self._empty_since.pop(version, None)
        for version in on_disk:
            if floor is not None and version <= floor:
                break
            if removed and version == current.version:
                continue
            path = os.path.join(self.model_dir, str(version))
            fingerprint = _fingerprint(path)
            previous = self._seen.get(version, ())
            self._seen[version] = fingerprint
            if fingerprint is None:
                first_seen = self._empty_since.setdefault(version, time.monotonic())
                waited = time.monotonic() - first_seen
                if waited > self.empty_timeout_seconds:
                    status = self._statuses.get(version)
                    if status is None or status.state != STATE_END:
                        _LOG.warning(
                            "version %d has no %s after %.0fs", version, SAVED_MODEL_FILE, waited
                        )
                        self._set_status(
                            version,
                            STATE_END,
                            ERROR_UNKNOWN,
                            f"no {SAVED_MODEL_FILE} in the version folder after"
                            f" {self.empty_timeout_seconds:g}s",
                        )
                elif version not in self._statuses:
                    self._set_status(version, STATE_START)
                continue
            self._empty_since.pop(version, None)
            if version in self._failed and self._failed[version] == fingerprint:
                continue  # failed on these very files; retried only when they change
            if wait_until_stable and previous != fingerprint:
                self._set_status(version, STATE_START)
                continue
            self._set_status(version, STATE_LOADING)
            started = time.monotonic()
            try:
                model = self._loader(path, version)
            except Exception as e:
                message = str(e) if isinstance(e, ModelLoadError) else f"{type(e).__name__}: {e}"
                _LOG.warning("version %d of %s failed to load: %s", version, path, message)
                # The status is for clients: it names the version, never this host's paths.
                message = message.replace(path, f"version {version}").replace(
                    self.model_dir, "the model directory"
                )
                self._failed[version] = fingerprint
                self._set_status(version, STATE_END, ERROR_UNKNOWN, message)
                continue
            self._failed.pop(version, None)
            # The swap: one reference assignment; requests already holding the old model
            # finish on it, and it is freed when the last of them is done.
            self._current = model
            if current is not None:
                if removed:
                    with self._lock:
                        self._statuses.pop(current.version, None)
                else:
                    self._set_status(current.version, STATE_END)
            self._set_status(version, STATE_AVAILABLE)
            _LOG.info(
                "serving version %d of %s (loaded in %.1fs)",
                version,
                self.model_dir,
                time.monotonic() - started,
            )
            return
