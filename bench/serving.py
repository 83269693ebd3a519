"""Serving benchmark: the pushed model in process, then behind ``python -m pipeline serve``.

Measurements, one after the other, against one model directory (the parent of our run's
``pushed_to``):

1. In process: ``tf.saved_model.load`` and the ``serving_default`` signature called on one
   instance at a time, the reference for what the model call itself costs.
2. Over HTTP and gRPC: a server subprocess on 127.0.0.1 serving both, loaded with
   ``bench.load_client`` (lean one-thread clients, so the client's own CPU time does not
   swamp the server's on shared cores) at concurrency 1 and at concurrency 16, one instance
   per request, for each protocol.
3. Request log: for each protocol, a fresh server with a fresh log directory takes exactly
   :data:`LOG_RUN_REQUESTS` requests at concurrency 32, is stopped with SIGTERM, and the
   instances in its request log are counted.

The instances are real trips from the TFX example's sample CSV, as a client would send them:
raw feature names, empty optional fields left out.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import targets

MODEL_NAME = "taxifare"
HOST = "127.0.0.1"
TRIPS = 1000
"""Distinct trips taken from the sample CSV; requests cycle through them."""

IN_PROCESS_WARM_UP_CALLS = 50
IN_PROCESS_CALLS = 500
HTTP_WARM_UP_REQUESTS = 100
SINGLE_CLIENT_REQUESTS = 500
CONCURRENT_CLIENTS = 16
CONCURRENT_REQUESTS = 3000
LOG_RUN_CLIENTS = 32
LOG_RUN_REQUESTS = 10_000

STARTUP_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 120.0
REQUEST_TIMEOUT_SECONDS = 30.0
EXTRA_ENV = {"TF_USE_LEGACY_KERAS": "1"}


class ServingError(RuntimeError):
    """The server could not be started, answered nothing, or did not stop."""


@dataclass(frozen=True)
class Latency:
    """Figures of one timed series of calls or requests.

    Attributes:
        label: What was timed.
        requests: Calls or requests sent.
        errors: Failed requests (always 0 in process).
        concurrency: Calls or requests in flight at once.
        seconds: Wall time of the series.
        requests_per_s: Successful calls or requests per second.
        p50_ms: Median latency in milliseconds.
        p99_ms: 99th percentile latency in milliseconds.
        server_cpu_ms: CPU time of the server per request, in ms (None in process).
        client_cpu_ms: CPU time of the calling process per call or request, in ms.
    """

    label: str
    requests: int
    errors: int
    concurrency: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float | None = None
    client_cpu_ms: float | None = None

    @classmethod
    def from_load(
        cls, label: str, figures: dict[str, float], server_cpu_s: float, client_cpu_s: float
    ) -> Latency:
        """From the dict ``run_load`` returns and the CPU seconds each side used."""
        requests = max(int(figures["requests"]), 1)
        return cls(
            label=label,
            requests=int(figures["requests"]),
            errors=int(figures["errors"]),
            concurrency=int(figures["concurrency"]),
            seconds=float(figures["seconds"]),
            requests_per_s=float(figures["requests_per_s"]),
            p50_ms=float(figures["p50_ms"]),
            p99_ms=float(figures["p99_ms"]),
            server_cpu_ms=server_cpu_s * 1000.0 / requests,
            client_cpu_ms=client_cpu_s * 1000.0 / requests,
        )


@dataclass(frozen=True)
class LogRun:
    """A fresh server taking exactly :data:`LOG_RUN_REQUESTS` requests, then SIGTERM.

    Attributes:
        load: The timed series.
        logged_instances: Instances read back from that server's request log.
        unfinished_log_files: Log files still ``.inprogress`` after the graceful stop.
        stop_exit_code: That server's exit code after SIGTERM.
        stop_seconds: How long it took to exit after SIGTERM.
    """

    load: Latency
    logged_instances: int
    unfinished_log_files: int
    stop_exit_code: int
    stop_seconds: float


@dataclass(frozen=True)
class ServingRun:
    """Everything the serving benchmark measured.

    Attributes:
        model_dir: The versioned model directory served.
        version: The version folder the in-process reference loaded (the highest).
        trips: Distinct trips the instances cycle through.
        in_process: The in-process reference.
        single_client: HTTP at concurrency 1.
        concurrent: HTTP at concurrency :data:`CONCURRENT_CLIENTS`.
        grpc_single_client: gRPC at concurrency 1.
        grpc_concurrent: gRPC at concurrency :data:`CONCURRENT_CLIENTS`.
        log_run: The HTTP :data:`LOG_RUN_REQUESTS`-request run on a fresh server.
        grpc_log_run: The same over gRPC.
    """

    model_dir: Path
    version: str
    trips: int
    in_process: Latency
    single_client: Latency
    concurrent: Latency
    grpc_single_client: Latency
    grpc_concurrent: Latency
    log_run: LogRun
    grpc_log_run: LogRun

    @property
    def series(self) -> list[Latency]:
        """The timed series, in the order they ran."""
        return [
            self.in_process,
            self.single_client,
            self.concurrent,
            self.grpc_single_client,
            self.grpc_concurrent,
            self.log_run.load,
            self.grpc_log_run.load,
        ]

    @property
    def log_runs(self) -> dict[str, LogRun]:
        """The request-log runs by protocol."""
        return {"HTTP": self.log_run, "gRPC": self.grpc_log_run}

    def checks(self) -> list[targets.Check]:
        """Judges every serving figure that has a target."""
        checks = []
        for protocol, single, concurrent in (
            ("HTTP", self.single_client, self.concurrent),
            ("gRPC", self.grpc_single_client, self.grpc_concurrent),
        ):
            checks += [
                targets.http_overhead(single.p50_ms, self.in_process.p50_ms, protocol),
                targets.concurrency_speedup(
                    concurrent.requests_per_s, single.requests_per_s, protocol
                ),
            ]
        for protocol, run in self.log_runs.items():
            checks += [
                targets.log_run_errors(run.load.errors, run.load.requests, protocol),
                targets.logged_instances(
                    run.logged_instances,
                    LOG_RUN_REQUESTS,
                    run.unfinished_log_files,
                    run.stop_exit_code,
                    protocol,
                ),
            ]
        return checks


def _import_tensorflow() -> Any:
    """Imports TensorFlow quietly, with the environment the project needs."""
    for key, value in {**EXTRA_ENV, "TF_CPP_MIN_LOG_LEVEL": "3"}.items():
        os.environ.setdefault(key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import tensorflow as tf  # Deferred: importing TensorFlow takes tens of seconds.
    return tf


def load_trips(data_csv: Path, limit: int = TRIPS) -> list[dict[str, Any]]:
    """Real trips from a CSV in the training layout, as JSON instances.

    Only the model's raw input fields are kept, empty cells are left out, and rows the server
    would refuse (it validates every field) are skipped.

    Raises:
        ValueError: If the file yields no valid trip.
    """
    from pipeline.serving.client import csv_row_to_instance
    from pipeline.serving.validation import RequestError, parse_predict_request

    trips: list[dict[str, Any]] = []
    with data_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                request = parse_predict_request({"instances": [csv_row_to_instance(row)]}, 1)
            except RequestError:
                continue
            trips.append(dict(request.trips[0]))
            if len(trips) >= limit:
                break
    if not trips:
        raise ValueError(f"no valid trip in {data_csv}")
    return trips


def trip_tensors(tf: Any, trip: dict[str, Any]) -> dict[str, Any]:
    """One trip as the ``serving_default`` inputs: shape-[1] tensors, sentinels if missing."""
    from taxifare_modules import features as f

    tensors = {}
    for key in f.FLOAT_FEATURE_KEYS:
        tensors[key] = tf.constant([trip.get(key, f.MISSING_FLOAT)], tf.float32)
    for key in f.INT_FEATURE_KEYS:
        tensors[key] = tf.constant([trip.get(key, f.MISSING_INT)], tf.int64)
    for key in f.STRING_FEATURE_KEYS:
        tensors[key] = tf.constant([trip.get(key, f.MISSING_STRING)], tf.string)
    return tensors


def latest_version(model_dir: Path) -> Path:
    """The highest integer version folder under ``model_dir``.

    Raises:
        FileNotFoundError: If there is none.
    """
    versions = [
        p for p in model_dir.glob("*") if p.is_dir() and p.name.isascii() and p.name.isdigit()
    ]
    if not versions:
        raise FileNotFoundError(f"no model version folder under {model_dir}")
    return max(versions, key=lambda p: int(p.name))


def cpu_seconds(process: Any, with_children: bool = False) -> float:
    """User plus system CPU time of a psutil process (and its live children), in seconds."""
    import psutil

    processes = [process]
    if with_children:
        try:
            processes += process.children(recursive=True)
        except psutil.Error:
            pass
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _own_cpu_seconds() -> float:
    """CPU time of this process (all its threads) so far."""
    import psutil

    return cpu_seconds(psutil.Process())


def _percentiles(label: str, latencies_ms: list[float], seconds: float, cpu_s: float) -> Latency:
    """A Latency from raw per-call timings."""
    ms = np.asarray(latencies_ms)
    return Latency(
        label=label,
        requests=len(ms),
        errors=0,
        concurrency=1,
        seconds=seconds,
        requests_per_s=len(ms) / seconds if seconds > 0 else float("nan"),
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        client_cpu_ms=cpu_s * 1000.0 / max(len(ms), 1),
    )


def measure_in_process(version_dir: Path, trips: list[dict[str, Any]]) -> Latency:
    """Times ``serving_default`` on one trip per call, after a warm-up."""
    from taxifare_modules import features as f

    tf = _import_tensorflow()
    loaded = tf.saved_model.load(str(version_dir))
    signature = loaded.signatures[f.SERVING_DEFAULT_SIGNATURE]
    inputs = [trip_tensors(tf, trip) for trip in trips]

    def call(i: int) -> None:
        signature(**inputs[i % len(inputs)])[f.PREDICTION_KEY].numpy()

    for i in range(IN_PROCESS_WARM_UP_CALLS):
        call(i)
    latencies = []
    cpu_before = _own_cpu_seconds()
    started = time.perf_counter()
    for i in range(IN_PROCESS_CALLS):
        begun = time.perf_counter()
        call(i)
        latencies.append((time.perf_counter() - begun) * 1000.0)
    seconds = time.perf_counter() - started
    cpu_s = _own_cpu_seconds() - cpu_before
    return _percentiles(
        "In process, `serving_default`, 1 instance per call", latencies, seconds, cpu_s
    )


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve_command(model_dir: Path, port: int, grpc_port: int, log_dir: Path) -> list[str]:
    """The command that serves ``model_dir`` with this interpreter (REST and gRPC)."""
    return [
        sys.executable, "-m", "pipeline", "serve", "--model-dir", str(model_dir),
        "--host", HOST, "--port", str(port), "--grpc-port", str(grpc_port),
        "--log-dir", str(log_dir),
    ]  # fmt: skip


def _tail(path: Path, lines: int = 30) -> str:
    """The last lines of a text file, or a note that it is empty."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return "(no output)"
    return "\n".join(text) or "(no output)"


