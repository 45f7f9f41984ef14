"""The metric names the alarms and dashboard read are the ones the API emits: defined once in
`functions.api.metric_names`, which `infra.constants` imports without any runtime code."""

from __future__ import annotations

import json
import subprocess
import sys

from infra_testlib import ROOT

import infra.constants as c
from functions.api import metric_names, observability

EMITTED = {k: v for k, v in vars(metric_names).items() if k.isupper()}


def test_every_metric_name_infra_uses_is_one_the_api_emits():
    used = {k: v for k, v in vars(c).items() if k.startswith(("METRIC_", "DIM_"))}
    used |= {"SERVICE_NAME": c.SERVICE_NAME, "METRICS_NAMESPACE": c.METRICS_NAMESPACE}
    assert {"METRIC_UNCERTAIN", "METRIC_ERRORS", "METRIC_LATENCY", "DIM_MODEL_VERSION"} <= set(used)
    assert used == {k: EMITTED[k] for k in used}


def test_the_api_emits_under_the_same_names():
    for name in ("METRIC_LATENCY", "METRIC_PREDICTIONS", "METRIC_UNCERTAIN", "METRIC_ERRORS"):
        assert getattr(observability, name) == EMITTED[name]
    assert observability.METRIC_UNCERTAIN == "UncertainPredictions"


def test_infra_constants_pull_in_no_runtime_code():
    code = (
        "import json, sys, infra.constants\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'fastapi', 'aws_lambda_powertools', 'pydantic', 'numpy', 'wastesort', 'mangum'})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert json.loads(result.stdout) == []
