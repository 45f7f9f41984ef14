"""The one way this app makes a bucket: private, encrypted, TLS-only, logged and retained."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.nag import acknowledge


def access_log_bucket(scope: Construct, construct_id: str) -> s3.Bucket:
    """The target of every other bucket's server access logs.

    Args:
        scope: the parent construct.
        construct_id: the bucket's id.

    Returns:
        A bucket with SSE-S3 (the only encryption log delivery supports) and a one-year expiry.
    """
    bucket = s3.Bucket(
        scope,
        construct_id,
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
        removal_policy=RemovalPolicy.RETAIN,
    )
    acknowledge(
        bucket,
        rule="AwsSolutions-S1",
        reason="This is the access-log target itself; logging it into itself would recurse.",
    )
    return bucket


def private_bucket(
    scope: Construct,
    construct_id: str,
    *,
    access_logs: s3.IBucket,
    noncurrent_days: int,
) -> s3.Bucket:
    """A versioned, private bucket whose old versions expire.

    Args:
        scope: the parent construct.
        construct_id: the bucket's id; also the access-log prefix.
        access_logs: where S3 writes server access logs.
        noncurrent_days: days a replaced or deleted object version is kept.

    Returns:
        The bucket, retained when the stack is deleted.
    """
    return s3.Bucket(
        scope,
        construct_id,
        versioned=True,
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=f"{construct_id.lower()}/",
        lifecycle_rules=[
            s3.LifecycleRule(
                noncurrent_version_expiration=Duration.days(noncurrent_days),
                abort_incomplete_multipart_upload_after=Duration.days(7),
            )
        ],
        removal_policy=RemovalPolicy.RETAIN,
    )
