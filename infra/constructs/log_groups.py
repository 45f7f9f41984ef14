"""Log groups with the stage's retention, so no log is kept forever by accident."""

from __future__ import annotations

from typing import cast

from aws_cdk import CfnResource, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import constants as c


def log_group(
    scope: Construct, construct_id: str, *, retention_days: int, name: str | None = None
) -> logs.LogGroup:
    """A log group that expires entries after `retention_days` (a value CloudWatch accepts).

    Args:
        scope: the parent construct.
        construct_id: the log group's id.
        retention_days: one of `constants.LOG_RETENTION` (validated in `infra.config`).
        name: the group's name, for a group a service writes to by a fixed name; else
            CloudFormation names it.

    Returns:
        The log group; deleted with the stack (the logs have their own retention).
    """
    return logs.LogGroup(
        scope,
        construct_id,
        log_group_name=name,
        retention=getattr(logs.RetentionDays, c.LOG_RETENTION[retention_days]),
        removal_policy=RemovalPolicy.DESTROY,
    )


def provider_log_groups(scope: Construct, *, retention_days: int) -> list[logs.LogGroup]:
    """Give each of CDK's own custom-resource provider functions (the Trigger's) a log group.

    They are plain `CfnResource`s, not `lambda.Function`s, so they take no `log_group` and
    would write to an implicit `/aws/lambda/<name>` group that never expires. Pointing their
    `LoggingConfig` at a group of ours (named by CloudFormation) also works on a stack whose
    provider already ran: a group made by name would clash with the one Lambda created then.
    Their role has AWSLambdaBasicExecutionRole, which may write to any group.

    Args:
        scope: the stack (every construct below it is searched); call it last.
        retention_days: one of `constants.LOG_RETENTION`.

    Returns:
        The log groups created, one per provider function.
    """
    groups = []
    for node in scope.node.find_all():
        if not isinstance(node, CfnResource) or isinstance(node, lambda_.CfnFunction):
            continue
        if node.cfn_resource_type != "AWS::Lambda::Function":
            continue
        parent = cast("Construct", node.node.scope)  # a resource always has a parent
        group = log_group(parent, f"{node.node.id}Logs", retention_days=retention_days)
        node.add_property_override("LoggingConfig.LogGroup", group.log_group_name)
        groups.append(group)
    return groups
