"""The predict core's batch call with a real model: a request that fails inside the model
call fails alone; the requests batched with it are answered."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.serving.config import ServeConfig
from pipeline.serving.core import PredictCore, _Job
from pipeline.serving.validation import parse_predict_request
from taxifare_modules import features as f

pytestmark = pytest.mark.slow


def test_a_failing_batch_is_retried_per_request_so_only_the_culprit_fails(model_dir, instances):
    core = PredictCore(ServeConfig(model_dir=model_dir))
    core.versions.scan(wait_until_stable=False)
    model = core.versions.current
    good = [parse_predict_request({"instances": instances[i : i + 2]}, 10) for i in (0, 4)]
    # Past validation (which refuses it) a string that cannot be encoded breaks the call.
    culprit = parse_predict_request({"instances": instances[2:3]}, 10)
    culprit.trips[0][f.COMPANY_KEY] = "\ud800"
    jobs = [_Job(r, f"id-{i}", False, 0) for i, r in enumerate([good[0], culprit, good[1]])]
    results = core._run_batch((model, f.SERVING_DEFAULT_SIGNATURE), jobs)
    assert isinstance(results[1], Exception)
    alone = [core._run_batch((model, f.SERVING_DEFAULT_SIGNATURE), [job])[0] for job in jobs[::2]]
    for batched, single in zip(results[::2], alone, strict=True):
        assert not isinstance(batched, Exception)
        np.testing.assert_allclose(batched.fares, single.fares, rtol=1e-5)
