"""The scheduled rollout check: the API's code asset, a rate schedule from context, a role that
reads heartbeats and reads/writes the registry's manifest only, and an alarm on an abort.
cdk-nag runs inside every synth here (a finding fails it)."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match, Template
from infra_testlib import only, statements

from functions.rollout import names as n
from tests.infra.conftest import synth


def _function(template: Template) -> tuple[str, dict[str, Any]]:
    found = template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": n.HANDLER}})
    assert len(found) == 1, sorted(found)
    return next(iter(found.items()))


def test_the_check_runs_from_the_api_package_with_its_settings(template: Template) -> None:
    _, function = _function(template)
    props = function["Properties"]
    api = only(
        template.find_resources(
            "AWS::Lambda::Function", {"Properties": {"Handler": "functions.api.handler.handler"}}
        )
    )
    assert props["Code"] == api["Properties"]["Code"]  # the same asset
    env = props["Environment"]["Variables"]
    assert env[n.ENV_ALIAS] == "production"
    assert env[n.ENV_MIN_DEVICES] == "3"
    assert env[n.ENV_TELEMETRY_URI]["Fn::Join"][1][-1] == "/telemetry"
    assert env[n.ENV_REGISTRY_URI]["Fn::Join"][1][-1] == "/registry"
    assert env["POWERTOOLS_SERVICE_NAME"] == n.SERVICE_NAME


def test_every_15_minutes_by_default(template: Template) -> None:
    function_id, _ = _function(template)
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(15 minutes)",
            "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [function_id, "Arn"]}})],
        },
    )


def test_the_role_writes_the_manifest_and_nothing_else(template_json: dict) -> None:
    found = statements(template_json, "RolloutRole")
    writes = [s for s in found if "s3:PutObject" in s["Action"]]
    (write,) = writes
    assert sorted(write["Action"]) == ["s3:GetObject", "s3:PutObject"]
    bucket, key = write["Resource"]["Fn::Join"][1]
    assert bucket["Fn::GetAtt"][0].startswith("ModelsBucket")
    assert key == "/registry/manifest.json"
    reads = [s for s in found if s["Action"] == "s3:GetObject"]
    heartbeats = [r["Resource"]["Fn::Join"][1][1] for r in reads]
    assert heartbeats == ["/telemetry/*/heartbeat.json"]
    s3_actions = {a for s in found for a in _actions(s) if a.startswith("s3:")}
    assert s3_actions == {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}
    listings = [s for s in found if s["Action"] == "s3:ListBucket"]
    assert sorted(str(s["Condition"]["StringLike"]["s3:prefix"]) for s in listings) == [
        "['registry/manifest.json']",
        "['telemetry/*']",
    ]


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return actions if isinstance(actions, list) else [actions]


def test_an_abort_alarms_on_the_stage_topic(template: Template) -> None:
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "wastesort-test-rollout-aborted",
            "MetricName": n.METRIC_ABORTED,
            "Namespace": "Wastesort",
            "Threshold": 1,
            "Dimensions": Match.array_with([{"Name": n.DIM_ALIAS, "Value": "production"}]),
            "AlarmActions": Match.any_value(),
        },
    )


def test_a_failed_check_alarms_on_the_stage_topic(template: Template) -> None:
    """A run that fails (settings, AccessDenied, a conflict) leaves the rollout unguarded."""
    function_id, _ = _function(template)
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "wastesort-test-rollout-check-errors",
            "MetricName": "Errors",
            "Namespace": "AWS/Lambda",
            "Statistic": "Sum",
            "Period": 15 * 60,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function_id}}],
            "AlarmActions": Match.any_value(),
        },
    )


def test_schedule_and_alias_come_from_context(context: dict, tmp_path) -> None:
    custom = {
        **context,
        "rollout_check_minutes": "30",
        "rollout_alias": "bins",
        "rollout_min_devices": "10",
    }
    other = Template.from_json(synth(custom, tmp_path / "cdk.out"))
    other.has_resource_properties("AWS::Events::Rule", {"ScheduleExpression": "rate(30 minutes)"})
    _, function = _function(other)
    env = function["Properties"]["Environment"]["Variables"]
    assert (env[n.ENV_ALIAS], env[n.ENV_MIN_DEVICES]) == ("bins", "10")
