"""The settings of `taxifare serve`: the `serving:` section of the typed config.

`taxifare serve` reads them from the config file (`--config`, `--set serving.port=8502`) and
its flags override single fields. Code (tests, the benchmark) may build one directly:
`ServeConfig(model_dir=..., port=0)`; a bad value is a pydantic `ValidationError` there, and a
`pipeline.config.ConfigError` naming the key when it comes from a file or the command line.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_MODEL_NAME = "taxifare"
DEFAULT_HOST = "127.0.0.1"  # loopback unless told otherwise
DEFAULT_PORT = 8501  # TF Serving's REST port
DEFAULT_GRPC_PORT = 8500  # TF Serving's gRPC port (used only when asked for)
DEFAULT_MAX_BODY_BYTES = 1_572_864  # 1.5 MiB
DEFAULT_MAX_INSTANCES = 1_000
DEFAULT_LOG_ROTATE_BYTES = 64 * 1024 * 1024
DEFAULT_LOG_ROTATE_SECONDS = 3_600.0
DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_WAIT_MS = 0.0  # an idle model runs a request at once
DEFAULT_GRPC_MAX_CALLS = 1024
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def _schema_max_fare() -> float:
    from pipeline.serving.validation import label_maximum  # the schema is read on first use

    return label_maximum()


class ServingConfig(BaseModel):
    """Everything the server needs.

    Attributes:
      model_dir: the versioned model directory (`<serving root>/<model name>`), holding one
        integer-named folder per version; None: the config's `serving_root`/`name`.
      model_name: the name in the URLs (`/v1/models/<model_name>`) and gRPC model specs.
      host: the address to bind (REST and gRPC).
      port: the REST port.
      grpc_port: the gRPC port (TF Serving's PredictionService); None: no gRPC.
      workers: server processes, each with its own copy of the model.
      log_dir: where the request log goes; None turns logging off.
      log_sample_rate: the fraction of requests logged (all their instances), 0..1.
      log_rotate_bytes: a log file is closed and a new one started past this size.
      log_rotate_seconds: ... or when it is older than this.
      max_body_bytes: larger request bodies (and gRPC messages) are refused (413 /
        RESOURCE_EXHAUSTED).
      max_instances: more instances in one request are refused with 400.
      max_batch_size: the most instances merged into one model call.
      max_wait_ms: how long a batch that could start waits for others to share its model
        call (0: not at all; requests that arrive while a call runs share the next one).
      batch_threads: how many model calls may run at once.
      grpc_max_calls: gRPC calls in progress at once per process; more are refused with
        RESOURCE_EXHAUSTED.
      poll_seconds: how often the model directory is scanned for new versions.
      empty_version_timeout_seconds: a version folder with no model after this long is
        reported as failed.
      strict_examples: reject tf.Example features the model does not declare (by default
        they are ignored, as TF Serving ignores them, and counted in the stats).
      max_fare: a predicted fare above this (or not finite) is never answered: the request
        gets a 500 that is counted and logged; by default the highest fare the curated schema
        allows.
      max_header_bytes: a request head (request line and headers) over this gets 431.
      header_timeout_seconds: a connection that has not sent a whole request head this long
        after it opened (or after its last answer) is closed.
      body_timeout_seconds: a request whose body is not all in this long gets 408.
      keep_alive_seconds: an idle keep-alive connection is closed after this long.
      write_timeout_seconds: a connection whose client reads none of a pending answer for
        this long is dropped (a reader that stalls holds no slot nor buffered answers).
      max_connections: connections over this are answered 503 and closed at once.
      shutdown_timeout_seconds: on SIGTERM, requests in flight get this long to finish; the
        rest are answered 503.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: str | None = None
    model_name: str = Field(DEFAULT_MODEL_NAME, pattern=r"^[^/:\s]+$")
    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=0, le=65_535)
    grpc_port: int | None = Field(None, ge=0, le=65_535)
    workers: int = Field(1, ge=1, le=64)
    log_dir: str | None = None
    log_sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    log_rotate_bytes: int = Field(DEFAULT_LOG_ROTATE_BYTES, gt=0)
    log_rotate_seconds: float = Field(DEFAULT_LOG_ROTATE_SECONDS, gt=0)
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, gt=0)
    max_instances: int = Field(DEFAULT_MAX_INSTANCES, gt=0)
    max_batch_size: int = Field(DEFAULT_MAX_BATCH_SIZE, gt=0)
    max_wait_ms: float = Field(DEFAULT_MAX_WAIT_MS, ge=0)
    batch_threads: int = Field(1, gt=0)
    grpc_max_calls: int = Field(DEFAULT_GRPC_MAX_CALLS, gt=0, le=100_000)
    poll_seconds: float = Field(1.0, gt=0)
    empty_version_timeout_seconds: float = Field(60.0, gt=0)
    strict_examples: bool = False
    max_fare: float = Field(default_factory=_schema_max_fare, gt=0)
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    header_timeout_seconds: float = Field(10.0, gt=0)
    body_timeout_seconds: float = Field(30.0, gt=0)
    keep_alive_seconds: float = Field(5.0, gt=0)
    write_timeout_seconds: float = Field(30.0, gt=0)
    max_connections: int = Field(4096, gt=0)
    shutdown_timeout_seconds: float = Field(10.0, ge=0)

    @model_validator(mode="after")
    def _check_ports(self) -> ServingConfig:
        if self.grpc_port is not None and self.grpc_port == self.port and self.port != 0:
            raise ValueError(f"grpc_port and port are both {self.port}; they must differ")
        return self

    @property
    def is_loopback(self) -> bool:
        """Whether the server listens on this machine only."""
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    def to_json(self) -> str:
        """The config as JSON (how it reaches uvicorn's worker processes)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ServingConfig:
        """The inverse of `to_json`."""
        return cls.model_validate_json(text)


# The name the server's code and tests use.
ServeConfig = ServingConfig
