"""The names the rollout check's infrastructure shares with its handler: plain strings, so
`infra/` imports them without Powertools or the core."""

from __future__ import annotations

HANDLER = "functions.rollout.handler.handler"
SERVICE_NAME = "wastesort-rollout"

ENV_REGISTRY_URI = "ROLLOUT_REGISTRY_URI"
"""`s3://bucket/prefix` of the registry whose manifest the check may roll back."""
ENV_TELEMETRY_URI = "ROLLOUT_TELEMETRY_URI"
"""`s3://bucket/telemetry`: the devices' `<device id>/heartbeat.json`."""
ENV_ALIAS = "ROLLOUT_ALIAS"
ENV_MIN_DEVICES = "ROLLOUT_MIN_DEVICES"
ENV_STALE_MINUTES = "ROLLOUT_STALE_MINUTES"

DIM_ALIAS = "alias"
METRIC_CHECKED = "RolloutChecks"
METRIC_ABORTED = "RolloutAborted"
"""1 when a run rolled the alias back (the `rollout-aborted` alarm watches it)."""
METRIC_COHORT = "RolloutCohortDevices"
METRIC_REST = "RolloutOtherDevices"