class Server:
    """One ``python -m pipeline serve`` subprocess, stopped with SIGTERM.

    Args:
        model_dir: The versioned model directory to serve.
        log_dir: Its ``--log-dir`` (created by the server).
        output: File that takes its stdout and stderr.
        cwd: Where to run it (the repository root, so ``pipeline`` is importable).
    """

    def __init__(self, model_dir: Path, log_dir: Path, output: Path, cwd: Path) -> None:
        self.port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.grpc_target = f"{HOST}:{self.grpc_port}"
        self.output = output
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("wb") as sink:
            self.process = subprocess.Popen(
                serve_command(model_dir, self.port, self.grpc_port, log_dir),
                cwd=cwd,
                env={**os.environ, **EXTRA_ENV},
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def wait_available(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        """Waits until the model's status lists a version AVAILABLE.

        Raises:
            ServingError: If the server exits or the deadline passes first.
        """
        import httpx

        status_url = f"{self.url}/v1/models/{MODEL_NAME}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServingError(
                    f"the server exited with {self.process.returncode} before serving.\n"
                    f"--- last lines of its output ---\n{_tail(self.output)}"
                )
            try:
                response = httpx.get(status_url, timeout=5.0)
                statuses = response.json().get("model_version_status", [])
                if any(s.get("state") == "AVAILABLE" for s in statuses):
                    return
            except (httpx.HTTPError, ValueError, AttributeError):
                pass
            time.sleep(0.25)
        self.kill()
        raise ServingError(
            f"no model version became AVAILABLE within {timeout:g} s.\n"
            f"--- last lines of its output ---\n{_tail(self.output)}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> tuple[int, float]:
        """Sends SIGTERM and waits for the exit; returns (exit code, seconds taken).

        Raises:
            ServingError: If it does not exit in time (it is then killed).
        """
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServingError(f"the server did not exit within {timeout:g} s of SIGTERM") from None
        return code, time.monotonic() - started

    def cpu_seconds(self) -> float:
        """CPU time the server (and any worker processes) used so far."""
        import psutil

        try:
            process = psutil.Process(self.process.pid)
        except psutil.Error:
            return 0.0
        return cpu_seconds(process, with_children=True)

    def kill(self) -> None:
        """Kills the process if it is still running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _load(
    server: Server,
    instances: list[Any],
    concurrency: int,
    total: int,
    label: str,
    protocol: str = "HTTP",
) -> Latency:
    """One load series, one instance per request, over HTTP or gRPC."""
    from bench.load_client import run_grpc_load, run_load

    server_before, client_before = server.cpu_seconds(), _own_cpu_seconds()
    load, target = (
        (run_grpc_load, server.grpc_target)
        if protocol == "gRPC"
        else (
            run_load,
            server.url,
        )
    )
    figures = load(
        target,
        instances,
        concurrency=concurrency,
        total_requests=total,
        model_name=MODEL_NAME,
        instances_per_request=1,
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    return Latency.from_load(
        label,
        figures,
        server.cpu_seconds() - server_before,
        _own_cpu_seconds() - client_before,
    )


def count_logged(log_dir: Path) -> tuple[int, int]:
    """(instances in the request log, files still ``.inprogress``)."""
    from pipeline.serving.request_log import (
        IN_PROGRESS_SUFFIX,
        read_request_log,
        request_log_files,
    )

    _import_tensorflow()  # read_request_log parses with TensorFlow's protos
    unfinished = sum(path.endswith(IN_PROGRESS_SUFFIX) for path in request_log_files(str(log_dir)))
    return sum(1 for _ in read_request_log(str(log_dir))), unfinished


def run(
    model_dir: Path,
    data_csv: Path,
    workspace: Path,
    cwd: Path,
    progress: Callable[[str], None] = print,
) -> ServingRun:
    """Runs the whole serving benchmark against ``model_dir``.

    Args:
        model_dir: The versioned model directory (``<serving root>/taxifare``).
        data_csv: CSV of real trips in the training layout.
        workspace: Scratch directory for the servers' logs and request logs.
        cwd: Where to start the servers (the repository root).
        progress: Called with a short line before each step.

    Raises:
        FileNotFoundError: If ``model_dir`` holds no version.
        ValueError: If ``data_csv`` holds no valid trip.
        ServingError: If a server fails to start or to stop.
    """
    version_dir = latest_version(model_dir)
    trips = load_trips(data_csv)
    instances = [dict(trip) for trip in trips]

    progress(f"serving: in-process reference on version {version_dir.name} ...")
    in_process = measure_in_process(version_dir, trips)

    progress("serving: starting a server for the latency runs ...")
    server = Server(model_dir, workspace / "latency-log", workspace / "latency-server.out", cwd)
    try:
        server.wait_available()
        runs = {}
        for protocol in ("HTTP", "gRPC"):
            _load(server, instances, 1, HTTP_WARM_UP_REQUESTS, "warm-up", protocol)
            progress(f"serving: {protocol} at concurrency 1 and {CONCURRENT_CLIENTS} ...")
            runs[protocol] = (
                _load(
                    server,
                    instances,
                    1,
                    SINGLE_CLIENT_REQUESTS,
                    f"{protocol}, concurrency 1",
                    protocol,
                ),
                _load(
                    server,
                    instances,
                    CONCURRENT_CLIENTS,
                    CONCURRENT_REQUESTS,
                    f"{protocol}, concurrency {CONCURRENT_CLIENTS}",
                    protocol,
                ),
            )
        server.stop()
    finally:
        server.kill()

    log_runs = {}
    for protocol in ("HTTP", "gRPC"):
        progress(
            f"serving: {LOG_RUN_REQUESTS:,} {protocol} requests at concurrency"
            f" {LOG_RUN_CLIENTS} ..."
        )
        name = protocol.lower()
        log_dir = workspace / f"log-run-{name}-log"
        server = Server(model_dir, log_dir, workspace / f"log-run-{name}-server.out", cwd)
        try:
            server.wait_available()
            load = _load(
                server,
                instances,
                LOG_RUN_CLIENTS,
                LOG_RUN_REQUESTS,
                f"{protocol}, concurrency {LOG_RUN_CLIENTS}, fresh server",
                protocol,
            )
            exit_code, stop_seconds = server.stop()
        finally:
            server.kill()
        logged, unfinished = count_logged(log_dir)
        log_runs[protocol] = LogRun(load, logged, unfinished, exit_code, stop_seconds)
    return ServingRun(
        model_dir=model_dir,
        version=version_dir.name,
        trips=len(trips),
        in_process=in_process,
        single_client=runs["HTTP"][0],
        concurrent=runs["HTTP"][1],
        grpc_single_client=runs["gRPC"][0],
        grpc_concurrent=runs["gRPC"][1],
        log_run=log_runs["HTTP"],
        grpc_log_run=log_runs["gRPC"],
    )
