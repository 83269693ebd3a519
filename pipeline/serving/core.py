"""The transport-free predict core that REST and gRPC both call.

decode (the adapter's job: JSON or TensorProtos into a validated `PredictRequest`) →
resolve the model version → batch → one model call → check the fares → log → the answer.
Everything that can be refused is refused before batching, so one request's input never
fails another's; a batched model call that fails anyway is retried request by request, so
only the culprit fails. Errors are `RequestError`s carrying an HTTP status, which the gRPC
adapter maps to TF Serving's status codes.
"""

from __future__ import annotations

import dataclasses
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
# The stats keep at most this many distinct ignored feature names (a client can send any).
_MAX_IGNORED_NAMES = 100
_OTHER_NAMES = "(other names)"


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
            config.model_dir, config.poll_seconds, loader, config.empty_version_timeout_seconds
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
    ) -> Prediction:
        """Answers one validated predict request (on the event loop).

        Args:
          request: the validated request.
          name: the model name the client asked for.
          version: the version it asked for (a URL segment or a number), or None for the
            served one.
          request_id: the client's id for the request; None makes one up.
          protocol: "rest" or "grpc" (counted in the stats).

        Raises:
          RequestError: refused (404 unknown model or version, 503 nothing loaded or
            shutting down, 500 the model failed or answered an implausible fare).
        """
        model, job = self._admit(request, name, version, request_id, protocol)
        try:
            fares = await self.batcher.submit((model, request.signature_name), job, len(request))
        except Exception as e:
            raise self._refusal(job, e) from None
        return Prediction(fares, model.version, job.request_id)

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
        _LOG.error("request %s: the model call failed", job.request_id, exc_info=error)
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
        checked = []
        for job_fares in results:
            bad = self._implausible(job_fares)
            checked.append(ImplausibleFareError(bad) if bad else job_fares)
        if self.request_log is not None:
            self._log(model, signature, jobs, checked)
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

    def _log(self, model: LoadedModel, signature: str, jobs: list[_Job], results: list) -> None:
        records = [
            record
            for job, fares in zip(jobs, results, strict=True)
            if job.log and not isinstance(fares, Exception)
            for record in log_examples(
                job.request.trips, fares, model.version, job.request_id, job.timestamp_ms, signature
            )
        ]
        try:
            self.request_log.write(records)
        except OSError:
            # Answering matters more than logging: a full disk must not take serving down.
            self.log_errors += len(records)
            _LOG.exception("could not write %d request log records", len(records))

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
            },
        }
