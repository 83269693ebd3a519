"""After a deploy the Vertex Pusher undeploys the endpoint's earlier models but the newest
`keep_previous`: the request objects of the real Vertex client, and the calls on the wire to
an EndpointService on loopback."""

from __future__ import annotations

import datetime

import pytest

from pipeline.config import load_config
from pipeline.vertex import pusher
from pipeline.vertex.component_config import KEEP_PREVIOUS_KEY, pusher_custom_config
from tests.vertex.test_request_logging import (
    ENDPOINT,
    PROJECT,
    REGION,
    VERTEX,
    _EndpointService,
)

_T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def _endpoint(ids_oldest_first: list[str], traffic: dict[str, int] | None = None):
    from google.cloud import aiplatform_v1

    models = [
        aiplatform_v1.DeployedModel(
            id=model_id,
            model=f"projects/{PROJECT}/locations/{REGION}/models/m{model_id}",
            create_time=_T0 + datetime.timedelta(days=i),
        )
        for i, model_id in enumerate(ids_oldest_first)
    ]
    newest = ids_oldest_first[-1]
    return aiplatform_v1.Endpoint(
        name=ENDPOINT,
        display_name="taxifare",
        deployed_models=models[::-1][:1] + models[:-1],  # not in create order
        traffic_split=traffic if traffic is not None else {newest: 100},
    )


@pytest.mark.parametrize(
    ("keep", "undeployed"),
    [(0, ["3", "2", "1"]), (1, ["2", "1"]), (2, ["1"]), (3, []), (5, [])],
)
def test_the_new_model_and_keep_previous_earlier_ones_stay(keep, undeployed):
    from google.cloud import aiplatform_v1

    requests = pusher.undeploy_requests(_endpoint(["1", "2", "3", "4"]), keep)
    assert all(isinstance(r, aiplatform_v1.UndeployModelRequest) for r in requests)
    assert [r.deployed_model_id for r in requests] == undeployed
    assert {r.endpoint for r in requests} <= {ENDPOINT}
    # The requests survive the wire format unchanged.
    for r in requests:
        wire = aiplatform_v1.UndeployModelRequest.serialize(r)
        assert aiplatform_v1.UndeployModelRequest.deserialize(wire) == r


def test_a_model_with_traffic_is_never_undeployed():
    endpoint = _endpoint(["1", "2", "3"], traffic={"3": 90, "1": 10})
    assert [r.deployed_model_id for r in pusher.undeploy_requests(endpoint, 0)] == ["2"]
    with pytest.raises(ValueError, match="keep_previous"):
        pusher.undeploy_requests(endpoint, -1)


def test_keep_previous_reaches_the_pusher_from_the_config():
    cfg = load_config(VERTEX)
    assert pusher_custom_config(cfg.vertex, cfg.name)[KEEP_PREVIOUS_KEY] == 1
    cfg = load_config(VERTEX, ["vertex.endpoint.keep_previous=0"])
    assert pusher_custom_config(cfg.vertex, cfg.name)[KEEP_PREVIOUS_KEY] == 0


def test_undeploy_through_the_vertex_client_keeps_exactly_the_configured_models():
    svc = _EndpointService([_endpoint(["10", "11", "12", "13"])])
    try:
        done = pusher.undeploy_earlier_models(svc.client(), PROJECT, REGION, "taxifare", 1)
        assert done == ["11", "10"]
        assert [r.deployed_model_id for r in svc.undeploy_requests] == ["11", "10"]
        left = svc.endpoints[ENDPOINT].deployed_models
        assert sorted(m.id for m in left) == ["12", "13"]
        # A second push-time call finds nothing more to undeploy.
        assert pusher.undeploy_earlier_models(svc.client(), PROJECT, REGION, "taxifare", 1) == []
        with pytest.raises(RuntimeError, match="no Vertex endpoint named 'nope'"):
            pusher.undeploy_earlier_models(svc.client(), PROJECT, REGION, "nope", 1)
    finally:
        svc.server.stop(grace=None)
