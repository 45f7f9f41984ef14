"""The Lambda entry point: `functions.drift.handler.handler`, on an EventBridge schedule.

Each run judges the last window of prediction records per model version and per device, reads
the fleet's heartbeats (`functions.drift.watch`), and writes the outcome as CloudWatch EMF lines
on stdout (namespace `Wastesort`, service `wastesort-drift`; names in
`functions.api.metric_names`), so no `cloudwatch:PutMetricData` permission is needed. The
imports are numpy, pydantic (the manifest), boto3 and Powertools' logger and EMF provider:
the init is timed and logged as one `cold start` line.
"""

from __future__ import annotations

import json
import os
import sys
import time

_T0 = time.perf_counter()

from datetime import UTC, datetime  # noqa: E402 - timed: the imports are the cold start
from typing import Any  # noqa: E402

from aws_lambda_powertools import Logger  # noqa: E402
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers  # noqa: E402
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (  # noqa: E402
    AmazonCloudWatchEMFProvider,
)

from functions.api.metric_names import DRIFT_SERVICE_NAME, METRICS_NAMESPACE  # noqa: E402
from functions.drift.settings import Settings  # noqa: E402
from functions.drift.watch import Emission, Outcome, WatchConfig, run  # noqa: E402
from wastesort.drift import Thresholds  # noqa: E402
from wastesort.fleet import open_store  # noqa: E402
from wastesort.registry.registry import Registry  # noqa: E402

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or DRIFT_SERVICE_NAME
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or METRICS_NAMESPACE

logger = Logger(service=SERVICE)
copy_config_to_registered_loggers(source_logger=logger, include={"wastesort", "functions"})
COLD_START = {"imports_ms": round((time.perf_counter() - _T0) * 1000, 1)}
logger.info("cold start", extra=COLD_START)


def emit(emission: Emission) -> dict[str, Any]:
    """One EMF line on stdout: the emission's metrics under its dimensions and `service`."""
    provider = AmazonCloudWatchEMFProvider(
        namespace=NAMESPACE, service=SERVICE, metric_set={}, dimension_set={}, metadata_set={}
    )
    for name, value in emission.dimensions.items():
        provider.add_dimension(name=name, value=value)
    for name, unit, value in emission.metrics:
        provider.add_metric(name=name, unit=unit, value=value)
    blob = provider.serialize_metric_set()
    sys.stdout.write(json.dumps(blob, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return blob


def watch(settings: Settings, now: datetime, time_left_s: Any = None) -> Outcome:
    """One run over the stores the settings name (tests call it with moto's S3)."""
    config = WatchConfig(
        window_hours=settings.window_hours,
        stale_minutes=settings.stale_minutes,
        max_records=settings.max_records,
        thresholds=Thresholds(**(settings.thresholds or {})),
    )
    return run(
        records=open_store(settings.records_uri) if settings.records_uri else None,
        registry=Registry(open_store(settings.registry_uri)),
        telemetry=open_store(settings.telemetry_uri) if settings.telemetry_uri else None,
        now=now,
        config=config,
        **({"time_left_s": time_left_s} if time_left_s else {}),
    )


def _now(event: dict[str, Any]) -> datetime:
    """The schedule's time (EventBridge `time`), so a retried run judges the same window."""
    raw = event.get("time") if isinstance(event, dict) else None
    if isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            logger.warning("event time %r is not ISO 8601; using the clock", raw)
    return datetime.now(UTC)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Judge, publish, log one summary line; returns the summary."""
    started = time.perf_counter()
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    outcome = watch(
        Settings.from_env(),
        _now(event),
        (lambda: remaining() / 1000) if callable(remaining) else None,
    )
    for emission in outcome.emissions:
        emit(emission)
    summary = outcome.summary()
    logger.info(
        "drift watch",
        extra={**summary, "duration_ms": round((time.perf_counter() - started) * 1000, 1)},
    )
    return summary
