"""The staged-rollout check on a schedule: `wastesort registry rollout-check` as a Lambda.

Every `rollout_check_minutes` EventBridge runs `functions.rollout.handler` from the API's package
(the same code asset). It reads the devices' heartbeats and the registry's `manifest.json`, and
may write that one object (a rollback by conditional put) and nothing else: no artifact, no
other prefix. An abort fires the `rollout-aborted` alarm on the stage's SNS topic; a failed run
(settings, access, a conflict) fires `rollout-check-errors`, since an unchecked rollout goes on.
"""

from __future__ import annotations

from typing import cast

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from functions.rollout import names as n
from infra import constants as c
from infra.config import InfraConfig
from infra.constructs.functions import on_schedule, service_environment, small_function
from infra.constructs.model_bucket import ModelBucket
from infra.constructs.monitoring import GE, AlarmSpec, Monitoring
from infra.nag import acknowledge, object_wildcard_finding

MEMORY_MB = 512
TIMEOUT = Duration.minutes(2)
HEARTBEATS = f"{c.TELEMETRY_PREFIX}/*/heartbeat.json"


class RolloutCheck(Construct):
    """Function + schedule + the `rollout-aborted` and `rollout-check-errors` alarms.

    Attributes:
        function: the rollout check.
        rule: its schedule.
        alarm: fires when a run rolled a rollout back.
        errors_alarm: fires when a run itself failed (the rollout went unguarded that period).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: InfraConfig,
        code: lambda_.Code,
        models: ModelBucket,
        telemetry: s3.IBucket,
        monitoring: Monitoring,
    ) -> None:
        super().__init__(scope, construct_id)
        period = Duration.minutes(config.rollout_check_minutes)
        self.function = small_function(
            self,
            "Function",
            role_id="Role",
            code=code,
            handler=n.HANDLER,
            memory_mb=MEMORY_MB,
            timeout=TIMEOUT,
            log_retention_days=config.log_retention_days,
            retry_attempts=0,  # the next scheduled run is the retry; a rollback is idempotent
            environment={
                n.ENV_REGISTRY_URI: f"s3://{models.bucket.bucket_name}/{models.prefix}",
                n.ENV_TELEMETRY_URI: f"s3://{telemetry.bucket_name}/{c.TELEMETRY_PREFIX}",
                n.ENV_ALIAS: config.rollout_alias,
                n.ENV_MIN_DEVICES: str(config.rollout_min_devices),
                **service_environment(n.SERVICE_NAME),
            },
        )
        role = cast("iam.Role", self.function.role)  # small_function always makes one
        self._grant(role, models=models, telemetry=telemetry)
        self.rule = on_schedule(
            self,
            self.function,
            period=period,
            description="Compare a staged rollout's cohort with the other bins; roll back if worse",
            retry_attempts=1,
        )
        aborted = cw.Metric(
            namespace=c.METRICS_NAMESPACE,
            metric_name=n.METRIC_ABORTED,
            dimensions_map={c.DIM_SERVICE: n.SERVICE_NAME, n.DIM_ALIAS: config.rollout_alias},
            statistic="Maximum",
            period=period,
        )
        self.alarm = monitoring.add_alarm(
            AlarmSpec(
                name="rollout-aborted",
                metric=aborted,
                threshold=1,
                comparison=GE,
                evaluation_periods=1,
                datapoints=1,
                description=f"The rollout check rolled {config.rollout_alias!r} back: see the "
                "alias's history (`wastesort registry history`) and docs/ops.md, 'Staged rollout'.",
            )
        )
        self.errors_alarm = monitoring.add_alarm(
            AlarmSpec(
                name="rollout-check-errors",
                metric=self.function.metric_errors(statistic="Sum", period=period),
                threshold=1,
                comparison=GE,
                evaluation_periods=1,
                datapoints=1,
                description="The rollout check itself failed: a staged rollout went unguarded "
                "this period (read its log group; docs/ops.md, 'Staged rollout').",
            )
        )

    def _grant(self, role: iam.Role, *, models: ModelBucket, telemetry: s3.IBucket) -> None:
        """Heartbeats read-only; the manifest read and (conditionally) replaced; nothing else."""
        manifest = f"{models.prefix}/manifest.json"
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[models.bucket.arn_for_objects(manifest)],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[telemetry.arn_for_objects(HEARTBEATS)]
            )
        )
        listings = ((models.bucket, [manifest]), (telemetry, [f"{c.TELEMETRY_PREFIX}/*"]))
        for bucket, prefixes in listings:
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": prefixes}},
                )
            )
        acknowledge(
            role,
            rule=object_wildcard_finding(telemetry, HEARTBEATS),
            reason="Read-only, the heartbeat object of each device (the ids are not known in "
            "advance): nothing else the devices upload.",
        )
