"""The Vertex Pusher: TFX's deploy to the endpoint, then the endpoint's request-response logging.

TFX's Google Cloud AI Platform Pusher uploads a blessed model and deploys it to the endpoint
(creating the endpoint on the first push). Vertex's prebuilt TF Serving container writes no
request log of this project's own, so after a successful deploy this executor sets the
endpoint's `predict_request_response_logging_config` from `vertex.endpoint.request_logging`:
Vertex then writes a sample of the requests and responses to a BigQuery table, which
`taxifare skew --serving-logs bq://...` reads (pipeline/monitoring/vertex_log.py).

The endpoint is found as TFX finds it (the first endpoint with the configured display name)
and patched through the Vertex API's `UpdateEndpoint` with an update mask naming only the
logging config, so its traffic split and deployed models are left alone. When no table is
configured, an endpoint that already logs keeps its table; otherwise the destination is the
project alone, for which Vertex creates
`bq://<project>.logging_<endpoint display name>_<endpoint id>.request_response_logging`.

If setting the logging fails (a missing permission, say), the step fails after the deploy:
the model is serving, without the configured logging, and the run says so.

Then the endpoint's earlier models are undeployed, all but the newest
`vertex.endpoint.keep_previous` of them: TFX deploys each blessed model beside the ones
already there (at 100% of the traffic), and every deployed model holds its minimum replicas,
billed whether it gets traffic or not. A kept model is one traffic-split change away from
serving again; an undeployed one stays uploaded in the Model Registry (storage only). A model
that still has a share of the traffic is never undeployed.

What runs offline: the request objects (`logging_config`, `update_logging_request`,
`list_endpoints_request`, `undeploy_requests`) and `apply_request_logging` /
`undeploy_earlier_models` against any EndpointService, e.g. one on loopback. What cannot:
the deploy itself and the calls to a real endpoint, which need a Google Cloud project,
credentials and the Vertex API.
"""

from __future__ import annotations

import logging
from typing import Any

from tfx import types
from tfx.dsl.components.base import executor_spec
from tfx.extensions.google_cloud_ai_platform import constants as vertex_keys
from tfx.extensions.google_cloud_ai_platform.pusher import component as vertex_pusher_component
from tfx.extensions.google_cloud_ai_platform.pusher import executor as vertex_pusher_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import json_utils

from pipeline.vertex.component_config import KEEP_PREVIOUS_KEY, REQUEST_LOGGING_KEY

_LOG = logging.getLogger(__name__)

# The Endpoint field the patch changes, and nothing else.
LOGGING_CONFIG_FIELD = "predict_request_response_logging_config"
# TFX's custom property of a pushed model (tfx.components.pusher.executor).
_PUSHED_KEY = "pushed"
_CUSTOM_CONFIG_KEY = "custom_config"


def logging_config(settings: dict[str, Any], project: str, current_table: str = "") -> Any:
    """The endpoint's `PredictRequestResponseLoggingConfig` for the configured settings.

    Args:
      settings: {"enabled", "sampling_rate", "bigquery_table"} from the config.
      project: the endpoint's project (the destination when no table is configured).
      current_table: the table the endpoint logs to now, if any (kept when none is
        configured, so each push does not ask Vertex for a new one).
    """
    from google.cloud import aiplatform_v1

    if not settings["enabled"]:
        return aiplatform_v1.PredictRequestResponseLoggingConfig(enabled=False)
    table = settings.get("bigquery_table") or current_table or f"bq://{project}"
    return aiplatform_v1.PredictRequestResponseLoggingConfig(
        enabled=True,
        sampling_rate=float(settings["sampling_rate"]),
        bigquery_destination=aiplatform_v1.BigQueryDestination(output_uri=table),
    )


def update_logging_request(endpoint_name: str, config: Any) -> Any:
    """The UpdateEndpoint request that sets only the endpoint's logging config.

    Args:
      endpoint_name: projects/<project>/locations/<region>/endpoints/<id>.
      config: a `PredictRequestResponseLoggingConfig`.
    """
    from google.cloud import aiplatform_v1
    from google.protobuf import field_mask_pb2

    return aiplatform_v1.UpdateEndpointRequest(
        endpoint=aiplatform_v1.Endpoint(
            name=endpoint_name, predict_request_response_logging_config=config
        ),
        update_mask=field_mask_pb2.FieldMask(paths=[LOGGING_CONFIG_FIELD]),
    )


def list_endpoints_request(project: str, region: str, display_name: str) -> Any:
    """The ListEndpoints request that finds the endpoint the way TFX's Pusher does."""
    from google.cloud import aiplatform_v1

    return aiplatform_v1.ListEndpointsRequest(
        parent=f"projects/{project}/locations/{region}",
        filter=f'display_name="{display_name}"',
    )


