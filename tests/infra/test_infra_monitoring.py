"""Alarms (set, thresholds, actions), the alarm topic, and the dashboard by model_version."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Template
from infra_testlib import MODEL_VERSION, only

PREFIX = "wastesort-test-"


def _alarms(template: Template) -> dict[str, dict[str, Any]]:
    found = template.find_resources("AWS::CloudWatch::Alarm").values()
    return {a["Properties"]["AlarmName"].removeprefix(PREFIX): a["Properties"] for a in found}


def test_the_alarm_set(template: Template) -> None:
    assert set(_alarms(template)) == {
        "api-5xx-rate",
        "api-latency-p99",
        "lambda-errors",
        "lambda-throttles",
        "uncertain-ratio",
        "canary-errors",
        "canary-duration-p99",
        "canary-prediction-errors",
        "drift-production",  # the drift watch's: tests/infra/test_infra_drift.py
        "stale-devices",
        "drift-watch-errors",
        "rollout-aborted",  # the rollout check's: tests/infra/test_infra_rollout.py
        "rollout-check-errors",
    }


@pytest.mark.parametrize(
    "spec",
    [
        ("api-5xx-rate", "5XXError", "AWS/ApiGateway", "Average", 0.05, "GreaterThanThreshold", 5),
        ("api-latency-p99", "Latency", "AWS/ApiGateway", "p99", 3000, "GreaterThanThreshold", 5),
        ("lambda-errors", "Errors", "AWS/Lambda", "Sum", 1, "GreaterThanOrEqualToThreshold", 3),
        (
            "lambda-throttles",
            "Throttles",
            "AWS/Lambda",
            "Sum",
            1,
            "GreaterThanOrEqualToThreshold",
            5,
        ),
        ("canary-errors", "Errors", "AWS/Lambda", "Sum", 1, "GreaterThanOrEqualToThreshold", 1),
        ("canary-duration-p99", "Duration", "AWS/Lambda", "p99", 3000, "GreaterThanThreshold", 2),
        (
            "canary-prediction-errors",
            "PredictionErrors",
            "Wastesort",
            "Sum",
            1,
            "GreaterThanOrEqualToThreshold",
            1,
        ),
    ],
)
def test_alarm_thresholds(template: Template, spec: tuple) -> None:
    name, metric, namespace, stat, threshold, operator, periods = spec
    alarm = _alarms(template)[name]
    assert alarm["MetricName"] == metric
    assert alarm["Namespace"] == namespace
    assert alarm.get("Statistic", alarm.get("ExtendedStatistic")) == stat
    assert alarm["Threshold"] == threshold
    assert alarm["ComparisonOperator"] == operator
    assert alarm["EvaluationPeriods"] == periods
    assert alarm["TreatMissingData"] == "notBreaching"


def test_api_alarms_watch_the_stage(template: Template) -> None:
    dims = {d["Name"]: d["Value"] for d in _alarms(template)["api-5xx-rate"]["Dimensions"]}
    stage = next(iter(template.find_resources("AWS::ApiGateway::Stage")))
    assert dims["Stage"] == {"Ref": stage}  # the stage's Ref is its name
    assert dims["ApiName"] == "wastesort-test"


def test_steady_lambda_alarms_watch_the_alias(template: Template) -> None:
    dims = {d["Name"]: d["Value"] for d in _alarms(template)["lambda-errors"]["Dimensions"]}
    assert dims["Resource"]["Fn::Join"][1][1] == ":live"


def test_canary_alarms_watch_the_new_version(template: Template) -> None:
    versions = [
        k for k in template.find_resources("AWS::Lambda::Version") if "FunctionCurrentVersion" in k
    ]
    for name in ("canary-errors", "canary-duration-p99"):
        dims = {d["Name"]: d["Value"] for d in _alarms(template)[name]["Dimensions"]}
        assert dims["ExecutedVersion"] == {"Fn::GetAtt": [versions[0], "Version"]}
        assert dims["Resource"]["Fn::Join"][1][1] == ":live"
    dims = {
        d["Name"]: d["Value"] for d in _alarms(template)["canary-prediction-errors"]["Dimensions"]
    }
    assert dims == {"service": "wastesort-api", "model_version": MODEL_VERSION}


def test_uncertain_ratio_is_metric_math_over_the_models_emf(template: Template) -> None:
    alarm = _alarms(template)["uncertain-ratio"]
    assert alarm["Threshold"] == 0.3
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    metrics = {m["Id"]: m for m in alarm["Metrics"]}
    expression = next(m for m in alarm["Metrics"] if "Expression" in m)
    assert expression["Expression"] == "IF(p >= 20, u / p, 0)"
    for key, name in (("u", "UncertainPredictions"), ("p", "Predictions")):
        stat = metrics[key]["MetricStat"]
        assert stat["Metric"]["MetricName"] == name
        assert stat["Metric"]["Namespace"] == "Wastesort"
        dims = {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]}
        assert dims == {"service": "wastesort-api", "model_version": MODEL_VERSION}
        assert stat["Stat"] == "Sum"
        assert stat["Period"] == 300


def test_every_alarm_notifies_the_topic(template: Template) -> None:
    topic = next(iter(template.find_resources("AWS::SNS::Topic")))
    for alarm in _alarms(template).values():
        assert alarm["AlarmActions"] == [{"Ref": topic}]
        assert alarm["OKActions"] == [{"Ref": topic}]


def test_topic_is_encrypted_tls_only_and_mails_ops(template: Template) -> None:
    topic_id, topic = next(iter(template.find_resources("AWS::SNS::Topic").items()))
    key_id = next(iter(template.find_resources("AWS::KMS::Key")))
    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "ops@example.com", "TopicArn": {"Ref": topic_id}},
    )
    policy = only(template.find_resources("AWS::SNS::TopicPolicy"))["Properties"]
    deny = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    key = template.to_json()["Resources"][key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    principals = [s["Principal"] for s in key["KeyPolicy"]["Statement"]]
    assert {"Service": "cloudwatch.amazonaws.com"} in principals


def test_dashboard_splits_model_metrics_by_version(template: Template) -> None:
    dashboard = only(template.find_resources("AWS::CloudWatch::Dashboard"))["Properties"]
    assert dashboard["DashboardName"] == "wastesort-test"
    parts = dashboard["DashboardBody"]["Fn::Join"][1]
    body = json.loads("".join(p if isinstance(p, str) else "TOKEN" for p in parts))
    expressions = [
        m[0]["expression"]
        for w in body["widgets"]
        for m in w["properties"].get("metrics", [])
        if isinstance(m[0], dict) and "expression" in m[0]
    ]
    schema = "{Wastesort,model_version,service}"
    for metric in ("Predictions", "UncertainPredictions", "PredictLatency", "PredictionErrors"):
        query = f'{schema} MetricName="{metric}" service="wastesort-api"'
        assert any(e.startswith(f"SEARCH('{query}'") for e in expressions), metric
    assert len([e for e in expressions if 'service="wastesort-api"' in e]) == 4


def test_runbook_covers_every_alarm(template: Template) -> None:
    from infra_testlib import ROOT

    runbook = (ROOT / "docs/ops.md").read_text().split("## Runbook", 1)[1]
    missing = [name for name in _alarms(template) if f"| `{name}` |" not in runbook]
    assert missing == []
