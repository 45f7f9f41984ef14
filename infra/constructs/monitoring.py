"""Alarms that page through SNS, the canary's alarms, and a dashboard split by model version."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from constructs import Construct

from infra import constants as c
from infra.config import InfraConfig
from infra.constructs.dashboard import build_dashboard
from infra.constructs.serving import Serving

MINUTE = Duration.minutes(1)
FIVE_MINUTES = Duration.minutes(5)
GE = cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
GT = cw.ComparisonOperator.GREATER_THAN_THRESHOLD


@dataclass(frozen=True)
class AlarmSpec:
    """One alarm: what it watches and when it fires (the runbook in docs/ops.md mirrors these)."""

    name: str
    metric: cw.IMetric
    threshold: float
    comparison: cw.ComparisonOperator
    evaluation_periods: int
    datapoints: int
    description: str


class Monitoring(Construct):
    """The stage's alarms → SNS topic (+ optional e-mail), and its dashboard.

    Attributes:
        topic: where every alarm (and its recovery) is published.
        alarms: every alarm, by short name.
        canary_alarms: the ones that watch the new version; the deployment group rolls back
            when one fires.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: InfraConfig,
        stage: apigw.Stage,
        serving: Serving,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = self._topic(config)
        self._prefix = config.stack_name
        specs = _steady_specs(config, stage, serving)
        canary = _canary_specs(config, serving)
        self.alarms = {spec.name: self._alarm(spec) for spec in [*specs, *canary]}
        self.canary_alarms = [self.alarms[spec.name] for spec in canary]
        self.dashboard = build_dashboard(
            self,
            "Dashboard",
            name=config.stack_name,
            stage=stage,
            serving=serving,
            alarms=list(self.alarms.values()),
        )

    def _topic(self, config: InfraConfig) -> sns.Topic:
        key = kms.Key(
            self,
            "TopicKey",
            enable_key_rotation=True,
            description=f"{config.stack_name}: encrypts the alarm topic",
        )
        # CloudWatch cannot publish to a topic under the AWS-managed SNS key; it needs this grant.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"{config.stack_name} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        if config.alarm_email:
            topic.add_subscription(subs.EmailSubscription(config.alarm_email))
        return topic

    def add_alarm(self, spec: AlarmSpec) -> cw.Alarm:
        """An alarm of another part (the drift watch) on the same topic, kept in `alarms`."""
        alarm = self._alarm(spec)
        self.alarms[spec.name] = alarm
        return alarm

    def _alarm(self, spec: AlarmSpec) -> cw.Alarm:
        alarm = cw.Alarm(
            self,
            spec.name,
            alarm_name=f"{self._prefix}-{spec.name}",
            alarm_description=spec.description,
            metric=spec.metric,
            threshold=spec.threshold,
            comparison_operator=spec.comparison,
            evaluation_periods=spec.evaluation_periods,
            datapoints_to_alarm=spec.datapoints,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        alarm.add_ok_action(cw_actions.SnsAction(self.topic))
        return alarm


def _emf(name: str, version: str, statistic: str, period: Duration) -> cw.Metric:
    return cw.Metric(
        namespace=c.METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={c.DIM_SERVICE: c.SERVICE_NAME, c.DIM_MODEL_VERSION: version},
        statistic=statistic,
        period=period,
    )


def _new_version(serving: Serving, name: str, statistic: str) -> cw.Metric:
    """A Lambda metric of the version being deployed, as invoked through the alias."""
    return cw.Metric(
        namespace="AWS/Lambda",
        metric_name=name,
        dimensions_map={
            "FunctionName": serving.function.function_name,
            "Resource": f"{serving.function.function_name}:{c.LIVE_ALIAS}",
            "ExecutedVersion": serving.version.version,
        },
        statistic=statistic,
        period=MINUTE,
    )


def _steady_specs(config: InfraConfig, stage: apigw.Stage, serving: Serving) -> list[AlarmSpec]:
    return [
        AlarmSpec(
            name="api-5xx-rate",
            metric=stage.metric_server_error(statistic="Average", period=MINUTE),
            threshold=config.alarm_5xx_rate,
            comparison=GT,
            evaluation_periods=5,
            datapoints=3,
            description="Share of API requests answered 5XX (API Gateway or the Lambda failed).",
        ),
        AlarmSpec(
            name="api-latency-p99",
            metric=stage.metric_latency(statistic="p99", period=MINUTE),
            threshold=config.alarm_p99_ms,
            comparison=GT,
            evaluation_periods=5,
            datapoints=3,
            description="API p99 latency (ms) over the threshold: cold starts, a slow model, S3.",
        ),
        AlarmSpec(
            name="lambda-errors",
            metric=serving.alias.metric_errors(statistic="Sum", period=MINUTE),
            threshold=1,
            comparison=GE,
            evaluation_periods=3,
            datapoints=2,
            description="The API function raised or timed out (bad input is a 4XX, not an error).",
        ),
        AlarmSpec(
            name="lambda-throttles",
            metric=serving.alias.metric_throttles(statistic="Sum", period=MINUTE),
            threshold=1,
            comparison=GE,
            evaluation_periods=5,
            datapoints=2,
            description="Lambda refused invocations: reserved or account concurrency exhausted.",
        ),
    ]


def _canary_specs(config: InfraConfig, serving: Serving) -> list[AlarmSpec]:
    specs = [
        AlarmSpec(
            name="canary-errors",
            metric=_new_version(serving, "Errors", "Sum"),
            threshold=1,
            comparison=GE,
            evaluation_periods=1,
            datapoints=1,
            description="The version being deployed raised or timed out; CodeDeploy rolls back.",
        ),
        AlarmSpec(
            name="canary-duration-p99",
            metric=_new_version(serving, "Duration", "p99"),
            threshold=config.alarm_p99_ms,
            comparison=GT,
            evaluation_periods=2,
            datapoints=2,
            description="The version being deployed is slow (p99 ms); CodeDeploy rolls back.",
        ),
    ]
    if config.model_version is None:
        return specs  # an alias names no version at synth, and EMF dimensions need one
    version = config.model_version
    ratio = cw.MathExpression(
        expression=f"IF(p >= {config.alarm_min_predictions}, u / p, 0)",
        using_metrics={
            "u": _emf(c.METRIC_UNCERTAIN, version, "Sum", FIVE_MINUTES),
            "p": _emf(c.METRIC_PREDICTIONS, version, "Sum", FIVE_MINUTES),
        },
        label=f"uncertain ratio {version}",
        period=FIVE_MINUTES,
    )
    return [
        *specs,
        AlarmSpec(
            name="uncertain-ratio",
            metric=ratio,
            threshold=config.alarm_uncertain_ratio,
            comparison=GT,
            evaluation_periods=1,
            datapoints=1,
            description=f"Share of {version}'s predictions below its uncertain threshold (at least "
            f"{config.alarm_min_predictions} predictions in 5 min): drift or a bad model.",
        ),
        AlarmSpec(
            name="canary-prediction-errors",
            metric=_emf(c.METRIC_ERRORS, version, "Sum", MINUTE),
            threshold=1,
            comparison=GE,
            evaluation_periods=1,
            datapoints=1,
            description=f"Model {version} failed on an accepted image; CodeDeploy rolls back.",
        ),
    ]