def apply_request_logging(
    client: Any, project: str, region: str, display_name: str, settings: dict[str, Any]
) -> Any:
    """Sets the logging of the endpoint named `display_name` to `settings`.

    Args:
      client: an `aiplatform_v1.EndpointServiceClient` for the region.
      project: the endpoint's project.
      region: the endpoint's region.
      display_name: the endpoint's display name.
      settings: {"enabled", "sampling_rate", "bigquery_table"}.

    Returns:
      The endpoint as Vertex has it afterwards.

    Raises:
      RuntimeError: no endpoint has that display name.
    """
    request = list_endpoints_request(project, region, display_name)
    endpoints = list(client.list_endpoints(request=request))
    if not endpoints:
        raise RuntimeError(
            f"no Vertex endpoint named {display_name!r} in {request.parent}: cannot turn on"
            " its request-response logging"
        )
    endpoint = endpoints[0]
    current = endpoint.predict_request_response_logging_config
    current_table = current.bigquery_destination.output_uri if current.enabled else ""
    wanted = logging_config(settings, project, current_table)
    if current == wanted:
        _LOG.info("endpoint %s: request-response logging already as configured", endpoint.name)
        return endpoint
    updated = client.update_endpoint(request=update_logging_request(endpoint.name, wanted))
    config = updated.predict_request_response_logging_config
    if config.enabled:
        _LOG.info(
            "endpoint %s: logging %.0f%% of requests to %s",
            updated.name,
            100 * config.sampling_rate,
            config.bigquery_destination.output_uri or f"a new table in project {project}",
        )
    else:
        _LOG.info("endpoint %s: request-response logging off", updated.name)
    return updated


def find_endpoint(client: Any, project: str, region: str, display_name: str) -> Any:
    """The endpoint named `display_name` (the first, as TFX's Pusher picks it).

    Raises:
      RuntimeError: no endpoint has that display name.
    """
    request = list_endpoints_request(project, region, display_name)
    endpoints = list(client.list_endpoints(request=request))
    if not endpoints:
        raise RuntimeError(f"no Vertex endpoint named {display_name!r} in {request.parent}")
    return endpoints[0]


def models_to_undeploy(endpoint: Any, keep_previous: int) -> list[Any]:
    """The deployed models to undeploy after a deploy: all but the newest 1 + keep_previous.

    The newest deployed model (by create time) is the one just deployed; of the others the
    newest `keep_previous` stay. A model with a share of the traffic always stays.
    """
    if keep_previous < 0:
        raise ValueError(f"keep_previous must be 0 or more, not {keep_previous}")
    newest_first = sorted(
        endpoint.deployed_models, key=lambda m: m.create_time.timestamp(), reverse=True
    )
    traffic = dict(endpoint.traffic_split)
    return [m for m in newest_first[1 + keep_previous :] if not traffic.get(m.id)]


def undeploy_requests(endpoint: Any, keep_previous: int) -> list[Any]:
    """The UndeployModel requests that leave the new model and `keep_previous` earlier ones."""
    from google.cloud import aiplatform_v1

    return [
        aiplatform_v1.UndeployModelRequest(endpoint=endpoint.name, deployed_model_id=m.id)
        for m in models_to_undeploy(endpoint, keep_previous)
    ]


def undeploy_earlier_models(
    client: Any,
    project: str,
    region: str,
    display_name: str,
    keep_previous: int,
    timeout: float = 1800.0,
) -> list[str]:
    """Undeploys the earlier models of the endpoint named `display_name`.

    Args:
      client: an `aiplatform_v1.EndpointServiceClient` for the region.
      project: the endpoint's project.
      region: the endpoint's region.
      display_name: the endpoint's display name.
      keep_previous: how many earlier models stay deployed beside the newest.
      timeout: seconds to wait for each undeploy operation.

    Returns:
      The ids of the deployed models that were undeployed.
    """
    endpoint = find_endpoint(client, project, region, display_name)
    undeployed = []
    for request in undeploy_requests(endpoint, keep_previous):
        client.undeploy_model(request=request).result(timeout=timeout)
        _LOG.info("endpoint %s: undeployed model %s", endpoint.name, request.deployed_model_id)
        undeployed.append(request.deployed_model_id)
    return undeployed


def endpoint_client(region: str) -> Any:
    """The Vertex EndpointService client of `region` (needs Google Cloud credentials)."""
    from google.cloud import aiplatform_v1

    return aiplatform_v1.EndpointServiceClient(
        client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"}
    )


class Executor(vertex_pusher_executor.Executor):
    """TFX's Vertex Pusher executor, plus the endpoint's request-response logging."""

    def Do(  # noqa: N802 - TFX's executor interface
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        """Deploys a blessed model (TFX), then sets the endpoint's logging."""
        super().Do(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if model_push.get_int_custom_property(_PUSHED_KEY) != 1:
            return  # not blessed: nothing was deployed
        custom_config = json_utils.loads(exec_properties.get(_CUSTOM_CONFIG_KEY, "null")) or {}
        settings = custom_config.get(REQUEST_LOGGING_KEY)
        keep_previous = custom_config.get(KEEP_PREVIOUS_KEY)
        if settings is None and keep_previous is None:
            return
        serving_args = custom_config[vertex_keys.SERVING_ARGS_KEY]
        project = serving_args.get("project_id") or serving_args["project"]
        region = custom_config[vertex_keys.VERTEX_REGION_KEY]
        name = serving_args["endpoint_name"]
        client = endpoint_client(region)
        if settings is not None:
            try:
                apply_request_logging(client, project, region, name, settings)
            except Exception as e:  # re-raised: the step fails, saying the model is deployed
                raise RuntimeError(
                    f"the model was deployed to endpoint {name!r}, but setting its"
                    f" request-response logging failed (rerun the pipeline to retry): {e}"
                ) from e
        if keep_previous is not None:
            try:
                undeploy_earlier_models(client, project, region, name, int(keep_previous))
            except Exception as e:  # re-raised: the step fails, saying the model is deployed
                raise RuntimeError(
                    f"the model was deployed to endpoint {name!r}, but undeploying its earlier"
                    f" models failed (they stay deployed and billed; rerun the pipeline or"
                    f" undeploy them in the console): {e}"
                ) from e


class Pusher(vertex_pusher_component.Pusher):
    """TFX's Vertex Pusher component with the executor above."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
