"""Every name the infrastructure shares with the code it deploys, in one place.

The serving package, the pre-traffic hook, the EMF metrics and the device layout are defined
elsewhere; the values here must match them, so they live in one file a reviewer can diff.
"""

from __future__ import annotations

from functions.api import metric_names as _metrics

APP_NAME = "wastesort"
STACK_PREFIX = "wastesort"

# The Lambda package built by `make package` (tools/lambda_zip.py).
API_HANDLER = "functions.api.handler.handler"
HOOK_HANDLER = "functions.hooks.pre_traffic.handler"
PACKAGE_REQUIRED_FILES = ("functions/api/handler.py", "functions/hooks/pre_traffic.py")
LIVE_ALIAS = "live"

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
