"""The API Lambda, its `live` alias and the CodeDeploy group that shifts traffic between versions.

A new model is a new `MODEL_URI`, so a new environment, so a new Lambda version (CDK's
`current_version` hashes the configuration); CodeDeploy then runs the pre-traffic hook against
that version and, if it passes, shifts traffic by the configured canary/linear/all-at-once
schedule, rolling back when an alarm added with `deployment_group.add_alarm` fires.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack, triggers
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra import constants as c
from infra.config import InfraConfig
from infra.constructs.functions import service_environment, small_function
from infra.constructs.model_bucket import ModelBucket
from infra.nag import acknowledge

HOOK_TIMEOUT = Duration.minutes(5)


class Serving(Construct):
    """Lambda + alias `live` + deployment group + pre-traffic hook.

    Attributes:
        function: the API function.
        version: the version this synth publishes (the canary's target).
        alias: `live`, what API Gateway invokes.
        hook: the pre-traffic hook function.
        deployment_group: add the canary's alarms to it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: InfraConfig,
        code: lambda_.Code,
        models: ModelBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        model_env = {c.ENV_MODEL_URI: models.uri(config.model_ref)}
        if config.model_sha256:
            model_env[c.ENV_MODEL_SHA256] = config.model_sha256

        self.function = small_function(
            self,
            "Function",
            log_retention_days=config.log_retention_days,
            traced=True,
            code=code,
            handler=c.API_HANDLER,
            memory_mb=config.memory_mb,
            timeout=Duration.seconds(config.timeout_s),
            environment={
                **model_env,
                **service_environment(c.SERVICE_NAME),
                **_api_options(config),
            },
            reserved_concurrency=config.reserved_concurrency,
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if config.snapstart else None,
        )
        if config.snapstart:
            acknowledge(
                self.function,
                rule="@aws-cdk/aws-lambda:snapStartRequirePublish",
                reason="Every synth publishes `current_version`; alias `live` points at it.",
            )
        models.grant_read(self.function.role)  # type: ignore[arg-type]
        self.version = self.function.current_version
        self.alias = lambda_.Alias(self, "Live", alias_name=c.LIVE_ALIAS, version=self.version)

        self.hook = small_function(
            self,
            "PreTrafficHook",
            log_retention_days=config.log_retention_days,
            traced=True,
            code=code,
            handler=c.HOOK_HANDLER,
            memory_mb=512,
            timeout=HOOK_TIMEOUT,
            environment={
                **model_env,
                c.ENV_TARGET_VERSION_ARN: self.version.function_arn,
                c.ENV_EXPECTED_VERSION: config.model_version or "",
            },
        )
        models.grant_read(self.hook.role)  # type: ignore[arg-type]
        self.version.grant_invoke(self.hook)

        hook_id = self.hook.node.default_child.logical_id  # type: ignore[union-attr]
        self.deployment_group = codedeploy.LambdaDeploymentGroup(
            self,
            "Deployment",
            alias=self.alias,
            deployment_config=self._deployment_config(config),
            pre_hook=self.hook,
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
            ),
        )
        acknowledge(
            self.deployment_group,
            rule="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSCodeDeployRoleForLambdaLimited]",
            reason="CodeDeploy's own limited Lambda policy: it may only update aliases and "
            "invoke the hooks named in the deployment group.",
        )
        acknowledge(
            self.deployment_group,
            rule=f"AwsSolutions-IAM5[Resource::<{Stack.of(self).resolve(hook_id)}.Arn>:*]",
            reason="CodeDeploy invokes the pre-traffic hook; `:*` covers its versions (CDK's "
            "grant_invoke) and nothing beyond that one function.",
        )
        # CodeDeploy skips the hook when the alias is first created; run it once then instead.
        triggers.Trigger(
            self,
            "FirstDeployCheck",
            handler=self.hook,
            execute_after=[self.alias],
            execute_on_handler_change=False,
            timeout=HOOK_TIMEOUT,
        )

    def _deployment_config(self, config: InfraConfig) -> codedeploy.ILambdaDeploymentConfig:
        interval = Duration.minutes(config.interval_minutes)
        if config.deployment == "all_at_once":
            return codedeploy.LambdaDeploymentConfig.ALL_AT_ONCE
        routing: codedeploy.TrafficRouting
        if config.deployment == "linear":
            routing = codedeploy.TrafficRouting.time_based_linear(
                interval=interval, percentage=config.traffic_percent
            )
        else:
            routing = codedeploy.TrafficRouting.time_based_canary(
                interval=interval, percentage=config.traffic_percent
            )
        return codedeploy.LambdaDeploymentConfig(self, "TrafficShift", traffic_routing=routing)


def _api_options(config: InfraConfig) -> dict[str, str]:
    """The API's optional settings, only when set: an unchanged environment is no new version."""
    options = {
        c.ENV_CORS_ORIGINS: config.cors_origins,
        c.ENV_URL_ALLOWLIST: config.url_allowlist,
        c.ENV_ADMIN_KEY_IDS: config.admin_key_ids,
    }
    return {name: ",".join(values) for name, values in options.items() if values}
