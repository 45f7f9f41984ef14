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
METRIC_RECORD_FAILURES = "RecordFailures"
"""Batches of prediction records that could not be written (their records are kept to retry
while there is room); never a `PredictionErrors`."""
METRIC_RECORDS_DROPPED = "RecordsDropped"
"""Prediction records shed because the bounded batch was full (a store down for long)."""

# The scheduled drift and fleet watch (functions/drift): same namespace, its own service.
DRIFT_SERVICE_NAME = "wastesort-drift"
DIM_ALIAS = "alias"
"""Beside `model_version`: the alias (`production`, ...) that serves the version, so the alarm
follows the alias whatever version it names today."""
DIM_DEVICE = "device"
METRIC_DRIFT_SCORE = "DriftScore"
"""-log10 of the smallest p-value among the report's tests, capped at 10 (2: warn level, 3: drift
level); the verdict also needs a material effect, so a high score alone is no alarm."""
METRIC_DRIFT_VERDICT = "DriftVerdict"
"""The report's verdict as a number: `DRIFT_VERDICT_VALUES`."""
DRIFT_VERDICT_VALUES = {"ok": 0, "warn": 1, "drift": 2}
METRIC_EXPECTED_ACCURACY = "ExpectedAccuracy"
"""Mean calibrated top confidence of the window: accuracy estimated without labels."""
METRIC_DRIFT_RECORDS = "Records"
METRIC_NOT_ENOUGH_DATA = "NotEnoughData"
"""1 for a version or device whose window is too small to judge (no verdict is published)."""
METRIC_DRIFT_ERRORS = "DriftErrors"
"""Versions or devices whose report failed (logged); the others are still judged."""
METRIC_DEVICE_DRIFT_VERDICT = "DeviceDriftVerdict"
METRIC_DEVICE_UNCERTAIN_SHARE = "DeviceUncertainShare"
METRIC_STALE_DEVICES = "StaleDevices"
METRIC_DEVICES = "Devices"
METRIC_DEVICES_BY_VERSION = "DevicesByVersion"
METRIC_DEVICES_BEHIND = "DevicesBehind"
