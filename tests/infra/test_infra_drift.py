"""The drift and fleet watch: its own small function on a schedule, read-only access to exactly
records, manifest + reference files and heartbeats, alarms on the existing topic, dashboard rows;
cdk-nag runs inside every synth here (a finding fails it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from infra_testlib import only, statements

from infra import constants as c
from infra.app import build_app
from infra.config import ConfigError


def _function(template: Template) -> dict[str, Any]:
    return only(
        template.find_resources(
            "AWS::Lambda::Function", {"Properties": {"Handler": c.DRIFT_HANDLER}}
        )
    )


def _rule(template: Template) -> dict[str, Any]:
    found = template.find_resources("AWS::Events::Rule")
    return only({k: v for k, v in found.items() if k.startswith("DriftSchedule")})["Properties"]


def _alarm(template_json: dict, suffix: str) -> dict[str, Any]:
    found = [
        r["Properties"]
        for r in template_json["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and str(r["Properties"].get("AlarmName", "")).endswith(suffix)
    ]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def tuned(context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict:
    ctx = {
        **context,
        "drift_schedule_minutes": "15",
        "drift_window_hours": "2",
        "stale_device_minutes": "45",
        "drift_min_records": "40",
    }
    app, stack = build_app(ctx, outdir=str(tmp_path_factory.mktemp("drift.out")))
    return app.synth().get_stack_by_name(stack.stack_name).template


def test_the_function_runs_its_own_package_on_arm64(template: Template) -> None:
    props = _function(template)["Properties"]
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["arm64"]
    env = props["Environment"]["Variables"]
    assert env[c.ENV_SERVICE_NAME] == c.DRIFT_SERVICE_NAME
    assert env[c.ENV_DRIFT_WINDOW_HOURS] == "6.0"
    assert env[c.ENV_DRIFT_STALE_MINUTES] == "30"
    assert json.loads(env[c.ENV_DRIFT_THRESHOLDS]) == {
        "alpha_drift": 0.001,
        "alpha_warn": 0.01,
        "min_window": 15,
    }
    assert env[c.ENV_DRIFT_TELEMETRY_URI]["Fn::Join"][1][-1] == f"/{c.TELEMETRY_PREFIX}"
    assert "TracingConfig" not in props  # no X-Ray: no wildcard permission to grant


def test_the_schedule_invokes_it_hourly_by_default(template: Template) -> None:
    rule = _rule(template)
    assert rule["ScheduleExpression"] == "rate(1 hour)"
    assert rule["State"] == "ENABLED"
    target = rule["Targets"][0]
    assert target["Arn"]["Fn::GetAtt"][0].startswith("DriftFunction")
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {"Principal": "events.amazonaws.com", "FunctionName": Match.any_value()},
    )


def test_the_role_only_reads_records_references_and_heartbeats(template_json: dict) -> None:
    found = statements(template_json, "DriftRole")
    text = json.dumps(found)
    actions = sorted(
        {a for s in found for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    )
    assert set(actions) <= {
        "s3:GetObject",
        "s3:ListBucket",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    assert "cloudwatch:PutMetricData" not in text and "s3:PutObject" not in text
    assert all(s["Resource"] != "*" for s in found)
    reads = next(s for s in found if s["Action"] == "s3:GetObject")
    keys = sorted(r["Fn::Join"][1][-1] for r in reads["Resource"])
    assert keys == [
        "/records/*",
        "/registry/artifacts/*/reference.npz",
        "/registry/manifest.json",
        "/telemetry/*/heartbeat.json",
    ]
    lists = [s for s in found if s["Action"] == "s3:ListBucket"]
    assert sorted(s["Condition"]["StringLike"]["s3:prefix"][0] for s in lists) == [
        "records/",
        "telemetry/",
    ]


def test_devices_may_write_their_own_records(template_json: dict) -> None:
    grants = [s for s in statements(template_json, "DevicesRole") if "/records/" in json.dumps(s)]
    assert len(grants) == 1  # CDK merges it with the telemetry write: same action, no condition
    assert grants[0]["Action"] == "s3:PutObject" and "Condition" not in grants[0]
    resources = grants[0]["Resource"]
    keys = [
        r["Fn::Join"][1][-1] for r in (resources if isinstance(resources, list) else [resources])
    ]
    assert "/records/${credentials-iot:ThingName}/*" in keys
    assert all(k.endswith("/${credentials-iot:ThingName}/*") for k in keys)


def test_alarms_on_production_drift_stale_devices_and_the_watch_go_to_the_topic(
    template_json: dict,
) -> None:
    drift = _alarm(template_json, "-drift-production")
    assert drift["MetricName"] == c.METRIC_DRIFT_VERDICT
    assert drift["Namespace"] == c.METRICS_NAMESPACE
    assert {d["Name"]: d["Value"] for d in drift["Dimensions"]} == {
        c.DIM_SERVICE: c.DRIFT_SERVICE_NAME,
        c.DIM_ALIAS: "production",
    }
    assert drift["Threshold"] == 2
    assert drift["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert drift["Period"] == 3600
    assert drift["TreatMissingData"] == "notBreaching"  # no records: no verdict, no alarm
    stale = _alarm(template_json, "-stale-devices")
    assert stale["MetricName"] == c.METRIC_STALE_DEVICES
    assert stale["Threshold"] == 0 and stale["ComparisonOperator"] == "GreaterThanThreshold"
    watch = _alarm(template_json, "-drift-watch-errors")
    assert watch["MetricName"] == "Errors"
    for alarm in (drift, stale, watch):
        assert alarm["AlarmActions"] == alarm["OKActions"]
        assert alarm["AlarmActions"][0]["Ref"].startswith("MonitoringAlarmTopic")


def test_the_dashboard_has_the_drift_and_fleet_rows(template_json: dict) -> None:
    dashboard = only(
        {
            k: v
            for k, v in template_json["Resources"].items()
            if v["Type"] == "AWS::CloudWatch::Dashboard"
        }
    )
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for text in (
        "Drift verdict by model_version",
        f'MetricName=\\\\\\"{c.METRIC_DRIFT_VERDICT}\\\\\\"',
        c.METRIC_EXPECTED_ACCURACY,
        c.METRIC_DEVICES_BY_VERSION,
        c.METRIC_STALE_DEVICES,
        c.METRIC_DEVICE_DRIFT_VERDICT,
        "Drift and fleet alarms",
    ):
        assert text in body, text


def test_context_keys_reach_schedule_alarms_and_environment(tuned: dict) -> None:
    template = Template.from_json(tuned)
    rule = _rule(template)
    assert rule["ScheduleExpression"] == "rate(15 minutes)"
    env = _function(template)["Properties"]["Environment"]["Variables"]
    assert env[c.ENV_DRIFT_WINDOW_HOURS] == "2.0"
    assert env[c.ENV_DRIFT_STALE_MINUTES] == "45"
    assert json.loads(env[c.ENV_DRIFT_THRESHOLDS])["min_window"] == 40
    assert _alarm(tuned, "-stale-devices")["Period"] == 900


def test_a_missing_drift_package_says_to_build_it(context: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"drift package .*run `make package` first"):
        build_app({**context, "drift_package": str(tmp_path / "nope")})


def test_alphas_must_be_ordered(context: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="drift_alpha_drift must be at most drift_alpha_warn"):
        build_app({**context, "drift_alpha_warn": "0.001", "drift_alpha_drift": "0.01"})
