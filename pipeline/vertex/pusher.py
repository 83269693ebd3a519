"""The Vertex Pusher: one Model in the Model Registry per pipeline, a version per push.

TFX's Google Cloud AI Platform Pusher uploads every blessed model as a new Model resource
(no labels, no CMEK, no parent) and deploys it, even when that very model is already serving:
with Vertex's step cache, an unchanged re-run blesses the served model against itself and
TFX would upload and deploy it again (15-20 minutes and twice the replicas while both run).
This executor keeps TFX's component spec, blessing check and PushedModel artifact, and does
the push itself through the Vertex API's service clients (`aiplatform_v1`):

1. The endpoint is found as TFX finds it (the first endpoint with the configured display
   name). If one of its deployed models is the blessed model, nothing is uploaded or
   deployed. "The same model" is the same SavedModel content: each uploaded version carries
   a digest of the SavedModel (`saved_model.pb`, the variables index, which holds a checksum
   of every variable, and the assets) in its labels and version description, so a copy at
   another URI (TFX uploads the Pusher's own copy) is recognised; a Model whose artifact_uri
   is the blessed model's serving folder matches too. A match with traffic is left as it
   is: the PushedModel is marked not pushed, with `already_serving` naming the Model
   version, as the local Pusher marks an unchanged model. A match without traffic (an
   earlier model kept by `keep_previous`) gets all the traffic back, without a deploy.
2. Otherwise the model is copied under the PushedModel artifact (as TFX does) and uploaded
   as a new version of the pipeline's Model (found by display name; created by the first
   push), with the labels (`vertex.labels` and `taxifare-pipeline=<name>`), the CMEK key
   (`vertex.encryption_key`) and the aliases `blessed` and `default`, which Vertex moves
   from the previous version (an alias names one version of a Model). A version of the
   same content uploaded before (a push whose deploy failed) is deployed again instead.
   The endpoint is created with the same labels and key if it is missing. The new version
   is deployed at `traffic_percentage` (100 unless configured) of the traffic.
3. The endpoint's request-response logging is set from `vertex.endpoint.request_logging`,
   also when nothing was deployed: Vertex's prebuilt TF Serving container writes no request
   log of this project's own, so Vertex writes a sample of the requests and responses to a
   BigQuery table, which `taxifare skew --serving-logs bq://...` reads
   (pipeline/monitoring/vertex_log.py). The endpoint is patched through `UpdateEndpoint` with
   an update mask naming only the logging config. When no table is configured, an endpoint
   that already logs keeps its table; otherwise the destination is the project alone, for
   which Vertex creates `bq://<project>.logging_<endpoint display name>_<endpoint
   id>.request_response_logging`. If setting the logging fails (a missing permission, say),
   the step fails after the deploy: the model is serving, without the configured logging,
   and the run says so.
4. After a deploy the endpoint's earlier models are undeployed, all but the newest
   `vertex.endpoint.keep_previous` of them: every deployed model holds its minimum replicas,
   billed whether it gets traffic or not. A kept model is one traffic-split change away from
   serving again; an undeployed one stays a version of the Model (storage only). A model
   that still has a share of the traffic is never undeployed.

What runs offline: every request object here and the whole executor against any
EndpointService and ModelService that speak the `aiplatform_v1` types (the stand-ins of
`taxifare rehearse`, pipeline/vertex/stand_ins.py, or services on loopback). What cannot:
the calls to a real Vertex AI, which need a Google Cloud project, credentials and the API.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Any

from tfx import types
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.extensions.google_cloud_ai_platform import constants as vertex_keys
from tfx.extensions.google_cloud_ai_platform.pusher import component as vertex_pusher_component
from tfx.extensions.google_cloud_ai_platform.pusher import executor as vertex_pusher_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, json_utils

from pipeline.components.atomic_pusher import relative_files
from pipeline.names import ALREADY_SERVING_PROPERTY
from pipeline.vertex import serving_compat
from pipeline.vertex.component_config import (
    ENCRYPTION_KEY_KEY,
    KEEP_PREVIOUS_KEY,
    LABELS_KEY,
    MODEL_DISPLAY_NAME_KEY,
    PIPELINE_LABEL,
    REQUEST_LOGGING_KEY,
)

_LOG = logging.getLogger(__name__)

# The Endpoint field the patch changes, and nothing else.
LOGGING_CONFIG_FIELD = "predict_request_response_logging_config"
_CUSTOM_CONFIG_KEY = "custom_config"
# The aliases the new version takes (Vertex moves them from the version that had them):
# "default" is the version `models/<id>` means without a version.
VERSION_ALIASES = ("blessed", "default")
# The label and the version description line that carry a version's SavedModel digest. A
# label value holds at most 63 characters: the label has the first 32 hex digits (128 bits),
# the description all 64.
DIGEST_LABEL = "taxifare-model-sha256"
_DIGEST_LABEL_DIGITS = 32
_DIGEST_DESCRIPTION = "sha256 {}"
# The serving args this executor turns into the deploy (aiplatform.Model.deploy's names);
# any other key is refused rather than silently dropped.
_SERVING_ARGS = frozenset(
    {
        "project_id",
        "project",
        "endpoint_name",
        "machine_type",
        "min_replica_count",
        "max_replica_count",
        "accelerator_type",
        "accelerator_count",
        "service_account",
        "traffic_percentage",
        "deployed_model_display_name",
    }
)
# Seconds to wait for an upload or a deploy (a deploy takes 15-20 minutes).
_OPERATION_TIMEOUT = 3600.0


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


def model_client(region: str) -> Any:
    """The Vertex ModelService client of `region` (needs Google Cloud credentials)."""
    from google.cloud import aiplatform_v1

    return aiplatform_v1.ModelServiceClient(
        client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"}
    )


def model_digest(model_path: str) -> str:
    """The sha256 of a SavedModel's content, the same for any copy of it.

    Every file's relative path and bytes count but the variables' data shards: the
    variables index holds a checksum of each variable's bytes, so the weights count
    without reading them.

    Raises:
      FileNotFoundError: `model_path` holds no saved_model.pb.
    """
    files = relative_files(model_path)
    if "saved_model.pb" not in files:
        raise FileNotFoundError(f"no SavedModel at {model_path} (saved_model.pb is missing)")
    digest = hashlib.sha256()
    for relative in files:
        if relative.startswith("variables/variables.data-"):
            continue
        with fileio.open(os.path.join(model_path, relative), "rb") as fh:
            content = fh.read()
        digest.update(f"{relative}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class PushTarget:
    """Where and how a blessed model is pushed, from the Pusher's custom_config."""

    project: str
    region: str
    endpoint_name: str
    model_display_name: str
    image: str
    labels: dict[str, str]
    encryption_key: str | None
    # aiplatform.Model.deploy's arguments: machine_type, replica counts, accelerators, ...
    deploy_args: dict[str, Any]

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any]) -> PushTarget:
        """Reads the target from custom_config (pipeline.vertex.component_config).

        Raises:
          ValueError: a required key is missing or a serving arg is unknown.
        """
        serving = dict(custom_config.get(vertex_keys.SERVING_ARGS_KEY) or {})
        if not serving:
            raise ValueError(f"'{vertex_keys.SERVING_ARGS_KEY}' is missing in 'custom_config'")
        unknown = sorted(set(serving) - _SERVING_ARGS)
        if unknown:
            raise ValueError(
                f"custom_config {vertex_keys.SERVING_ARGS_KEY}: unknown keys {unknown} (known:"
                f" {sorted(_SERVING_ARGS)})"
            )
        project = serving.pop("project_id", None) or serving.pop("project", None)
        serving.pop("project", None)
        missing = [
            key
            for key, value in (
                (f"{vertex_keys.SERVING_ARGS_KEY}.project_id", project),
                (f"{vertex_keys.SERVING_ARGS_KEY}.endpoint_name", serving.get("endpoint_name")),
                (f"{vertex_keys.SERVING_ARGS_KEY}.machine_type", serving.get("machine_type")),
                (vertex_keys.VERTEX_REGION_KEY, custom_config.get(vertex_keys.VERTEX_REGION_KEY)),
                (
                    vertex_keys.VERTEX_CONTAINER_IMAGE_URI_KEY,
                    custom_config.get(vertex_keys.VERTEX_CONTAINER_IMAGE_URI_KEY),
                ),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"custom_config lacks {missing}: the Pusher cannot deploy")
        endpoint_name = serving.pop("endpoint_name")
        return cls(
            project=project,
            region=custom_config[vertex_keys.VERTEX_REGION_KEY],
            endpoint_name=endpoint_name,
            model_display_name=custom_config.get(MODEL_DISPLAY_NAME_KEY) or endpoint_name,
            image=custom_config[vertex_keys.VERTEX_CONTAINER_IMAGE_URI_KEY],
            labels=dict(custom_config.get(LABELS_KEY) or {}),
            encryption_key=custom_config.get(ENCRYPTION_KEY_KEY) or None,
            deploy_args=serving,
        )

    @property
    def parent(self) -> str:
        """projects/<project>/locations/<region>."""
        return f"projects/{self.project}/locations/{self.region}"

    def encryption_spec(self) -> Any:
        """The `EncryptionSpec` of the CMEK key, or None (Google-managed encryption)."""
        from google.cloud import aiplatform_v1

        if not self.encryption_key:
            return None
        return aiplatform_v1.EncryptionSpec(kms_key_name=self.encryption_key)


def list_models_request(target: PushTarget) -> Any:
    """The ListModels request that finds the pipeline's Model by its display name."""
    from google.cloud import aiplatform_v1

    return aiplatform_v1.ListModelsRequest(
        parent=target.parent, filter=f'display_name="{target.model_display_name}"'
    )


def create_endpoint_request(target: PushTarget) -> Any:
    """The CreateEndpoint request of the endpoint's first push: labels and CMEK key."""
    from google.cloud import aiplatform_v1

    return aiplatform_v1.CreateEndpointRequest(
        parent=target.parent,
        endpoint=aiplatform_v1.Endpoint(
            display_name=target.endpoint_name,
            labels=target.labels,
            encryption_spec=target.encryption_spec(),
        ),
    )


def upload_request(
    target: PushTarget, artifact_uri: str, digest: str, parent_model: str | None
) -> Any:
    """The UploadModel request of a new version of the pipeline's Model.

    Args:
      target: the push target.
      artifact_uri: the SavedModel folder Vertex serves the version from.
      digest: the SavedModel's `model_digest`.
      parent_model: the pipeline's Model (projects/../models/<id>), None on the first push.
    """
    from google.cloud import aiplatform_v1

    return aiplatform_v1.UploadModelRequest(
        parent=target.parent,
        parent_model=parent_model or "",
        model=aiplatform_v1.Model(
            display_name=target.model_display_name,
            artifact_uri=artifact_uri,
            container_spec=aiplatform_v1.ModelContainerSpec(image_uri=target.image),
            labels={**target.labels, DIGEST_LABEL: digest[:_DIGEST_LABEL_DIGITS]},
            encryption_spec=target.encryption_spec(),
            version_aliases=list(VERSION_ALIASES),
            version_description=_DIGEST_DESCRIPTION.format(digest),
        ),
    )


def new_traffic_split(current: dict[str, int], percentage: int) -> dict[str, int]:
    """The endpoint's split once the new model ("0") has `percentage` of the traffic.

    The others share the rest in their current proportions (as aiplatform.Endpoint does).
    """
    if not 0 < percentage <= 100:
        raise ValueError(f"traffic_percentage must be 1 to 100, not {percentage}")
    split: dict[str, int] = {}
    rest = 100 - percentage
    if rest and current:
        total = sum(current.values()) or 1
        split = {k: int(v * rest / total) for k, v in current.items()}
        for key in list(split)[: rest - sum(split.values())]:
            split[key] += 1
    split["0"] = percentage
    return split


def deploy_request(target: PushTarget, endpoint: Any, version_name: str) -> Any:
    """The DeployModel request of a Model version on the endpoint, autoscaling as configured.

    Args:
      target: the push target.
      endpoint: the `aiplatform_v1.Endpoint` (its current traffic split is shared out).
      version_name: projects/../models/<id>@<version>.
    """
    from google.cloud import aiplatform_v1

    args = target.deploy_args
    machine = aiplatform_v1.MachineSpec(machine_type=args["machine_type"])
    if args.get("accelerator_type"):
        machine.accelerator_type = args["accelerator_type"]
        machine.accelerator_count = int(args.get("accelerator_count") or 1)
    version = version_name.rsplit("@", 1)[-1]
    return aiplatform_v1.DeployModelRequest(
        endpoint=endpoint.name,
        deployed_model=aiplatform_v1.DeployedModel(
            model=version_name,
            display_name=args.get("deployed_model_display_name")
            or f"{target.model_display_name}-v{version}",
            service_account=args.get("service_account") or "",
            dedicated_resources=aiplatform_v1.DedicatedResources(
                machine_spec=machine,
                min_replica_count=int(args.get("min_replica_count", 1)),
                max_replica_count=int(args.get("max_replica_count", 1)),
            ),
        ),
        traffic_split=new_traffic_split(
            dict(endpoint.traffic_split), int(args.get("traffic_percentage", 100))
        ),
    )


def route_traffic_request(endpoint_name: str, deployed_model_id: str) -> Any:
    """The UpdateEndpoint request that gives one deployed model all the traffic."""
    from google.cloud import aiplatform_v1
    from google.protobuf import field_mask_pb2

    return aiplatform_v1.UpdateEndpointRequest(
        endpoint=aiplatform_v1.Endpoint(name=endpoint_name, traffic_split={deployed_model_id: 100}),
        update_mask=field_mask_pb2.FieldMask(paths=["traffic_split"]),
    )


def version_name(model: Any) -> str:
    """projects/../models/<id>@<version> of a Model version."""
    return f"{model.name.split('@')[0]}@{model.version_id}"


def is_same_model(model: Any, digest: str, serving_paths: set[str]) -> bool:
    """Whether a Model version holds the SavedModel of `digest` (or is uploaded from it)."""
    return (
        model.labels.get(DIGEST_LABEL) == digest[:_DIGEST_LABEL_DIGITS]
        or _DIGEST_DESCRIPTION.format(digest) in model.version_description
        or model.artifact_uri.rstrip("/") in serving_paths
    )


def find_deployed_copy(
    models: Any, endpoint: Any, digest: str, serving_paths: set[str]
) -> tuple[Any, Any] | None:
    """The endpoint's deployment of this SavedModel and its Model version, if any.

    The deployment with the most traffic wins (then the newest).
    """
    from google.api_core import exceptions
    from google.cloud import aiplatform_v1

    traffic = dict(endpoint.traffic_split)
    candidates = sorted(
        endpoint.deployed_models,
        key=lambda m: (traffic.get(m.id, 0), m.create_time.timestamp()),
        reverse=True,
    )
    for deployed in candidates:
        name = deployed.model
        if "@" not in name and deployed.model_version_id:
            name = f"{name}@{deployed.model_version_id}"
        try:
            model = models.get_model(request=aiplatform_v1.GetModelRequest(name=name))
        except exceptions.NotFound:
            continue  # deleted from the registry while deployed: not ours to judge
        if is_same_model(model, digest, serving_paths):
            return deployed, model
    return None


def find_registered_model(models: Any, target: PushTarget) -> Any:
    """The pipeline's Model in the registry (its default version), or None before the first.

    Of several Models with the display name, the one labelled with this pipeline.
    """
    listed = list(models.list_models(request=list_models_request(target)))
    pipeline = target.labels.get(PIPELINE_LABEL)
    own = [m for m in listed if pipeline and m.labels.get(PIPELINE_LABEL) == pipeline]
    found = (own or listed or [None])[0]
    if found is not None and len(listed) > 1:
        _LOG.warning(
            "%d Models are named %r in %s: new versions go to %s",
            len(listed),
            target.model_display_name,
            target.parent,
            found.name,
        )
    return found


def find_uploaded_version(
    models: Any, model_name: str, digest: str, serving_paths: set[str]
) -> Any:
    """A version of `model_name` that holds this SavedModel already, or None."""
    from google.cloud import aiplatform_v1

    request = aiplatform_v1.ListModelVersionsRequest(name=model_name)
    for version in models.list_model_versions(request=request):
        if is_same_model(version, digest, serving_paths):
            return version
    return None


def move_aliases_request(name: str) -> Any:
    """The MergeVersionAliases request that gives version `name` the push's aliases."""
    from google.cloud import aiplatform_v1

    return aiplatform_v1.MergeVersionAliasesRequest(
        name=name, version_aliases=list(VERSION_ALIASES)
    )


def create_endpoint(endpoints: Any, target: PushTarget) -> Any:
    """Creates the configured endpoint, with the labels and the CMEK key."""
    endpoint = endpoints.create_endpoint(request=create_endpoint_request(target)).result(
        timeout=_OPERATION_TIMEOUT
    )
    _LOG.info("created endpoint %s (%s)", endpoint.name, target.endpoint_name)
    return endpoint


@dataclasses.dataclass(frozen=True)
class PushResult:
    """What a push did: deployed a new version, or found the model deployed already."""

    # "deployed": uploaded (or reused) and deployed; "serving": deployed with traffic, left
    # alone; "routed": deployed without traffic, given all of it.
    action: str
    version_name: str
    deployed_model_id: str


def push_model(
    target: PushTarget,
    model_path: str,
    archive_uri: str,
    endpoints: Any,
    models: Any,
) -> PushResult:
    """Deploys the SavedModel at `model_path` unless the endpoint serves it already.

    Args:
      target: where and how to push.
      model_path: the blessed SavedModel folder.
      archive_uri: where a pushed model is copied first (the PushedModel artifact's URI),
        and uploaded from.
      endpoints: an EndpointService client (`aiplatform_v1` types).
      models: a ModelService client (`aiplatform_v1` types).
    """
    digest = model_digest(model_path)
    serving_paths = {model_path.rstrip("/")}
    request = list_endpoints_request(target.project, target.region, target.endpoint_name)
    existing = list(endpoints.list_endpoints(request=request))
    if existing:
        match = find_deployed_copy(models, existing[0], digest, serving_paths)
        if match is not None:
            deployed, model = match
            name = version_name(model)
            if dict(existing[0].traffic_split).get(deployed.id):
                _LOG.info(
                    "endpoint %s: model already deployed as %s (%s); not deployed again",
                    existing[0].name,
                    deployed.id,
                    name,
                )
                return PushResult("serving", name, deployed.id)
            endpoints.update_endpoint(request=route_traffic_request(existing[0].name, deployed.id))
            models.merge_version_aliases(request=move_aliases_request(name))
            _LOG.info(
                "endpoint %s: model already deployed as %s (%s), without traffic; all"
                " traffic moved to it, not deployed again",
                existing[0].name,
                deployed.id,
                name,
            )
            return PushResult("routed", name, deployed.id)
    endpoint = existing[0] if existing else create_endpoint(endpoints, target)
    parent = find_registered_model(models, target)
    version = (
        find_uploaded_version(models, parent.name.split("@")[0], digest, serving_paths)
        if parent is not None
        else None
    )
    if version is not None:
        name = version_name(version)
        models.merge_version_aliases(request=move_aliases_request(name))
        _LOG.info("model %s holds this SavedModel already: deploying it, no upload", name)
    else:
        io_utils.copy_dir(src=model_path, dst=archive_uri)
        uploaded = models.upload_model(
            request=upload_request(
                target, archive_uri, digest, parent.name.split("@")[0] if parent else None
            )
        ).result(timeout=_OPERATION_TIMEOUT)
        name = f"{uploaded.model}@{uploaded.model_version_id}"
        _LOG.info("uploaded %s as %s (aliases %s)", archive_uri, name, ", ".join(VERSION_ALIASES))
    response = endpoints.deploy_model(request=deploy_request(target, endpoint, name)).result(
        timeout=_OPERATION_TIMEOUT
    )
    _LOG.info("endpoint %s: deployed %s as %s", endpoint.name, name, response.deployed_model.id)
    return PushResult("deployed", name, response.deployed_model.id)


class Executor(vertex_pusher_executor.Executor):
    """TFX's Vertex Pusher with a Model Registry version per push, no redeploy, and logging."""

    def Do(  # noqa: N802 - TFX's executor interface
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        """Deploys a blessed model unless it is deployed already, then sets the logging."""
        self._log_startup(input_dict, output_dict, exec_properties)
        custom_config = json_utils.loads(exec_properties.get(_CUSTOM_CONFIG_KEY, "null")) or {}
        if not isinstance(custom_config, dict):
            raise ValueError("custom_config in execution properties needs to be a dict")
        if not custom_config.get(vertex_keys.ENABLE_VERTEX_KEY):
            raise ValueError(
                f"this Pusher deploys to Vertex AI only: custom_config needs"
                f" {vertex_keys.ENABLE_VERTEX_KEY}=True"
            )
        target = PushTarget.from_custom_config(custom_config)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model_path = self.GetModelPath(input_dict)
        # Stops before anything is uploaded when the serving image's TensorFlow lacks an op
        # (or a dtype, an input) the model uses: the deploy would fail, or the first request.
        serving_compat.require_serving_compat(model_path, target.image)
        endpoints = endpoint_client(target.region)
        result = push_model(
            target,
            model_path,
            model_push.uri,
            endpoints,
            model_client(target.region),
        )
        if result.action == "serving":
            # As the local Pusher marks an unchanged model: not pushed, already serving.
            self._MarkNotPushed(model_push)
            model_push.set_string_custom_property(ALREADY_SERVING_PROPERTY, result.version_name)
        else:
            self._MarkPushed(
                model_push,
                pushed_destination=result.version_name,
                pushed_version=result.version_name.rsplit("@", 1)[-1],
            )
        done = {
            "deployed": f"the model was deployed to endpoint {target.endpoint_name!r}",
            "serving": f"the model is serving on endpoint {target.endpoint_name!r} (not"
            " deployed again)",
            "routed": f"all traffic of endpoint {target.endpoint_name!r} went to the model",
        }[result.action]
        settings = custom_config.get(REQUEST_LOGGING_KEY)
        if settings is not None:
            try:
                apply_request_logging(
                    endpoints, target.project, target.region, target.endpoint_name, settings
                )
            except Exception as e:  # re-raised: the step fails, saying what is serving
                raise RuntimeError(
                    f"{done}, but setting its request-response logging failed (rerun the"
                    f" pipeline to retry): {e}"
                ) from e
        keep_previous = custom_config.get(KEEP_PREVIOUS_KEY)
        if keep_previous is not None and result.action == "deployed":
            try:
                undeploy_earlier_models(
                    endpoints,
                    target.project,
                    target.region,
                    target.endpoint_name,
                    int(keep_previous),
                )
            except Exception as e:  # re-raised: the step fails, saying what is serving
                raise RuntimeError(
                    f"{done}, but undeploying its earlier models failed (they stay deployed"
                    f" and billed; rerun the pipeline or undeploy them in the console): {e}"
                ) from e


class Pusher(vertex_pusher_component.Pusher):
    """TFX's Vertex Pusher component with the executor above."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
