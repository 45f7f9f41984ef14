"""Bin devices: read the registry, write their own telemetry, and hold no long-lived AWS keys.

A device authenticates with its X.509 certificate to the AWS IoT credentials provider, which
exchanges it (through the role alias) for short-lived credentials of `role`. The role's write
permission names `${credentials-iot:ThingName}`, so each device can write only under
`telemetry/<its thing name>/`; docs/ops.md shows how a device is enrolled.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import constants as c
from infra.constructs.buckets import private_bucket
from infra.constructs.model_bucket import ModelBucket
from infra.nag import acknowledge, object_wildcard_finding

CREDENTIAL_SECONDS = 3600
TELEMETRY_NONCURRENT_DAYS = 30


class Devices(Construct):
    """Telemetry bucket, device role, IoT role alias and the IoT policy for device certificates.

    Attributes:
        telemetry: the bucket devices write to, under `telemetry/<thing name>/`.
        role: what a device's temporary credentials may do.
        role_alias: the name devices ask the credentials provider for.
        policy: attach it to each device certificate.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        models: ModelBucket,
        access_logs: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        self.telemetry = private_bucket(
            self, "Telemetry", access_logs=access_logs, noncurrent_days=TELEMETRY_NONCURRENT_DAYS
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(c.IOT_CREDENTIALS_PRINCIPAL),
            max_session_duration=Duration.seconds(CREDENTIAL_SECONDS),
            description="Bin devices, through the IoT credentials provider",
        )
        models.grant_read(self.role)
        own_prefix = f"{c.TELEMETRY_PREFIX}/{c.THING_NAME_VARIABLE}/*"
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"], resources=[self.telemetry.arn_for_objects(own_prefix)]
            )
        )
        acknowledge(
            self.role,
            rule=object_wildcard_finding(self.telemetry, own_prefix),
            reason="Write-only, and only under telemetry/<the calling device's own thing "
            "name>/, which the IoT credentials provider fills in from the certificate.",
        )
        self.role_alias = iot.CfnRoleAlias(
            self,
            "RoleAlias",
            role_alias=f"{name}-device",
            role_arn=self.role.role_arn,
            credential_duration_seconds=CREDENTIAL_SECONDS,
        )
        self.policy = iot.CfnPolicy(
            self,
            "Policy",
            policy_name=f"{name}-device",
            policy_document={
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "iot:AssumeRoleWithCertificate",
                        "Resource": self.role_alias.attr_role_alias_arn,
                    }
                ],
            },
        )
