"""The API's CloudWatch metric names, namespace and dimensions: defined once, here.

The API emits them (`functions.api.observability`) and the alarms and dashboard read them
(`infra.constants`). Plain strings and no imports, so the CDK app can import this module without
pulling in FastAPI, Powertools or the TFLite runtime.
"""

SERVICE_NAME = "wastesort-api"
"""The default `service` (POWERTOOLS_SERVICE_NAME overrides it at runtime)."""
METRICS_NAMESPACE = "Wastesort"
"""The default namespace (POWERTOOLS_METRICS_NAMESPACE overrides it at runtime)."""

DIM_SERVICE = "service"
DIM_MODEL_VERSION = "model_version"
DIM_CLASS = "class"
DIM_ERROR_TYPE = "error_type"

METRIC_LATENCY = "PredictLatency"
METRIC_PREDICTIONS = "Predictions"
METRIC_UNCERTAIN = "UncertainPredictions"
METRIC_ERRORS = "PredictionErrors"
"""Failures on accepted requests only: the canary alarm rolls back on one."""
METRIC_BY_CLASS = "PredictionsByClass"
METRIC_REJECTED = "RejectedInputs"
"""Inputs refused with a 4xx problem: the caller's fault, not the model's."""
METRIC_SHED = "ShedRequests"
"""Predictions refused with 503 `overloaded` because the limit in flight was full: load, not a
failure (no alarm rolls back on it)."""
METRIC_CLIENT_ABORTS = "ClientAborts"
"""Requests whose client went away before the body arrived: the caller's doing, not a failure."""
METRIC_CAPTURE_FAILURES = "CaptureFailures"
"""Captures that could not be written (store unreachable, refused, too slow): the prediction was
answered all the same, so this is no `PredictionErrors`."""
