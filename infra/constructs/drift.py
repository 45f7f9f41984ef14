"""The drift and fleet watch: a small scheduled Lambda, its alarms and its dashboard rows.

Every `drift_schedule_minutes` EventBridge runs `functions.drift.handler` from its own package
(numpy, pydantic, Powertools: no Pillow, FastAPI or TFLite runtime). It may only read: the
prediction records under `records/` of the capture bucket, the registry's manifest and
reference files, and the devices' heartbeats. Its metrics are EMF log lines, so it needs no
`cloudwatch:PutMetricData`. Alarms go to the stage's SNS topic: the `production` alias's
version judged `drift`, a stale bin, and the watch itself failing.
"""

from __future__ import annotations

import json
from typing import cast

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import constants as c
from infra.config import InfraConfig
from infra.constructs.dashboard import drift_rows
from infra.constructs.functions import on_schedule, service_environment, small_function
from infra.constructs.model_bucket import ModelBucket
from infra.constructs.monitoring import GE, GT, AlarmSpec, Monitoring
from infra.nag import acknowledge, object_wildcard_finding

MEMORY_MB = 1024
"""numpy's kernel matrices (MMD on up to 500 + 500 points) want the CPU that memory buys."""
TIMEOUT = Duration.minutes(5)
REFERENCE_KEY = "artifacts/*/reference.npz"
"""Where `Registry.publish` puts a version's reference file, under the registry prefix."""


class DriftWatch(Construct):
    """Function + schedule + alarms + dashboard rows.

    Attributes:
        function: the drift and fleet watch.
        rule: its schedule.
        alarms: `drift-production`, `stale-devices`, `drift-watch-errors`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: InfraConfig,
        code: lambda_.Code,
        models: ModelBucket,
        records: s3.IBucket,
        telemetry: s3.IBucket,
        monitoring: Monitoring,
    ) -> None:
        super().__init__(scope, construct_id)
        period = Duration.minutes(config.drift_schedule_minutes)
        thresholds = {
            "min_window": config.drift_min_records,
            "alpha_warn": config.drift_alpha_warn,
            "alpha_drift": config.drift_alpha_drift,
        }
        self.function = small_function(
            self,
            "Function",
            role_id="Role",
            code=code,
            handler=c.DRIFT_HANDLER,
            memory_mb=MEMORY_MB,
            timeout=TIMEOUT,
            log_retention_days=config.log_retention_days,
            retry_attempts=1,
            environment={
                c.ENV_DRIFT_RECORDS_URI: f"s3://{records.bucket_name}",
                c.ENV_DRIFT_REGISTRY_URI: f"s3://{models.bucket.bucket_name}/{models.prefix}",
                c.ENV_DRIFT_TELEMETRY_URI: f"s3://{telemetry.bucket_name}/{c.TELEMETRY_PREFIX}",
                c.ENV_DRIFT_WINDOW_HOURS: str(config.drift_window_hours),
                c.ENV_DRIFT_STALE_MINUTES: str(config.stale_device_minutes),
                c.ENV_DRIFT_THRESHOLDS: json.dumps(thresholds, sort_keys=True),
                **service_environment(c.DRIFT_SERVICE_NAME),
            },
        )
        role = cast("iam.Role", self.function.role)  # small_function always makes one
        self._grant_reads(role, models=models, records=records, telemetry=telemetry)
        self.rule = on_schedule(
            self,
            self.function,
            period=period,
            description="Drift reports per model version and device, and the fleet watch",
            retry_attempts=2,
        )
        self.alarms = [monitoring.add_alarm(spec) for spec in _specs(config, self.function)]
        for row in drift_rows(period=period, alarms=self.alarms):
            monitoring.dashboard.add_widgets(*row)

    def _grant_reads(
        self, role: iam.Role, *, models: ModelBucket, records: s3.IBucket, telemetry: s3.IBucket
    ) -> None:
        """Read-only: records, the manifest and reference files, heartbeats; listing only
        under the records and telemetry prefixes."""
        record_objects = f"{c.RECORDS_PREFIX}/*"
        references = f"{models.prefix}/{REFERENCE_KEY}"
        heartbeats = f"{c.TELEMETRY_PREFIX}/*/heartbeat.json"
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[
                    records.arn_for_objects(record_objects),
                    models.bucket.arn_for_objects(f"{models.prefix}/manifest.json"),
                    models.bucket.arn_for_objects(references),
                    telemetry.arn_for_objects(heartbeats),
                ],
            )
        )
        for bucket, prefix in ((records, c.RECORDS_PREFIX), (telemetry, c.TELEMETRY_PREFIX)):
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{prefix}/", f"{prefix}/*"]}},
                )
            )
        why = {
            (records, record_objects): "Read-only, the prediction records (no images) under "
            "records/ of the capture bucket: the window it judges.",
            (models.bucket, references): "Read-only, each version's reference file: the "
            "baseline its records are compared with (keys made by Registry.publish).",
            (telemetry, heartbeats): "Read-only, the heartbeat object of each device: nothing "
            "else the devices upload.",
        }
        for (bucket, pattern), reason in why.items():
            acknowledge(role, rule=object_wildcard_finding(bucket, pattern), reason=reason)


def _emf(name: str, dimensions: dict[str, str], period: Duration) -> cw.Metric:
    return cw.Metric(
        namespace=c.METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={c.DIM_SERVICE: c.DRIFT_SERVICE_NAME, **dimensions},
        statistic="Maximum",
        period=period,
    )


def _specs(config: InfraConfig, function: lambda_.Function) -> list[AlarmSpec]:
    period = Duration.minutes(config.drift_schedule_minutes)
    return [
        AlarmSpec(
            name="drift-production",
            metric=_emf(c.METRIC_DRIFT_VERDICT, {c.DIM_ALIAS: c.PRODUCTION_ALIAS}, period),
            threshold=c.DRIFT_VERDICT_DRIFT,
            comparison=GE,
            evaluation_periods=1,
            datapoints=1,
            description="The version `production` serves was judged `drift` over the last "
            f"{config.drift_window_hours:g} h of prediction records (docs/ops.md, drift runbook).",
        ),
        AlarmSpec(
            name="stale-devices",
            metric=_emf(c.METRIC_STALE_DEVICES, {}, period),
            threshold=0,
            comparison=GT,
            evaluation_periods=1,
            datapoints=1,
            description=f"At least one bin sent no heartbeat for {config.stale_device_minutes} "
            "minutes (docs/ops.md, stale device runbook).",
        ),
        AlarmSpec(
            name="drift-watch-errors",
            metric=function.metric_errors(statistic="Sum", period=period),
            threshold=1,
            comparison=GE,
            evaluation_periods=1,
            datapoints=1,
            description="The drift and fleet watch itself failed: no verdicts or stale counts "
            "this period (read its log group).",
        ),
    ]
