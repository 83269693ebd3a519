"""The settings of `taxifare serve`."""

from __future__ import annotations

import dataclasses
import json

DEFAULT_MODEL_NAME = "taxifare"
DEFAULT_HOST = "127.0.0.1"  # loopback unless told otherwise
DEFAULT_PORT = 8501  # TF Serving's REST port
DEFAULT_MAX_BODY_BYTES = 1_572_864  # 1.5 MiB
DEFAULT_MAX_INSTANCES = 1_000
DEFAULT_LOG_ROTATE_BYTES = 64 * 1024 * 1024
DEFAULT_LOG_ROTATE_SECONDS = 3_600.0
DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_WAIT_MS = 0.0  # an idle model runs a request at once


class ConfigError(ValueError):
    """A setting is out of its valid range."""


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Everything the server needs; the CLI builds one from its flags.

    Attributes:
      model_dir: the versioned model directory (`<serving root>/<model name>`), holding one
        integer-named folder per version.
      model_name: the name in the URLs (`/v1/models/<model_name>`).
      host: the address to bind.
      port: the port to bind.
      log_dir: where the request log goes; None turns logging off.
      log_sample_rate: the fraction of requests logged (all their instances), 0..1.
      log_rotate_bytes: a log file is closed and a new one started past this size.
      log_rotate_seconds: ... or when it is older than this.
      max_body_bytes: larger request bodies are refused with 413.
      max_instances: more instances in one request are refused with 400.
      max_batch_size: the most instances merged into one model call.
      max_wait_ms: how long a batch that could start waits for others to share its model
        call (0: not at all; requests that arrive while a call runs share the next one).
      batch_threads: how many model calls may run at once.
      poll_seconds: how often the model directory is scanned for new versions.
    """

    model_dir: str
    model_name: str = DEFAULT_MODEL_NAME
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    log_dir: str | None = None
    log_sample_rate: float = 1.0
    log_rotate_bytes: int = DEFAULT_LOG_ROTATE_BYTES
    log_rotate_seconds: float = DEFAULT_LOG_ROTATE_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_instances: int = DEFAULT_MAX_INSTANCES
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    batch_threads: int = 1
    poll_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not self.model_name or "/" in self.model_name or ":" in self.model_name:
            raise ConfigError(f"invalid model name {self.model_name!r}")
        if not 0 <= self.port <= 65_535:
            raise ConfigError(f"port {self.port} is not in 0..65535")
        if not 0.0 <= self.log_sample_rate <= 1.0:
            raise ConfigError(f"log sample rate {self.log_sample_rate} is not in 0..1")
        positive = {
            "log_rotate_bytes": self.log_rotate_bytes,
            "log_rotate_seconds": self.log_rotate_seconds,
            "max_body_bytes": self.max_body_bytes,
            "max_instances": self.max_instances,
            "max_batch_size": self.max_batch_size,
            "batch_threads": self.batch_threads,
            "poll_seconds": self.poll_seconds,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must not be negative, got {self.max_wait_ms}")

    def to_json(self) -> str:
        """The config as JSON (how it reaches uvicorn's worker processes)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        """The inverse of `to_json`."""
        return cls(**json.loads(text))
