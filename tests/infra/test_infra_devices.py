"""Bin devices: IoT role alias, least-privilege role, telemetry prefix per thing."""

from __future__ import annotations

from aws_cdk.assertions import Template
from infra_testlib import only, statements


def test_device_role_is_assumed_only_by_the_iot_credentials_provider(template: Template) -> None:
    roles = {
        k: v
        for k, v in template.find_resources("AWS::IAM::Role").items()
        if k.startswith("DevicesRole")
    }
    role = only(roles)["Properties"]
    principals = [s["Principal"] for s in role["AssumeRolePolicyDocument"]["Statement"]]
    assert principals == [{"Service": "credentials.iot.amazonaws.com"}]
    assert role["MaxSessionDuration"] == 3600
    assert "ManagedPolicyArns" not in role


def test_device_policy_reads_the_registry_and_writes_only_its_own_telemetry(
    template_json: dict,
) -> None:
    tagged = [  # the capture bucket's tagged grant: tests/infra/test_infra_captures.py
        s for s in statements(template_json, "DevicesRole") if "Condition" in s and "Tag" in str(s)
    ]
    found = [s for s in statements(template_json, "DevicesRole") if s not in tagged]
    assert sorted(s["Action"] for s in found) == ["s3:GetObject", "s3:ListBucket", "s3:PutObject"]
    get = next(s for s in found if s["Action"] == "s3:GetObject")
    assert get["Resource"]["Fn::Join"][1][0]["Fn::GetAtt"][0].startswith("ModelsBucket")
    assert get["Resource"]["Fn::Join"][1][1] == "/registry/*"
    put = next(s for s in found if s["Action"] == "s3:PutObject")
    # One statement, two places of its own (CDK merges grants of the same action): its
    # telemetry, and its prediction records in the capture bucket (wastesort.records).
    places = {
        (bucket["Fn::GetAtt"][0].rstrip("0123456789ABCDEF"), key)
        for bucket, key in (r["Fn::Join"][1] for r in put["Resource"])
    }
    assert places == {
        ("DevicesTelemetry", "/telemetry/${credentials-iot:ThingName}/*"),
        ("CapturesBucket", "/records/${credentials-iot:ThingName}/*"),
    }
    assert all(s["Effect"] == "Allow" for s in found)


def test_role_alias_and_the_certificate_policy(template: Template) -> None:
    alias_id, alias = next(iter(template.find_resources("AWS::IoT::RoleAlias").items()))
    props = alias["Properties"]
    assert props["RoleAlias"] == "wastesort-test-device"
    assert props["CredentialDurationSeconds"] == 3600
    assert props["RoleArn"]["Fn::GetAtt"][0].startswith("DevicesRole")
    policy = only(template.find_resources("AWS::IoT::Policy"))["Properties"]
    assert policy["PolicyName"] == "wastesort-test-device"
    assert policy["PolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Action": "iot:AssumeRoleWithCertificate",
            "Resource": {"Fn::GetAtt": [alias_id, "RoleAliasArn"]},
        }
    ]
