"""Log groups with the stage's retention, so no log is kept forever by accident."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import constants as c


def log_group(scope: Construct, construct_id: str, *, retention_days: int) -> logs.LogGroup:
    """A log group that expires entries after `retention_days` (a value CloudWatch accepts).

    Args:
        scope: the parent construct.
        construct_id: the log group's id.
        retention_days: one of `constants.LOG_RETENTION` (validated in `infra.config`).

    Returns:
        The log group; deleted with the stack (the logs have their own retention).
    """
    return logs.LogGroup(
        scope,
        construct_id,
        retention=getattr(logs.RetentionDays, c.LOG_RETENTION[retention_days]),
        removal_policy=RemovalPolicy.DESTROY,
    )
