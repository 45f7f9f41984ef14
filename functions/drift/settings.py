"""The drift function's environment: names defined once (infra/constants.py imports them) and
read into a `WatchConfig`. Standard library only, so the CDK app can import the names."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_RECORDS_URI = "DRIFT_RECORDS_URI"
"""The store whose `records/` prefix holds the prediction records: `s3://<capture bucket>`."""
ENV_REGISTRY_URI = "DRIFT_REGISTRY_URI"
"""The model registry: `s3://<registry bucket>/<prefix>` (manifest and reference files)."""
ENV_TELEMETRY_URI = "DRIFT_TELEMETRY_URI"
"""The heartbeats: `s3://<telemetry bucket>/telemetry`."""
ENV_WINDOW_HOURS = "DRIFT_WINDOW_HOURS"
ENV_STALE_MINUTES = "DRIFT_STALE_MINUTES"
ENV_MAX_RECORDS = "DRIFT_MAX_RECORDS"
ENV_THRESHOLDS = "DRIFT_THRESHOLDS"
"""JSON object of `wastesort.drift.Thresholds` fields to override, e.g. `{"min_window": 30}`."""


class SettingsError(ValueError):
    """A bad environment value; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    records_uri: str | None
    registry_uri: str
    telemetry_uri: str | None
    window_hours: float = 6.0
    stale_minutes: float = 30.0
    max_records: int = 1000
    thresholds: dict[str, Any] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the environment.

        Raises:
            SettingsError: the registry is unset, or a number or the thresholds do not parse.
        """
        env = os.environ if env is None else env
        registry = env.get(ENV_REGISTRY_URI, "").strip()
        if not registry:
            raise SettingsError(f"{ENV_REGISTRY_URI} is not set")
        thresholds = _json(env, ENV_THRESHOLDS)
        return cls(
            records_uri=env.get(ENV_RECORDS_URI, "").strip() or None,
            registry_uri=registry,
            telemetry_uri=env.get(ENV_TELEMETRY_URI, "").strip() or None,
            window_hours=_number(env, ENV_WINDOW_HOURS, 6.0, float),
            stale_minutes=_number(env, ENV_STALE_MINUTES, 30.0, float),
            max_records=int(_number(env, ENV_MAX_RECORDS, 1000, int)),
            thresholds=thresholds,
        )


def _number(env: Mapping[str, str], name: str, default: float, kind: type) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be positive")
    return value


def _json(env: Mapping[str, str], name: str) -> dict[str, Any] | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SettingsError(f"{name} must be a JSON object")
    return value
