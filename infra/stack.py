"""One stack per stage: the parts of the architecture, wired together."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.config import InfraConfig
from infra.constructs.api import RestApi
from infra.constructs.buckets import access_log_bucket
from infra.constructs.bulk import Bulk
from infra.constructs.captures import Captures
from infra.constructs.devices import Devices
from infra.constructs.drift import DriftWatch
from infra.constructs.log_groups import provider_log_groups
from infra.constructs.model_bucket import ModelBucket
from infra.constructs.monitoring import Monitoring
from infra.constructs.rollout import RolloutCheck
from infra.constructs.serving import Serving


class WastesortStack(Stack):
    """Registry bucket → Lambda (+ canary) → REST API, watched by alarms; devices and the
    capture bucket beside it.

    With `registry_only` it stops after the buckets and device access: a new stage's first
    step, so a model can be published before the API's first deployment replays its golden set.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: InfraConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        access_logs = access_log_bucket(self, "AccessLogs")
        self.models = ModelBucket(
            self,
            "Models",
            prefix=config.registry_prefix,
            access_logs=access_logs,
            existing_bucket_name=config.registry_bucket,
        )
        self.devices = Devices(
            self, "Devices", name=config.stack_name, models=self.models, access_logs=access_logs
        )
        self.captures = Captures(
            self,
            "Captures",
            access_logs=access_logs,
            expire_days=config.capture_expire_days,
            device_role=self.devices.role,
            records_expire_days=config.records_expire_days,
        )
        self._output(
            RegistryBucket=self.models.bucket.bucket_name,
            CaptureBucket=self.captures.bucket.bucket_name,
            RegistryPrefix=self.models.prefix,
            TelemetryBucket=self.devices.telemetry.bucket_name,
            DeviceRoleAlias=self.devices.role_alias.role_alias or "",
            DevicePolicy=self.devices.policy.policy_name or "",
        )
        if config.registry_only:
            return
        code = lambda_.Code.from_asset(str(config.package))
        self.serving = Serving(self, "Serving", config=config, code=code, models=self.models)
        if config.capture:
            self.captures.grant_api(self.serving.function, sample=config.capture_sample)
        self.bulk = Bulk(
            self, "Bulk", config=config, code=code, models=self.models, access_logs=access_logs
        )
        self._output(
            BulkStateMachineArn=self.bulk.state_machine.state_machine_arn,
            BulkInputUri=self.bulk.input_uri,
            BulkResultsUri=self.bulk.results_uri,
        )
        self.api = RestApi(self, "Api", config=config, target=self.serving.alias)
        self.monitoring = Monitoring(
            self, "Monitoring", config=config, stage=self.api.stage, serving=self.serving
        )
        for alarm in self.monitoring.canary_alarms:
            self.serving.deployment_group.add_alarm(alarm)
        self.drift = DriftWatch(
            self,
            "Drift",
            config=config,
            code=lambda_.Code.from_asset(str(config.drift_package)),
            models=self.models,
            records=self.captures.bucket,
            telemetry=self.devices.telemetry,
            monitoring=self.monitoring,
        )
        self._output(DriftLogGroup=self.drift.function.log_group.log_group_name)
        self.rollout = RolloutCheck(
            self,
            "Rollout",
            config=config,
            code=code,
            models=self.models,
            telemetry=self.devices.telemetry,
            monitoring=self.monitoring,
        )
        self._output(RolloutLogGroup=self.rollout.function.log_group.log_group_name)
        # Last: the Trigger's provider function exists only once Serving has made it.
        provider_log_groups(self, retention_days=config.log_retention_days)
        self._output(
            ApiUrl=self.api.api.url,
            ApiKeyId=self.api.api_key.key_id,
            ModelUri=self.models.uri(config.model_ref),
            AlarmTopicArn=self.monitoring.topic.topic_arn,
            Dashboard=self.monitoring.dashboard.dashboard_name,
            DeploymentGroup=self.serving.deployment_group.deployment_group_name,
            ApiLogGroup=self.serving.function.log_group.log_group_name,
            HookLogGroup=self.serving.hook.log_group.log_group_name,
        )

    def _output(self, **outputs: str) -> None:
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
