"""Every name the infrastructure shares with the code it deploys, in one place.

The serving package, the pre-traffic hook, the EMF metrics and the device layout are defined
elsewhere; the values here must match them, so they live in one file a reviewer can diff.
"""

from __future__ import annotations

from functions.api import metric_names as _metrics
from functions.drift import settings as _drift_env

APP_NAME = "wastesort"
STACK_PREFIX = "wastesort"

# The Lambda package built by `make package` (tools/lambda_zip.py).
API_HANDLER = "functions.api.handler.handler"
HOOK_HANDLER = "functions.hooks.pre_traffic.handler"
PACKAGE_REQUIRED_FILES = (
    "functions/api/handler.py",
    "functions/hooks/pre_traffic.py",
    "functions/bulk/handler.py",
)
LIVE_ALIAS = "live"
# The drift function's own package (`python -m tools.lambda_zip --package drift`).
DRIFT_HANDLER = "functions.drift.handler.handler"
DRIFT_PACKAGE_REQUIRED_FILE = "functions/drift/handler.py"

# Environment the API reads (functions/api) and the hook reads (functions/hooks).
ENV_MODEL_URI = "MODEL_URI"
ENV_MODEL_SHA256 = "MODEL_SHA256"
ENV_SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
ENV_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
ENV_CACHE_DIR = "WASTESORT_CACHE_DIR"
ENV_TARGET_VERSION_ARN = "TARGET_VERSION_ARN"
ENV_EXPECTED_VERSION = "EXPECTED_MODEL_VERSION"
ENV_CORS_ORIGINS = "API_CORS_ORIGINS"
ENV_URL_ALLOWLIST = "API_URL_ALLOWLIST"
ENV_CAPTURE_URI = "API_CAPTURE_URI"
ENV_CAPTURE_SAMPLE = "API_CAPTURE_SAMPLE"
ENV_ADMIN_KEY_IDS = "API_ADMIN_KEY_IDS"
CACHE_DIR = "/tmp/wastesort"  # noqa: S108 - Lambda's only writable path

# The API's EMF metrics (namespace, dimensions, names), defined once beside the code that emits
# them; `metric_names` is plain strings, so no runtime code (FastAPI, Powertools) comes along.
SERVICE_NAME = _metrics.SERVICE_NAME
METRICS_NAMESPACE = _metrics.METRICS_NAMESPACE
DIM_SERVICE = _metrics.DIM_SERVICE
DIM_MODEL_VERSION = _metrics.DIM_MODEL_VERSION
METRIC_LATENCY = _metrics.METRIC_LATENCY
METRIC_PREDICTIONS = _metrics.METRIC_PREDICTIONS
METRIC_UNCERTAIN = _metrics.METRIC_UNCERTAIN
METRIC_ERRORS = _metrics.METRIC_ERRORS

# The drift and fleet watch's EMF metrics and environment (functions/drift), defined beside it.
DRIFT_SERVICE_NAME = _metrics.DRIFT_SERVICE_NAME
DIM_ALIAS = _metrics.DIM_ALIAS
DIM_DEVICE = _metrics.DIM_DEVICE
METRIC_DRIFT_VERDICT = _metrics.METRIC_DRIFT_VERDICT
METRIC_DRIFT_SCORE = _metrics.METRIC_DRIFT_SCORE
METRIC_EXPECTED_ACCURACY = _metrics.METRIC_EXPECTED_ACCURACY
METRIC_DRIFT_RECORDS = _metrics.METRIC_DRIFT_RECORDS
METRIC_NOT_ENOUGH_DATA = _metrics.METRIC_NOT_ENOUGH_DATA
METRIC_DRIFT_ERRORS = _metrics.METRIC_DRIFT_ERRORS
METRIC_DEVICE_DRIFT_VERDICT = _metrics.METRIC_DEVICE_DRIFT_VERDICT
METRIC_STALE_DEVICES = _metrics.METRIC_STALE_DEVICES
METRIC_DEVICES = _metrics.METRIC_DEVICES
METRIC_DEVICES_BY_VERSION = _metrics.METRIC_DEVICES_BY_VERSION
METRIC_DEVICES_BEHIND = _metrics.METRIC_DEVICES_BEHIND
DRIFT_VERDICT_DRIFT = _metrics.DRIFT_VERDICT_VALUES["drift"]
PRODUCTION_ALIAS = "production"
ENV_DRIFT_RECORDS_URI = _drift_env.ENV_RECORDS_URI
ENV_DRIFT_REGISTRY_URI = _drift_env.ENV_REGISTRY_URI
ENV_DRIFT_TELEMETRY_URI = _drift_env.ENV_TELEMETRY_URI
ENV_DRIFT_WINDOW_HOURS = _drift_env.ENV_WINDOW_HOURS
ENV_DRIFT_STALE_MINUTES = _drift_env.ENV_STALE_MINUTES
ENV_DRIFT_THRESHOLDS = _drift_env.ENV_THRESHOLDS
RECORDS_PREFIX = "records"
"""Prediction records (wastesort/records.py) in the capture bucket: `records/<source>/...`."""
API_RECORD_SOURCE = "api"
"""The API's records source (wastesort.capture.API_SOURCE): `records/api/...`."""

