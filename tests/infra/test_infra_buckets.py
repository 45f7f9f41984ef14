"""The registry bucket and the access-log bucket: private, encrypted, TLS-only, logged, retained."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from infra_testlib import only


def _bucket(template: Template, prefix: str) -> tuple[str, dict[str, Any]]:
    found = {
        k: v for k, v in template.find_resources("AWS::S3::Bucket").items() if k.startswith(prefix)
    }
    resource = only(found)
    return next(iter(found)), resource


@pytest.mark.parametrize(
    ("prefix", "noncurrent_days"), [("Models", 90), ("DevicesTelemetry", 30), ("CapturesBucket", 1)]
)
def test_data_buckets_are_versioned_private_encrypted_logged_and_retained(
    template: Template, prefix: str, noncurrent_days: int
) -> None:
    _, bucket = _bucket(template, prefix)
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["UpdateReplacePolicy"] == "Retain"
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["LoggingConfiguration"]["DestinationBucketName"]["Ref"].startswith("AccessLogs")
    rules = props["LifecycleConfiguration"]["Rules"]
    assert rules[0]["NoncurrentVersionExpiration"] == {"NoncurrentDays": noncurrent_days}
    assert rules[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}


@pytest.mark.parametrize("prefix", ["Models", "DevicesTelemetry", "CapturesBucket", "AccessLogs"])
def test_every_bucket_refuses_plain_http(template: Template, prefix: str) -> None:
    name, _ = _bucket(template, prefix)
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": name},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "s3:*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_access_log_bucket_is_private_retained_and_expires(template: Template) -> None:
    _, bucket = _bucket(template, "AccessLogs")
    assert bucket["DeletionPolicy"] == "Retain"
    props = bucket["Properties"]
    assert props["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
    assert props["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 365
