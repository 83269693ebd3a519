"""`taxifare predict`: sends trips to a running server and returns the predicted fares.

Trips come from a JSON file (a list of instances, or `{"instances": [...]}`) or from a CSV
file in the training data's layout; from a CSV row only the model's raw input columns are
sent (the label and post-trip columns are dropped) and empty cells are left out (missing).
Values are sent as they are otherwise: the server does the validating.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Any

from taxifare_modules import features as f

DEFAULT_URL = "http://127.0.0.1:8501"
DEFAULT_BATCH_SIZE = 256  # instances per request, well under the server's limits


class PredictError(Exception):
    """The server refused a request (`status` is its HTTP status, 0 if unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class InstancesError(ValueError):
    """The instances file cannot be read as trips."""


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text  # left for the server to reject, naming the field


def csv_row_to_instance(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row (strings) as a JSON instance: raw model fields only, empty cells left out."""
    instance: dict[str, Any] = {}
    for key in f.RAW_FEATURE_KEYS:
        text = (row.get(key) or "").strip()
        if not text:
            continue
        if key in f.FLOAT_FEATURE_KEYS:
            instance[key] = _number(text)
        elif key in f.INT_FEATURE_KEYS:
            value = _number(text)
            instance[key] = int(value) if isinstance(value, float) and value.is_integer() else value
        else:
            instance[key] = text
    return instance


def load_instances(path: str) -> list[Any]:
    """Reads instances from a `.csv` file or a JSON file (`-` reads JSON from stdin).

    Raises:
      InstancesError: the file is missing, unreadable or holds no instances.
    """
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8", newline="") as fh:
                text = fh.read()
    except OSError as e:
        raise InstancesError(f"cannot read {path}: {e.strerror or e}") from None
    if path.lower().endswith(".csv"):
        instances: Any = [csv_row_to_instance(r) for r in csv.DictReader(io.StringIO(text))]
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InstancesError(f"{path} is not valid JSON: {e}") from None
        instances = data.get("instances") if isinstance(data, dict) else data
        if not isinstance(instances, list):
            raise InstancesError(f"{path} must hold a JSON list or {{'instances': [...]}}")
    if not instances:
        raise InstancesError(f"{path} holds no instances")
    return instances


def predict_url(url: str, model_name: str, version: int | None = None) -> str:
    """The TF Serving predict URL of a model (and version)."""
    versioned = f"/versions/{version}" if version is not None else ""
    return f"{url.rstrip('/')}/v1/models/{model_name}{versioned}:predict"


def predict(
    url: str,
    instances: list[Any],
    model_name: str = "taxifare",
    version: int | None = None,
    signature_name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    timeout: float = 30.0,
) -> list[float]:
    """Posts `instances` in requests of `batch_size` and returns one fare per instance.

    Raises:
      PredictError: the server refused a request or could not be reached.
    """
    import httpx

    target = predict_url(url, model_name, version)
    fares: list[float] = []
    with httpx.Client(timeout=timeout) as client:
        for start in range(0, len(instances), batch_size):
            body: dict[str, Any] = {"instances": instances[start : start + batch_size]}
            if signature_name:
                body["signature_name"] = signature_name
            try:
                response = client.post(target, json=body)
            except httpx.HTTPError as e:
                raise PredictError(f"cannot reach {target}: {e}") from None
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            if response.status_code != 200:
                message = answer.get("error") if isinstance(answer, dict) else None
                where = (
                    f" (in the request of instances {start}..{start + len(body['instances']) - 1})"
                    if len(instances) > batch_size
                    else ""
                )
                raise PredictError(
                    f"HTTP {response.status_code}: {message or response.text.strip()}{where}",
                    response.status_code,
                )
            fares.extend(answer["predictions"])
    return fares


def _column_tensor(key: str, values: list[Any]) -> Any:
    """One raw field of every instance as a TensorProto (sentinels where missing)."""
    import numpy as np
    import tensorflow as tf

    if key in f.FLOAT_FEATURE_KEYS:
        return tf.make_tensor_proto(
            np.array([f.MISSING_FLOAT if v is None else v for v in values], np.float32)
        )
    if key in f.INT_FEATURE_KEYS:
        return tf.make_tensor_proto(
            np.array([f.MISSING_INT if v is None else v for v in values], np.int64)
        )
    return tf.make_tensor_proto(
        [(f.MISSING_STRING if v is None else v).encode("utf-8") for v in values], tf.string
    )


def predict_grpc(
    target: str,
    instances: list[Any],
    model_name: str = "taxifare",
    version: int | None = None,
    signature_name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    timeout: float = 30.0,
) -> list[float]:
    """Sends `instances` to TF Serving's gRPC `Predict` (`serving_default`, one tensor per
    raw field) in requests of `batch_size` and returns one fare per instance.

    Raises:
      PredictError: an instance cannot be made into the typed tensors, or the server
        refused a request or could not be reached.
    """
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    if signature_name not in (None, f.SERVING_DEFAULT_SIGNATURE):
        raise PredictError(
            f"--grpc sends raw fields, the {f.SERVING_DEFAULT_SIGNATURE!r} signature; got"
            f" {signature_name!r}"
        )
    fares: list[float] = []
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for start in range(0, len(instances), batch_size):
            batch = instances[start : start + batch_size]
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = f.SERVING_DEFAULT_SIGNATURE
            if version is not None:
                request.model_spec.version.value = version
            for i, instance in enumerate(batch):
                if not isinstance(instance, dict):
                    raise PredictError(f"instances[{start + i}]: expected an object of fields")
            for key in f.RAW_FEATURE_KEYS:
                values = [instance.get(key) for instance in batch]
                if all(v is None for v in values):
                    continue
                try:
                    tensor = _column_tensor(key, values)
                except (TypeError, ValueError, AttributeError) as e:
                    raise PredictError(
                        f"{key}: cannot send the values of instances {start}.."
                        f"{start + len(batch) - 1} as a typed tensor: {e}"
                    ) from None
                request.inputs[key].CopyFrom(tensor)
            try:
                response = stub.Predict(request, timeout=timeout)
            except grpc.RpcError as e:
                raise PredictError(f"gRPC {e.code().name}: {e.details()}") from None
            fares.extend(_float32_values(response.outputs[f.PREDICTION_KEY]))
    return fares


def _float32_values(tensor: Any) -> list[float]:
    """A DT_FLOAT TensorProto's values, each as the shortest decimal that is that float32.

    REST's JSON carries the fare as that decimal (15.420152); widening the float32 to a
    Python float would print 15.420151710510254 for the same fare over gRPC.
    """
    import numpy as np

    if tensor.tensor_content:
        values = np.frombuffer(tensor.tensor_content, dtype="<f4")
    else:
        values = np.asarray(tensor.float_val, dtype=np.float32)
    return [float(str(v)) for v in values.reshape(-1)]
