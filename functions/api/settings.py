"""The API's configuration, read once from the environment (pydantic-settings).

`MODEL_URI` and `MODEL_SHA256` are shared with the infrastructure and the pre-traffic hook, so
they carry no prefix; everything that only the API reads starts with `API_`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from wastesort.capture import DEFAULT_SAMPLE
from wastesort.classifier import default_model_uri
from wastesort.preprocess import DEFAULT_MAX_PIXELS

MAX_BODY_BYTES = 4 * 1024 * 1024
"""The default body limit. Lambda refuses a synchronous event over 6 MB (6,291,456 bytes), and
API Gateway base64-encodes a binary body into it (4/3 its size) beside the headers and request
context, so no body over about 4.5 MiB reaches the app: it fails at the gateway (a 5XX) before
the app could answer 413. 4 MiB encodes to 5.33 MiB, which leaves room for the rest."""
URL_MAX_BYTES = 6 * 1024 * 1024
"""The default for images fetched from a URL: they never travel in the Lambda event."""


class Settings(BaseSettings):
    """Every knob of the API; lists (`API_URL_ALLOWLIST`, `API_CORS_ORIGINS`) comma-separated."""

    model_config = SettingsConfigDict(
        env_prefix="API_", case_sensitive=False, extra="ignore", protected_namespaces=()
    )

    model_uri: str = Field(
        default_factory=default_model_uri,
        validation_alias=AliasChoices("MODEL_URI", "model_uri"),
        description="registry URI with optional @version/@alias, or a .tflite path",
    )
    model_sha256: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MODEL_SHA256", "model_sha256"),
        description="refuse to serve unless the model's sha256 is this",
    )
    num_threads: int | None = Field(default=None, ge=1, le=16)
    """Threads per interpreter; None: the core's default (WASTESORT_NUM_THREADS or min(4, CPUs))."""
    pool_size: int = Field(default=1, ge=1, le=64)
    """Interpreters built at most. 1 measured best under load here (bench/serving.py)."""
    model_retry_s: float = Field(default=30.0, ge=0)
    """After a failed load, try again on a request at most this often (no crash loop)."""
    max_in_flight: int | None = Field(default=None, ge=0)
    """Predictions running at once; None: `pool_size` (one per interpreter); 0: no limit (the
    behaviour before the limit, the benchmark's baseline). See functions/api/limits.py."""
    max_queue: int = Field(default=4, ge=0)
    """Predictions admitted beyond `max_in_flight` to wait; the rest are shed with 503."""
    body_timeout_s: float = Field(default=15.0, gt=0)
    """The whole request body must arrive within this many seconds, else 408."""

    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024)
    batch_max: int = Field(default=16, ge=1, le=256)
    default_top_k: int | None = Field(default=None, ge=1)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)

    url_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Hosts (`images.example.com`, or `*.example.com` for subdomains) image URLs may name;
    empty disables URL input."""
    url_max_bytes: int = Field(default=URL_MAX_BYTES, ge=1024)
    url_connect_timeout_s: float = Field(default=3.0, gt=0)
    url_read_timeout_s: float = Field(default=5.0, gt=0)
    url_total_timeout_s: float = Field(default=10.0, gt=0)

    capture_uri: str | None = None
    """Where photos worth learning from go (a folder or `s3://bucket/prefix`); None: capture is
    off and `/feedback` answers 409. See wastesort.capture."""
    capture_sample: float = Field(default=DEFAULT_SAMPLE, ge=0, le=1)
    """The fraction of decided predictions captured (every `uncertain` one is)."""
    capture_timeout_s: float = Field(default=1.0, gt=0)
    """Connect and read timeout of a capture write on S3, one attempt: on Lambda the caller
    waits for it."""

    record_uri: str | None = None
    """Where prediction records go (their `records/` prefix of a folder or `s3://bucket/prefix`);
    None: the capture store's location when capture is on, else recording is off. See
    wastesort.records and functions/api/records.py."""
    record_sample: float = Field(default=0.1, ge=0, le=1)
    """The uniformly sampled share of predictions recorded for drift reports; 0 turns it off."""
    record_batch: int = Field(default=200, ge=1, le=10_000)
    """Records written as one object at most; a full batch is written at the next request."""
    record_max_age_s: float = Field(default=60.0, ge=0)
    """A batch older than this is written at the next request, however small."""
    record_max_pending: int = Field(default=2000, ge=1, le=100_000)
    """Records waiting at most; beyond it a record is shed and counted (`RecordsDropped`)."""

    admin_key_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """API Gateway key ids (`requestContext.identity.apiKeyId`) that may review captures
    (`/captures`); a caller's key is refused with 403. See functions/api/admin.py."""
    admin_token: SecretStr | None = None
    """A token that may review captures where no API Gateway is in front (`make demo`): sent
    as `x-admin-token`, `Authorization: Bearer` or `x-api-key`. None: no token is accepted."""

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed by CORS; empty (the default) sends no CORS headers at all."""

    @field_validator("url_allowlist", "cors_origins", "admin_key_ids", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("url_allowlist")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [host.lower().rstrip(".") for host in value]
