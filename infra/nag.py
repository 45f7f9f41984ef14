"""cdk-nag acknowledgments: one call that insists on a reason."""

from __future__ import annotations

import re

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_s3 as s3
from constructs import IConstruct


def acknowledge(scope: IConstruct, *, rule: str, reason: str) -> None:
    """Accept a cdk-nag finding on `scope` (and below), recording why.

    Args:
        scope: the construct the finding is reported on, or a parent of it.
        rule: the rule id, e.g. `AwsSolutions-S1`, or one finding, `AwsSolutions-IAM5[...]`.
        reason: why the finding is acceptable here; shown in the validation report.
    """
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def object_wildcard_finding(bucket: s3.IBucket, key_pattern: str) -> str:
    """The cdk-nag IAM5 finding id for a grant on `key_pattern` objects in `bucket`.

    cdk-nag names each wildcard finding by the resource as it appears in the template: a
    bucket of this stack by its logical id, an imported one by its ARN, and a policy variable
    `${x}` as `<x>`. Building the id here keeps each acknowledgment as narrow as its grant.

    Args:
        bucket: the bucket the grant names.
        key_pattern: the object key pattern, e.g. `registry/*`.
    """
    cfn = bucket.node.default_child
    if isinstance(cfn, s3.CfnBucket):
        arn = f"<{Stack.of(bucket).resolve(cfn.logical_id)}.Arn>"
    else:
        arn = f"arn:<AWS::Partition>:s3:::{bucket.bucket_name}"
    key = re.sub(r"\$\{([^}]+)\}", r"<\1>", key_pattern)
    return f"AwsSolutions-IAM5[Resource::{arn}/{key}]"
