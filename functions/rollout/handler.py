"""The rollout check on a schedule: `wastesort registry rollout-check`, run by EventBridge.

It reads the devices' heartbeats and the registry's manifest, and writes only the manifest (a
rollback, by compare-and-swap) when the rollout's cohort does worse than the rest. Its role
can do nothing else. The verdict is one structured log line; the metrics are EMF lines.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from functions.rollout import names as n
from wastesort.fleet import open_store, read_heartbeats
from wastesort.manifest import DEFAULT_ALIAS
from wastesort.registry import Registry
from wastesort.registry.rollout import Thresholds, Verdict, run_check

logger = Logger(service=n.SERVICE_NAME)
metrics = Metrics(service=n.SERVICE_NAME)


class SettingsError(ValueError):
    """The function's environment is incomplete or wrong (a deployment mistake)."""


def thresholds(env: Mapping[str, str]) -> Thresholds:
    """The documented defaults, with `ROLLOUT_MIN_DEVICES`/`ROLLOUT_STALE_MINUTES` applied."""
    defaults = Thresholds()
    try:
        min_devices = int(env.get(n.ENV_MIN_DEVICES) or defaults.min_devices)
        stale = float(env.get(n.ENV_STALE_MINUTES) or defaults.stale_minutes)
    except ValueError as exc:
        raise SettingsError(f"bad rollout threshold: {exc}") from None
    if min_devices < 1 or stale <= 0:
        raise SettingsError(f"{n.ENV_MIN_DEVICES} must be >= 1 and {n.ENV_STALE_MINUTES} > 0")
    return Thresholds(min_devices=min_devices, stale_minutes=stale)


def check(env: Mapping[str, str]) -> Verdict:
    """One run: heartbeats and manifest in, a verdict out (and a rollback on abort)."""
    missing = [k for k in (n.ENV_REGISTRY_URI, n.ENV_TELEMETRY_URI) if not env.get(k)]
    if missing:
        raise SettingsError(f"missing environment: {', '.join(missing)}")
    limits = thresholds(env)
    registry = Registry.from_uri(env[n.ENV_REGISTRY_URI])
    beats = read_heartbeats(open_store(env[n.ENV_TELEMETRY_URI]))
    alias = env.get(n.ENV_ALIAS) or DEFAULT_ALIAS
    return run_check(registry, beats, alias=alias, thresholds=limits, by=n.SERVICE_NAME)


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """EventBridge's scheduled event in, the verdict out (also logged)."""
    verdict = check(os.environ)
    metrics.add_dimension(name=n.DIM_ALIAS, value=verdict.alias)
    metrics.add_metric(name=n.METRIC_CHECKED, unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=n.METRIC_ABORTED, unit=MetricUnit.Count, value=int(verdict.rolled_back))
    if verdict.action != "none":
        cohort, rest = verdict.cohort.get("n", 0), verdict.rest.get("n", 0)
        metrics.add_metric(name=n.METRIC_COHORT, unit=MetricUnit.Count, value=cohort)
        metrics.add_metric(name=n.METRIC_REST, unit=MetricUnit.Count, value=rest)
    result = verdict.to_dict()
    if verdict.rolled_back:
        logger.warning("rollout aborted and rolled back", extra={"verdict": result})
    else:
        logger.info("rollout checked", extra={"verdict": result})
    return result
