"""The stack's Lambda functions, built one way: own role, own log group, arm64, python3.12.

The API, its pre-traffic hook, the bulk batch handler, the drift watch and the rollout check
all differ only in code, handler, size, environment and whether they are traced; the role that
may write only to its own log group, the runtime and their cdk-nag reasons live here once.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra import constants as c
from infra.constructs.log_groups import log_group
from infra.nag import acknowledge

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64


def service_environment(service_name: str) -> dict[str, str]:
    """What Powertools and the model cache read: the service name, metrics namespace, cache."""
    return {
        c.ENV_SERVICE_NAME: service_name,
        c.ENV_METRICS_NAMESPACE: c.METRICS_NAMESPACE,
        c.ENV_CACHE_DIR: c.CACHE_DIR,
    }


def small_function(
    scope: Construct,
    construct_id: str,
    *,
    code: lambda_.Code,
    handler: str,
    memory_mb: int,
    timeout: Duration,
    environment: dict[str, str],
    log_retention_days: int,
    traced: bool = False,
    role_id: str | None = None,
    retry_attempts: int | None = None,
    reserved_concurrency: int | None = None,
    snap_start: lambda_.SnapStartConf | None = None,
) -> lambda_.Function:
    """A function with its own role, writing only to its own log group.

    Args:
        scope: the parent construct.
        construct_id: the function's id; its log group is `<id>Logs`.
        code, handler, memory_mb, timeout, environment: the function's own settings.
        log_retention_days: one of `constants.LOG_RETENTION`.
        traced: X-Ray active tracing (its actions take no resource, acknowledged here).
        role_id: the role's id, `<id>Role` unless given (kept so deployed roles keep theirs).
        retry_attempts: asynchronous retries; Lambda's default when None.
        reserved_concurrency, snap_start: for the API function.

    Returns:
        The function; grant it more through `function.role`. A replaced version is deleted
        once its deployment completes: every version holds a copy of the package, and
        Lambda's code storage per region is bounded.
    """
    logs = log_group(scope, f"{construct_id}Logs", retention_days=log_retention_days)
    role = iam.Role(
        scope,
        role_id or f"{construct_id}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
    )
    logs.grant_write(role)
    function = lambda_.Function(
        scope,
        construct_id,
        runtime=RUNTIME,
        architecture=ARCHITECTURE,
        code=code,
        handler=handler,
        memory_size=memory_mb,
        timeout=timeout,
        role=role,
        log_group=logs,
        environment=environment,
        tracing=lambda_.Tracing.ACTIVE if traced else None,
        retry_attempts=retry_attempts,
        reserved_concurrent_executions=reserved_concurrency,
        snap_start=snap_start,
        current_version_options=lambda_.VersionOptions(removal_policy=RemovalPolicy.DESTROY),
    )
    if traced:
        acknowledge(
            role,
            rule="AwsSolutions-IAM5[Resource::*]",
            reason="X-Ray's PutTraceSegments/PutTelemetryRecords support no resource-level "
            "permissions; every other statement names its resource.",
        )
    acknowledge(
        function,
        rule="AwsSolutions-L1",
        reason="python3.12 on purpose: the packages' wheels are built for it and SnapStart "
        "supports it; newer runtimes are a deliberate upgrade, not a drift.",
    )
    return function


def on_schedule(
    scope: Construct,
    function: lambda_.IFunction,
    *,
    period: Duration,
    description: str,
    retry_attempts: int,
) -> events.Rule:
    """Run `function` every `period` (EventBridge rule `Schedule`), retrying a failed start."""
    return events.Rule(
        scope,
        "Schedule",
        schedule=events.Schedule.rate(period),
        description=description,
        targets=[targets.LambdaFunction(function, retry_attempts=retry_attempts)],
    )
