"""Logs, metrics and traces through Powertools for AWS Lambda, the same on Lambda and locally.

- Logs: one JSON object per line on stdout (CloudWatch Logs on Lambda), with the request id,
  the model version, the class, the confidence and the latency; never image bytes. The core's
  own loggers (`wastesort.*`) are routed through the same formatter.
- Metrics: CloudWatch EMF lines (namespace `Wastesort`, dimensions `service` and
  `model_version`), one per request, so a canary's version is comparable with production.
  `PredictionErrors` counts only failures on accepted images (the canary alarm rolls back on
  one); rejected inputs are `RejectedInputs` by `error_type`; predictions shed under load
  (`ShedRequests`) and clients gone mid-upload (`ClientAborts`) are counted apart, never as errors.
- Traces: X-Ray through Powertools' Tracer, only on Lambda and unless POWERTOOLS_TRACE_DISABLED.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

from functions.api.metric_names import (
    DIM_CLASS,
    DIM_ERROR_TYPE,
    DIM_MODEL_VERSION,
    METRIC_BY_CLASS,
    METRIC_CAPTURE_FAILURES,
    METRIC_CLIENT_ABORTS,
    METRIC_ERRORS,
    METRIC_LATENCY,
    METRIC_PREDICTIONS,
    METRIC_REJECTED,
    METRIC_SHED,
    METRIC_UNCERTAIN,
    METRICS_NAMESPACE,
    SERVICE_NAME,
)
from wastesort.scoring import UNCERTAIN

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or SERVICE_NAME
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or METRICS_NAMESPACE

logger = Logger(service=SERVICE)
copy_config_to_registered_loggers(source_logger=logger, include={"wastesort"})

_write_lock = threading.Lock()


def _emit(
    metrics: Iterable[tuple[str, str, float]], dimensions: dict[str, str]
) -> dict[str, Any] | None:
    """One EMF line with these metrics under one dimension set (thread-safe, no shared state)."""
    if is_metrics_disabled():
        return None
    provider = AmazonCloudWatchEMFProvider(
        namespace=NAMESPACE, service=SERVICE, metric_set={}, dimension_set={}, metadata_set={}
    )
    for name, value in dimensions.items():
        provider.add_dimension(name=name, value=value)
    for name, unit, value in metrics:
        provider.add_metric(name=name, unit=unit, value=value)
    blob = provider.serialize_metric_set()
    line = json.dumps(blob, separators=(",", ":")) + "\n"
    with _write_lock:
        sys.stdout.write(line)
        sys.stdout.flush()
    return blob


def record_predictions(
    version: str, predictions: Iterable[Any], latency_ms: float
) -> list[dict[str, Any]]:
    """Metrics for answered predictions: latency, count, uncertain count, count by class."""
    predictions = list(predictions)
    uncertain = sum(1 for p in predictions if p.decision == UNCERTAIN)
    base = {DIM_MODEL_VERSION: version}
    blobs = [
        _emit(
            [
                (METRIC_LATENCY, MetricUnit.Milliseconds.value, round(latency_ms, 3)),
                (METRIC_PREDICTIONS, MetricUnit.Count.value, len(predictions)),
                (METRIC_UNCERTAIN, MetricUnit.Count.value, uncertain),
            ],
            base,
        )
    ]
    by_class = Counter(p.predicted_class for p in predictions)
    for name, count in sorted(by_class.items()):
        blobs.append(
            _emit([(METRIC_BY_CLASS, MetricUnit.Count.value, count)], {**base, DIM_CLASS: name})
        )
    return [b for b in blobs if b is not None]


def record_rejected(version: str, error_type: str, count: int = 1) -> None:
    """An input refused with a 4xx problem: the caller's fault, not the model's."""
    _emit(
        [(METRIC_REJECTED, MetricUnit.Count.value, count)],
        {DIM_MODEL_VERSION: version, DIM_ERROR_TYPE: error_type},
    )


def record_failure(version: str, error_type: str) -> None:
    """A request the service failed (5xx, model unavailable): what the canary alarm counts."""
    _emit([(METRIC_ERRORS, MetricUnit.Count.value, 1)], {DIM_MODEL_VERSION: version})
    _emit(
        [(METRIC_ERRORS, MetricUnit.Count.value, 1)],
        {DIM_MODEL_VERSION: version, DIM_ERROR_TYPE: error_type},
    )


def record_shed(version: str, count: int = 1) -> None:
    """Predictions refused with 503 `overloaded`: the server was full, nothing failed."""
    _emit([(METRIC_SHED, MetricUnit.Count.value, count)], {DIM_MODEL_VERSION: version})


def record_client_abort(version: str) -> None:
    """A client that went away before its body arrived: not the service's failure."""
    _emit([(METRIC_CLIENT_ABORTS, MetricUnit.Count.value, 1)], {DIM_MODEL_VERSION: version})


def record_capture_failure(version: str) -> None:
    """A capture write that failed: the caller got its answer, the photo is lost."""
    _emit([(METRIC_CAPTURE_FAILURES, MetricUnit.Count.value, 1)], {DIM_MODEL_VERSION: version})


def record_count(metric: str, version: str, count: int = 1) -> None:
    """A count by model version, for metrics beside the answer (`RecordFailures`, ...)."""
    _emit([(metric, MetricUnit.Count.value, count)], {DIM_MODEL_VERSION: version})


# --- tracing ---------------------------------------------------------------------------------

_tracer: Any = None


def tracing_enabled() -> bool:
    on_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() in ("1", "true")
    return on_lambda and not disabled


def tracer() -> Any:
    """Powertools' Tracer (patching botocore, so the model download is traced), or None."""
    global _tracer  # noqa: PLW0603 - one tracer per process, built on first use
    if _tracer is None and tracing_enabled():
        from aws_lambda_powertools import Tracer  # noqa: PLC0415 - X-Ray SDK only when traced

        _tracer = Tracer(service=SERVICE, patch_modules=["botocore"])
    return _tracer


@contextlib.contextmanager
def subsegment(name: str, **annotations: str) -> Iterator[None]:
    """An X-Ray subsegment when tracing, else nothing."""
    active = tracer()
    if active is None:
        yield
        return
    with active.provider.in_subsegment(f"## {name}") as segment:
        for key, value in annotations.items():
            segment.put_annotation(key=key, value=value)
        yield