# Bulk classification (functions/bulk, infra/constructs/bulk.py): the state machine classifies
# the objects under an `input/` prefix of the bulk bucket and Step Functions writes the results
# under `results/<map run id>/` (its own `manifest.json` beside ours, `run-summary.json`).
BULK_HANDLER = "functions.bulk.handler.handler"
BULK_SERVICE_NAME = "wastesort-bulk"
BULK_INPUT_PREFIX = "input"
BULK_RESULTS_PREFIX = "results"
BULK_RUN_SUMMARY = "run-summary.json"
BULK_MAX_BATCH = 200
"""A child's output (one ~400-byte record per image) must stay under Step Functions' 256 KiB."""

# API Gateway: a type not listed here reaches Lambda as text, so an upload's bytes would be
# re-encoded before Mangum sees them. application/octet-stream is a body the API sniffs.
BINARY_MEDIA_TYPES = ("multipart/form-data", "image/*", "application/octet-stream")
# Paths API Gateway serves without an API key (the app answers every method on them): the
# interactive docs and the document they load. OPTIONS never needs a key on any path.
PUBLIC_PATHS = ("docs", "openapi.json")
# The web pages (functions/api/pages.py): `GET /` and `GET /review` and `GET /static/{proxy+}`
# pass without a key (a browser sends none on navigation); their scripts send the typed key.
PAGE_PATHS = ("review",)
STATIC_PATH = "static"
API_KEY_ID_PATTERN = r"^[A-Za-z0-9]{1,64}$"
"""An API Gateway key id (`apigateway get-api-keys` `id`, not the key's value)."""

# Bin devices: what a device may read and where it may write.
TELEMETRY_PREFIX = "telemetry"
IOT_CREDENTIALS_PRINCIPAL = "credentials.iot.amazonaws.com"
THING_NAME_VARIABLE = "${credentials-iot:ThingName}"

# Captures (wastesort/capture.py, edge/capture.py): the store is the capture bucket's root, so
# photos and records are under `captures/<source>/...` (source `api` or a thing name) and
# label events under `labels/`; a capture is tagged `labelled=false` when written and
# `labelled=true` once labelled, and the lifecycle rule expires the `false` ones.
CAPTURE_PREFIX = "captures"
LABELS_PREFIX = "labels"
CAPTURE_TAG = "labelled"
CAPTURE_TAG_UNLABELLED = "false"

# Log retention CloudWatch accepts (days) and the `aws_logs.RetentionDays` member for each.
LOG_RETENTION = {
    1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS",
    30: "ONE_MONTH", 60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS",
    150: "FIVE_MONTHS", 180: "SIX_MONTHS", 365: "ONE_YEAR", 400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS", 1827: "FIVE_YEARS",
    2192: "SIX_YEARS", 2557: "SEVEN_YEARS", 2922: "EIGHT_YEARS", 3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}  # fmt: skip

# Names as the manifest spells them (wastesort/manifest.py) and as AWS accepts them.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
STAGE_PATTERN = r"^[a-z][a-z0-9]{1,11}$"
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
PREFIX_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,200}$"
WAF_ARN_PATTERN = r"^arn:aws[a-z-]*:wafv2:[a-z0-9-]+:\d{12}:regional/webacl/[^/]+/[^/]+$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
CORS_ORIGIN_PATTERN = r"^(\*|https?://[a-z0-9.-]+(:\d{1,5})?)$"
URL_HOST_PATTERN = r"^(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*$"
