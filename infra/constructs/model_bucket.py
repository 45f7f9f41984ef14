"""The model registry bucket: created here, or an existing one imported by name."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constructs.buckets import private_bucket
from infra.nag import acknowledge, object_wildcard_finding

NONCURRENT_DAYS = 90


class ModelBucket(Construct):
    """Holds `<prefix>/manifest.json` and `<prefix>/artifacts/...`; readers get only the prefix.

    Attributes:
        bucket: the registry bucket.
        prefix: the registry root inside it (no trailing slash).
        created: False when the bucket was imported (its settings are then not ours).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        access_logs: s3.IBucket,
        existing_bucket_name: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.prefix = prefix.rstrip("/")
        self.created = existing_bucket_name is None
        self.bucket: s3.IBucket
        if existing_bucket_name:
            self.bucket = s3.Bucket.from_bucket_name(self, "Imported", existing_bucket_name)
        else:
            self.bucket = private_bucket(
                self, "Bucket", access_logs=access_logs, noncurrent_days=NONCURRENT_DAYS
            )

    def uri(self, ref: str) -> str:
        """`s3://bucket/prefix@ref`: what `wastesort.Classifier.load` takes."""
        return f"s3://{self.bucket.bucket_name}/{self.prefix}@{ref}"

    def read_statements(self) -> list[iam.PolicyStatement]:
        """Read-only access to the registry prefix and nothing else in the bucket.

        `s3:ListBucket` (limited to the prefix) lets a missing key read as 404, not 403.
        """
        return [
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[self.bucket.arn_for_objects(f"{self.prefix}/*")],
            ),
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [self.prefix, f"{self.prefix}/*"]}},
            ),
        ]

    def grant_read(self, role: iam.Role) -> None:
        """Attach `read_statements` to a role (a Lambda's, a device's)."""
        for statement in self.read_statements():
            role.add_to_policy(statement)
        acknowledge(
            role,
            rule=object_wildcard_finding(self.bucket, f"{self.prefix}/*"),
            reason="Read-only, and only the objects under the registry prefix: the manifest, "
            "the model artifacts and their golden images.",
        )
