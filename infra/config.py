"""The stack's parameters, read from CDK context and validated before any construct exists.

A typo or a bad value must stop `cdk synth` with one line that names the context key, not with
a jsii stack trace from deep inside a construct. Context comes from `cdk.json`, `-c key=value`
on the command line (always strings; pydantic coerces them) or a test's `App(context=...)`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from functions.bulk.limits import MIB, MIN_OBJECT_BYTES, max_object_bytes
from infra import constants as c
from wastesort.validation import field_errors


class ConfigError(Exception):
    """Bad or missing context; the message says which key and what to do."""


_LIST_RULES = {
    "cors_origins": (
        c.CORS_ORIGIN_PATTERN,
        "an origin is `https://host[:port]` (no path, no trailing slash) or `*`",
    ),
    "url_allowlist": (
        c.URL_HOST_PATTERN,
        "a host name (`images.example.com`), or `*.domain` for its subdomains; "
        "no scheme, port or path",
    ),
}
"""Context keys that are lists: each item's pattern and the rule its error states."""


class InfraConfig(BaseModel):
    """Everything a stage can vary. Field names are the context keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str = Field(default="dev", pattern=c.STAGE_PATTERN)
    package: Path = Path("build/lambda/arm64")
    account: str | None = Field(default=None, pattern=r"^\d{12}$")
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")

    registry_bucket: str | None = Field(default=None, pattern=c.BUCKET_PATTERN)
    """An existing bucket to import; unset creates one."""
    registry_prefix: str = Field(default="registry", pattern=c.PREFIX_PATTERN)
    registry_only: bool = False
    """Deploy only the buckets and device access: step one of a stage whose bucket the stack
    creates, so the model can be published before the API's first deployment checks it."""
    model_version: str | None = Field(default=None, pattern=c.MODEL_NAME_PATTERN)
    model_alias: str | None = Field(default=None, pattern=c.MODEL_NAME_PATTERN)
    model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    deployment: Literal["canary", "linear", "all_at_once"] = "canary"
    traffic_percent: int = Field(default=10, ge=1, le=99)
    interval_minutes: int = Field(default=5, ge=1, le=60)

    throttle_rate: float = Field(default=50.0, gt=0, le=10_000)
    throttle_burst: int = Field(default=100, ge=1, le=5_000)
    quota_per_day: int = Field(default=100_000, ge=1)

    memory_mb: int = Field(default=1024, ge=128, le=10_240)
    timeout_s: int = Field(default=20, ge=3, le=29)
    """API Gateway gives up after 29 s, so a longer Lambda timeout buys nothing."""
    reserved_concurrency: int | None = Field(default=None, ge=1)
    snapstart: bool = False
    log_retention_days: int = 30

    rollout_check_minutes: int = Field(default=15, ge=5, le=1440)
    """How often the staged-rollout check compares the cohort's bins with the rest."""
    rollout_alias: str = Field(default="production", pattern=c.MODEL_NAME_PATTERN)
    """The alias whose rollouts the check watches (and may roll back)."""
    rollout_min_devices: int = Field(default=3, ge=1, le=100_000)
    """Fresh heartbeats needed from the cohort and from the rest before any verdict."""

    cors_origins: tuple[str, ...] = ()
    """Browser origins the API answers CORS for (`API_CORS_ORIGINS`); empty: no CORS headers."""
    url_allowlist: tuple[str, ...] = ()
    """Hosts `image_url` may name (`API_URL_ALLOWLIST`); empty: URL input is off."""

    admin_key_ids: tuple[str, ...] = ()
    """API key ids (not values) that may review captures (`API_ADMIN_KEY_IDS`); see docs/ops.md."""

    waf_acl_arn: str | None = Field(default=None, pattern=c.WAF_ARN_PATTERN)
    waf_managed: bool = False

    capture: bool = False
    """The API keeps photos worth learning from in the capture bucket (`API_CAPTURE_URI`)."""
    capture_sample: float | None = Field(default=None, ge=0, le=1)
    """The API's sampled fraction of decided predictions (`API_CAPTURE_SAMPLE`); unset: the
    API's default (0.02)."""
    capture_expire_days: int = Field(default=30, ge=1, le=3650)
    """Days an unlabelled capture (tag `labelled=false`) is kept."""
    records_expire_days: int = Field(default=30, ge=1, le=3650)
    """Days a prediction record (`records/` in the capture bucket) is kept; must exceed
    `drift_window_hours`, or the watch would judge a window already expired."""

    drift_package: Path = Path("build/lambda/drift-arm64")
    """The drift function's own small package (`python -m tools.lambda_zip --package drift`)."""
    drift_schedule_minutes: int = Field(default=60, ge=5, le=1440)
    """How often the drift and fleet watch runs; also its alarms' period."""
    drift_window_hours: float = Field(default=6.0, gt=0, le=168)
    """Each run judges the prediction records of the last this many hours."""
    drift_min_records: int = Field(default=15, ge=2, le=100_000)
    """A window (version or device) with fewer records is "not enough data", never a verdict."""
    drift_alpha_warn: float = Field(default=0.01, gt=0, lt=1)
    drift_alpha_drift: float = Field(default=0.001, gt=0, lt=1)
    stale_device_minutes: int = Field(default=30, ge=5, le=10_080)
    """A bin whose last heartbeat is older is stale (the `stale-devices` alarm)."""

    bulk_input_bucket: str | None = Field(default=None, pattern=c.BUCKET_PATTERN)
    """An existing bucket whose `input/` prefix bulk jobs read; unset: the stack's bulk bucket."""
    bulk_results_bucket: str | None = Field(default=None, pattern=c.BUCKET_PATTERN)
    """An existing bucket whose `results/` prefix bulk jobs write; unset: the bulk bucket."""
    bulk_batch_size: int = Field(default=50, ge=1, le=c.BULK_MAX_BATCH)
    """Images per batch handler invocation (the Distributed Map's ItemBatcher)."""
    bulk_max_concurrency: int = Field(default=50, ge=1, le=10_000)
    """Batches in flight at once: Lambda concurrency the API shares with bulk jobs."""
    bulk_tolerated_failure_percent: float = Field(default=5.0, ge=0, le=100)
    """A bulk run fails once more than this share of its images were in failed batches."""
    bulk_memory_mb: int = Field(default=1024, ge=512, le=10_240)
    bulk_timeout_s: int = Field(default=120, ge=30, le=240)
    """Per batch; an EXPRESS child (the batch, its retries included) lives at most 5 minutes."""

    alarm_email: str | None = Field(default=None, pattern=c.EMAIL_PATTERN)
    alarm_5xx_rate: float = Field(default=0.05, gt=0, lt=1)
    alarm_p99_ms: int = Field(default=3000, ge=50)
    alarm_uncertain_ratio: float = Field(default=0.3, gt=0, lt=1)
    alarm_min_predictions: int = Field(default=20, ge=1)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cors_origins", "url_allowlist", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """`-c key=a,b` gives one string; cdk.json may give a list. Case never matters."""
        if value is None:
            return ()
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value
        return tuple(str(item).strip().lower() for item in items if str(item).strip())

    @field_validator("cors_origins", "url_allowlist")
    @classmethod
    def _each_matches(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        pattern, rule = _LIST_RULES[info.field_name]
        bad = [item for item in value if not re.match(pattern, item)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: {rule}")
        return value

    @field_validator("admin_key_ids", mode="before")
    @classmethod
    def _key_ids(cls, value: Any) -> Any:
        """Comma-separated like the other lists, but case is kept: a key id is case-sensitive."""
        if value is None:
            return ()
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value
        ids = tuple(str(item).strip() for item in items if str(item).strip())
        bad = [item for item in ids if not re.match(c.API_KEY_ID_PATTERN, item)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: an API key id is letters and digits")
        return ids

    @field_validator("log_retention_days")
    @classmethod
    def _known_retention(cls, value: int) -> int:
        if value not in c.LOG_RETENTION:
            raise ValueError(f"CloudWatch accepts one of {list(c.LOG_RETENTION)}")
        return value

    @model_validator(mode="after")
    def _one_model(self) -> InfraConfig:
        if self.model_version and self.model_alias:
            raise ValueError("set model_version or model_alias, not both")
        if not self.registry_only and not (self.model_version or self.model_alias):
            raise ValueError(
                "set exactly one of model_version (a pinned version: each change is a canary "
                "deployment) or model_alias (the API follows the alias at cold start)"
            )
        if self.capture_sample is not None and not self.capture:
            raise ValueError("capture_sample needs capture=true")
        if self.records_expire_days * 24 <= self.drift_window_hours:
            raise ValueError("records_expire_days must exceed drift_window_hours / 24")
        if self.drift_alpha_drift > self.drift_alpha_warn:
            raise ValueError("drift_alpha_drift must be at most drift_alpha_warn")
        if self.waf_acl_arn and self.waf_managed:
            raise ValueError("set waf_acl_arn (associate an existing web ACL) or waf_managed")
        return self

    @model_validator(mode="after")
    def _bulk_objects_fit(self) -> InfraConfig:
        """A batch holds its objects in memory together: a full one must still take photos."""
        limit = max_object_bytes(self.bulk_memory_mb, self.bulk_batch_size)
        if limit < MIN_OBJECT_BYTES:
            raise ValueError(
                f"bulk_batch_size {self.bulk_batch_size} leaves {limit / MIB:.1f} MiB per object "
                f"in bulk_memory_mb {self.bulk_memory_mb} (half of it for the batch's objects); "
                f"at least {MIN_OBJECT_BYTES // MIB} MiB each needs a smaller bulk_batch_size "
                "or more bulk_memory_mb"
            )
        return self

    @property
    def model_ref(self) -> str:
        """The version id or alias the API serves."""
        return self.model_version or self.model_alias or ""

    @property
    def stack_name(self) -> str:
        return f"{c.STACK_PREFIX}-{self.stage}"

    def model_uri(self, bucket_name: str) -> str:
        """`s3://bucket/prefix@ref`, the URI `wastesort.Classifier.load` takes."""
        return f"s3://{bucket_name}/{self.registry_prefix}@{self.model_ref}"

    def require_package(self) -> Path:
        """Return the Lambda package directory, or explain how to build it.

        Raises:
            ConfigError: the directory or one of the handlers is missing.
        """
        missing = [f for f in c.PACKAGE_REQUIRED_FILES if not (self.package / f).is_file()]
        if not self.package.is_dir() or missing:
            raise ConfigError(
                f"the Lambda package {str(self.package)!r} is missing or incomplete "
                f"(needs {', '.join(c.PACKAGE_REQUIRED_FILES)}): run `make package` first, "
                "or point -c package=<dir> at a built package"
            )
        return self.package

    def require_drift_package(self) -> Path:
        """Return the drift function's package directory, or explain how to build it.

        Raises:
            ConfigError: the directory or its handler is missing.
        """
        if not (self.drift_package / c.DRIFT_PACKAGE_REQUIRED_FILE).is_file():
            raise ConfigError(
                f"the drift package {str(self.drift_package)!r} is missing or incomplete "
                f"(needs {c.DRIFT_PACKAGE_REQUIRED_FILE}): run `make package` first, "
                "or point -c drift_package=<dir> at a built package"
            )
        return self.drift_package

    @classmethod
    def from_context(cls, context: dict[str, Any]) -> InfraConfig:
        """Validate the app's context.

        Args:
            context: all context values (`app.node.get_all_context()`); keys with `:` or `@`
                belong to CDK itself and are ignored.

        Raises:
            ConfigError: an unknown key, a bad value, or a missing model.
        """
        ours = {k: v for k, v in context.items() if not any(ch in k for ch in ":@/")}
        unknown = sorted(set(ours) - set(cls.model_fields))
        if unknown:
            hints = [_did_you_mean(k, list(cls.model_fields)) for k in unknown]
            raise ConfigError("unknown context key " + "; ".join(hints))
        try:
            return cls.model_validate(ours)
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def _explain(exc: ValidationError) -> str:
    """One line (cdk prints it as the synth error): the core's field messages joined."""
    return "bad CDK context: " + "; ".join(field_errors(exc))
