"""The capture bucket: photos worth learning from, kept while someone may label them.

One private, versioned, SSE-S3, TLS-only bucket whose root is the capture store
(`wastesort.capture`): `captures/<source>/...` and `labels/<capture id>/...`. Captures are
tagged `labelled=false` when written and `labelled=true` when a label event is written; the
lifecycle rule expires the unlabelled ones after `expire_days`, and the versions they leave
behind a day later, so an unlabelled photo is really gone. Label events never expire.

Bins write their own captures only: `captures/<thing name>/*`, each object tagged
`labelled=false` (the condition makes it so: a device cannot keep a photo forever). The API
gets the capture and label prefixes when `capture` is on.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import constants as c
from infra.constructs.buckets import private_bucket
from infra.nag import acknowledge, object_wildcard_finding

NONCURRENT_DAYS = 1
"""A capture that expired (or was deleted) leaves a noncurrent version: gone a day later."""


class Captures(Construct):
    """The capture bucket, its lifecycle, and who may write what in it.

    Attributes:
        bucket: the capture store's bucket (the store is its root: `s3://<bucket>`).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        access_logs: s3.IBucket,
        expire_days: int,
        device_role: iam.IRole,
        records_expire_days: int = 30,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = private_bucket(
            self, "Bucket", access_logs=access_logs, noncurrent_days=NONCURRENT_DAYS
        )
        self.bucket.add_lifecycle_rule(
            id="ExpireUnlabelledCaptures",
            prefix=f"{c.CAPTURE_PREFIX}/",
            tag_filters={c.CAPTURE_TAG: c.CAPTURE_TAG_UNLABELLED},
            expiration=Duration.days(expire_days),
        )
        self.bucket.add_lifecycle_rule(  # the drift watch reads the last hours only
            id="ExpirePredictionRecords",
            prefix=f"{c.RECORDS_PREFIX}/",
            expiration=Duration.days(records_expire_days),
        )
        self.bucket.add_lifecycle_rule(
            id="RemoveExpiredDeleteMarkers", expired_object_delete_marker=True
        )
        own = f"{c.CAPTURE_PREFIX}/{c.THING_NAME_VARIABLE}/*"
        device_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:PutObjectTagging"],
                resources=[self.bucket.arn_for_objects(own)],
                conditions={
                    "StringEquals": {
                        f"s3:RequestObjectTag/{c.CAPTURE_TAG}": c.CAPTURE_TAG_UNLABELLED
                    },
                    "ForAllValues:StringEquals": {"s3:RequestObjectTagKeys": [c.CAPTURE_TAG]},
                },
            )
        )
        acknowledge(
            device_role,
            rule=object_wildcard_finding(self.bucket, own),
            reason="Write-only, only under captures/<the calling device's own thing name>/, "
            "and only objects tagged labelled=false (so they expire unless labelled).",
        )
        records = f"{c.RECORDS_PREFIX}/{c.THING_NAME_VARIABLE}/*"  # wastesort.records batches
        device_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"], resources=[self.bucket.arn_for_objects(records)]
            )
        )
        acknowledge(
            device_role,
            rule=object_wildcard_finding(self.bucket, records),
            reason="Write-only, only the prediction records under records/<the calling "
            "device's own thing name>/ (the drift watch reads them).",
        )

    @property
    def uri(self) -> str:
        """The capture store's URI (`API_CAPTURE_URI`)."""
        return f"s3://{self.bucket.bucket_name}"

    def grant_api(self, function: lambda_.Function, *, sample: float | None) -> None:
        """Let the API write captures and label events, read them back, and re-tag a capture
        when it is labelled; and tell it where (`API_CAPTURE_URI`, `API_CAPTURE_SAMPLE`)."""
        prefixes = [f"{c.CAPTURE_PREFIX}/*", f"{c.LABELS_PREFIX}/*"]
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:PutObjectTagging", "s3:GetObject"],
                resources=[self.bucket.arn_for_objects(p) for p in prefixes],
            )
        )
        # Listing: the label events of a capture; also what makes a missing key a 404, not a 403.
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn])
        )
        role = function.role
        assert role is not None  # Serving gives each function its own role
        for prefix in prefixes:
            acknowledge(
                role,
                rule=object_wildcard_finding(self.bucket, prefix),
                reason="The API writes and reads captures and label events under these two "
                "prefixes of the capture bucket only; keys are made by wastesort.capture.",
            )
        # Prediction records (functions/api/records.py): write-only, under records/api/ only.
        records = f"{c.RECORDS_PREFIX}/{c.API_RECORD_SOURCE}/*"
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"], resources=[self.bucket.arn_for_objects(records)]
            )
        )
        acknowledge(
            role,
            rule=object_wildcard_finding(self.bucket, records),
            reason="Write-only, only the API's batches of prediction records under records/api/; "
            "keys are made by wastesort.records.",
        )
        function.add_environment(c.ENV_CAPTURE_URI, self.uri)
        if sample is not None:
            function.add_environment(c.ENV_CAPTURE_SAMPLE, str(sample))
