"""The transport-free predict core that REST and gRPC both call.

decode (the adapter's job: JSON or TensorProtos into a validated `PredictRequest`) →
resolve the model version → batch → one model call → check the fares → log → the answer.
A request's log records are made beside its model call but written only once its answer is
ready and its client still there to take it (`delivered`), so the log holds the answered
instances and not the ones nobody received (counted as `undelivered` in the stats).
Everything that can be refused is refused before batching, so one request's input never
fails another's; a batched model call that fails anyway is retried request by request, so
only the culprit fails. Errors are `RequestError`s carrying an HTTP status, which the gRPC
adapter maps to TF Serving's status codes.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.serving.batching import SHUTTING_DOWN, MicroBatcher
from pipeline.serving.config import ServeConfig
from pipeline.serving.request_log import RequestLog, log_examples
from pipeline.serving.validation import PredictRequest, RequestError
from pipeline.serving.versions import LoadedModel, VersionManager, is_version_name, load_model

_LOG = logging.getLogger(__name__)

# Request ids the server makes up: 128 random bits as hex, like a uuid4 but without a
# system call per request (seeded from the OS once).
_request_ids = random.Random()
# The stats keep at most this many distinct ignored feature names (a client can send any),
# each cut to this many characters: the stats stay a few kilobytes whatever clients send.
_MAX_IGNORED_NAMES = 100
MAX_IGNORED_NAME_CHARS = 64
_OTHER_NAMES = "(other names)"


def describe_error(error: BaseException) -> str:
    """An unexpected error as one line: its type and the first line of its message, cut to
    a few hundred characters (a message may carry a client's input)."""
    text = str(error).strip().splitlines()
    first = text[0][:300] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def new_request_id() -> str:
    """A fresh random request id."""
    return f"{_request_ids.getrandbits(128):032x}"


@dataclasses.dataclass
class Prediction:
    """The answer to one predict request."""

    fares: np.ndarray  # float32, one per instance
    version: int
    request_id: str


@dataclasses.dataclass
class _Job:
    """One predict request on its way through the batcher."""

    request: PredictRequest
    request_id: str
    log: bool
    timestamp_ms: int


@dataclasses.dataclass
class _Answered:
    """A job's result from the worker thread: its fares and its encoded log records."""

    fares: np.ndarray
    records: list[bytes] | None


def _frozen_after_load(
    loader: Callable[[str, int], LoadedModel],
) -> Callable[[str, int], LoadedModel]:
    """`loader`, then the garbage of earlier versions collected and every live object (the
    new model's ~400k among them) moved out of the collector's reach.

    Python's cyclic collector walks every tracked object on a full pass: with a model loaded,
    a request that makes many small objects set off passes of seconds. Frozen objects are
    skipped. Unfreezing first lets a version dropped since the last load be collected.
    """

    def load(path: str, version: int) -> LoadedModel:
        model = loader(path, version)
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        return model

    return load


class ImplausibleFareError(Exception):
    """The model answered a fare that is not finite or beyond `max_fare` (a 500)."""


class PredictCore:
    """The server's moving parts (versions, batcher, request log) and the predict path.

    Args:
      config: the server settings (`model_dir` set).
      loader: loads one model version (for tests); `load_model` by default.
    """

    def __init__(
        self, config: ServeConfig, loader: Callable[[str, int], LoadedModel] = load_model
    ) -> None:
        if config.model_dir is None:
            raise ValueError("the serving config has no model_dir")
        self.config = config
        self.versions = VersionManager(
            config.model_dir,
            config.poll_seconds,
            _frozen_after_load(loader),
            config.empty_version_timeout_seconds,
        )
        self.request_log = (
            RequestLog(
                config.log_dir,
                rotate_bytes=config.log_rotate_bytes,
                rotate_seconds=config.log_rotate_seconds,
                sample_rate=config.log_sample_rate,
            )
            if config.log_dir
            else None
        )
        self.log_errors = 0
        # Answered instances not logged: their client had gone when the answer was ready.
        self.undelivered = 0
        self._log_failing = False  # the last log write failed (said once per streak)
        self.internal_errors = 0
        self.implausible_fares = 0
        self.ignored_features: dict[str, int] = {}
        self.requests_by_protocol: dict[str, int] = {}
        # Guards the counters: REST (the event loop) and gRPC (its threads) both count.
        self._counters = threading.Lock()
        self.batcher = MicroBatcher(
            self._run_batch,
            max_batch_size=config.max_batch_size,
            max_wait_ms=config.max_wait_ms,
            batch_threads=config.batch_threads,
        )

    # --- the predict path -------------------------------------------------------------------

    async def predict(
        self,
        request: PredictRequest,
        name: str,
        version: str | int | None,
        request_id: str | None = None,
        protocol: str = "rest",
        delivered: Callable[[], bool] | None = None,
    ) -> Prediction:
        """Answers one validated predict request (on the event loop).

        Args:
          request: the validated request.
          name: the model name the client asked for.
          version: the version it asked for (a URL segment or a number), or None for the
            served one.
          request_id: the client's id for the request; None makes one up.
          protocol: "rest" or "grpc" (counted in the stats).
          delivered: whether the answer can still reach the client, asked once the answer is
            ready; its instances are logged only if so. None: always.

        Raises:
          RequestError: refused (404 unknown model or version, 503 nothing loaded or
            shutting down, 500 the model failed or answered an implausible fare).
        """
        model, job = self._admit(request, name, version, request_id, protocol)
        try:
            answered = await self.batcher.submit((model, request.signature_name), job, len(request))
        except Exception as e:
            raise self._refusal(job, e) from None
        if answered.records is not None:
            if delivered is None or delivered():
                self._write_log(answered.records)
            else:
                with self._counters:
                    self.undelivered += len(answered.records)
        return Prediction(answered.fares, model.version, job.request_id)

    def _admit(
        self,
        request: PredictRequest,
        name: str,
        version: str | int | None,
        request_id: str | None,
        protocol: str,
    ) -> tuple[LoadedModel, _Job]:
        """The model a request goes to and its job; counts it."""
        model = self.resolve(name, version)
        with self._counters:
            if request.ignored_features:
                self._count_ignored(request.ignored_features)
            self.requests_by_protocol[protocol] = self.requests_by_protocol.get(protocol, 0) + 1
        job = _Job(
            request,
            request_id or new_request_id(),
            self.request_log is not None and self.request_log.sample(),
            int(time.time() * 1000),
        )
        return model, job

    def _refusal(self, job: _Job, error: Exception) -> RequestError:
        """The RequestError a failed request is answered with (counted and logged)."""
        if isinstance(error, RequestError):
            return error
        if isinstance(error, ImplausibleFareError):
            self.count_error("implausible")
            _LOG.error("request %s: %s", job.request_id, error)
            return RequestError(f"internal server error: {error}", 500)
        if isinstance(error, RuntimeError) and str(error) == SHUTTING_DOWN:
            return RequestError(str(error), 503)
        self.count_error("internal")
        # One line, not a traceback: a client may be able to set this off at will.
        _LOG.error(
            "request %s: the model call failed: %s",
            job.request_id,
            describe_error(error),
        )
        return RequestError(f"internal server error: {type(error).__name__}", 500)

    def count_error(self, kind: str) -> None:
        """Counts an internal error ("internal") or an implausible fare ("implausible")."""
        with self._counters:
            if kind == "implausible":
                self.implausible_fares += 1
            else:
                self.internal_errors += 1

    def _count_ignored(self, names: dict[str, int]) -> None:
        counts = self.ignored_features
        for name, count in names.items():
            if len(name) > MAX_IGNORED_NAME_CHARS:
                name = name[: MAX_IGNORED_NAME_CHARS - 3] + "..."
            if name not in counts and len(counts) >= _MAX_IGNORED_NAMES:
                name = _OTHER_NAMES
            counts[name] = counts.get(name, 0) + count

    def _run_batch(self, key: tuple[LoadedModel, str], jobs: list[_Job]) -> list[Any]:
        """Runs in a worker thread: one model call for the batch, then its log records.

        A call that fails is retried one request at a time, so only the request at fault
        gets the error.
        """
        import tensorflow as tf

        model, signature = key
        try:
            fares = self._call(model, signature, jobs)
        except Exception as e:
            if len(jobs) > 1:
                return [r for job in jobs for r in self._run_batch(key, [job])]
            if isinstance(e, tf.errors.InvalidArgumentError):
                return [RequestError(f"the model rejected the request: {e.message}")]
            return [e]
        if len(jobs) == 1:
            results: list[Any] = [fares]
        else:
            results = np.split(fares, np.cumsum([len(job.request) for job in jobs])[:-1])
        checked: list[Any] = []
        for job, job_fares in zip(jobs, results, strict=True):
            bad = self._implausible(job_fares)
            if bad:
                checked.append(ImplausibleFareError(bad))
                continue
            # Encoded here, off the event loop; written there once the answer is ready.
            records = (
                log_examples(
                    job.request.trips,
                    job_fares,
                    model.version,
                    job.request_id,
                    job.timestamp_ms,
                    signature,
                )
                if job.log
                else None
            )
            checked.append(_Answered(job_fares, records))
        return checked

    @staticmethod
    def _call(model: LoadedModel, signature: str, jobs: list[_Job]) -> np.ndarray:
        trips = [t for job in jobs for t in job.request.trips]
        examples = None
        if jobs[0].request.examples is not None:
            examples = [e for job in jobs for e in job.request.examples]
        fares = model.predict(signature, trips, examples)
        if fares.shape != (len(trips),):
            raise RuntimeError(f"the model answered shape {fares.shape} for {len(trips)} trips")
        return fares

    def _implausible(self, fares: np.ndarray) -> str:
        """Why a request's fares must not be answered, or ""."""
        ok = np.isfinite(fares) & (np.abs(fares) <= self.config.max_fare)
        if ok.all():
            return ""
        index = int(np.argmin(ok))
        return (
            f"the model answered an implausible fare {float(fares[index])!r} for instance"
            f" {index} (the limit is {self.config.max_fare:g})"
        )

    def _write_log(self, records: list[bytes]) -> None:
        """Writes one answered request's records (a failure is counted, said once)."""
        try:
            self.request_log.write(records)
        except OSError as e:
            # Answering matters more than logging: a full disk must not take serving down.
            with self._counters:
                self.log_errors += len(records)
            if not self._log_failing:
                self._log_failing = True
                _LOG.error(
                    "request log: cannot write to %s (%s); requests are answered but not"
                    " logged until it works again (counted in the stats' write_errors)",
                    self.request_log.log_dir,
                    e.strerror or e,
                )
            return
        if self._log_failing:
            self._log_failing = False
            _LOG.warning("request log: writing to %s again", self.request_log.log_dir)

    # --- versions ---------------------------------------------------------------------------

    def resolve(self, name: str, version: str | int | None) -> LoadedModel:
        """The model a request for `name` (and `version`, if given) goes to.

        Raises:
          RequestError: 404 for an unknown model or version, 503 while none is loaded.
        """
        self.check_name(name)
        current = self.versions.current
        number = self.parse_version(name, version)
        if number is None:
            if current is None:
                raise RequestError(f"no version of model {name!r} is available yet", 503)
            return current
        if current is not None and current.version == number:
            return current
        serving = f"; serving version {current.version}" if current is not None else ""
        status = self.versions.status(number)
        if status is None:
            raise RequestError(f"version {number} of model {name!r} not found{serving}", 404)
        if status.error_message:
            raise RequestError(
                f"version {number} of model {name!r} failed to load: {status.error_message}"
                f"{serving}",
                404,
            )
        raise RequestError(
            f"version {number} of model {name!r} is not available (state {status.state}){serving}",
            404,
        )

    def check_name(self, name: str) -> None:
        """Raises RequestError(404) unless `name` is the served model."""
        if name != self.config.model_name:
            raise RequestError(
                f"model {name!r} not found; this server serves {self.config.model_name!r}", 404
            )

    @staticmethod
    def parse_version(name: str, version: str | int | None) -> int | None:
        """The version number a request names, or None if it names none."""
        if version is None:
            return None
        if isinstance(version, int):
            return version
        if not is_version_name(version):
            raise RequestError(
                f"version {version!r} of model {name!r} not found (versions are integers)", 404
            )
        return int(version)

    def status_json(self, name: str, version: str | int | None) -> dict[str, Any]:
        """TF Serving's GetModelStatus answer as its REST API renders it."""
        self.check_name(name)
        number = self.parse_version(name, version)
        if number is not None:
            status = self.versions.status(number)
            if status is None:
                raise RequestError(f"version {number} of model {name!r} not found", 404)
            statuses = [status]
        else:
            statuses = self.versions.statuses()
            if not statuses:
                raise RequestError(f"no versions of model {name!r} found", 404)
        return {"model_version_status": [s.to_json() for s in statuses]}

    def stats_json(self, name: str) -> dict[str, Any]:
        """The server's counters (not in TF Serving); nothing about the host."""
        self.check_name(name)
        current = self.versions.current
        log = self.request_log
        return {
            "model_name": name,
            "model_version": str(current.version) if current is not None else None,
            "requests": dict(self.requests_by_protocol),
            "batching": self.batcher.stats.to_json(),
            "errors": {
                "internal": self.internal_errors,
                "implausible_fares": self.implausible_fares,
            },
            "ignored_example_features": dict(sorted(self.ignored_features.items())),
            "request_log": {
                "enabled": log is not None,
                "records_written": log.records_written if log is not None else 0,
                "write_errors": self.log_errors,
                "records_lost": log.records_lost if log is not None else 0,
                "undelivered": self.undelivered,
            },
        }
