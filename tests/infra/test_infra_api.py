"""API Gateway: proxy to the alias, API keys and usage plan, binary types, logs, metrics."""

from __future__ import annotations

import json

from aws_cdk.assertions import Template
from infra_testlib import only


def test_rest_api_accepts_multipart_and_images_as_binary(template: Template) -> None:
    api = only(template.find_resources("AWS::ApiGateway::RestApi"))["Properties"]
    assert api["BinaryMediaTypes"] == ["multipart/form-data", "image/*"]
    assert api["EndpointConfiguration"] == {"Types": ["REGIONAL"]}


def test_every_method_needs_an_api_key_and_proxies_to_the_alias(template: Template) -> None:
    methods = template.find_resources("AWS::ApiGateway::Method")
    assert len(methods) == 2  # ANY / and ANY /{proxy+}
    alias = next(iter(template.find_resources("AWS::Lambda::Alias")))
    for method in methods.values():
        props = method["Properties"]
        assert props["ApiKeyRequired"] is True
        assert props["Integration"]["Type"] == "AWS_PROXY"
        assert {"Ref": alias} in json.loads(json.dumps(props["Integration"]["Uri"]))["Fn::Join"][1]


def test_stage_has_access_logs_metrics_and_throttling(template: Template) -> None:
    stage = only(template.find_resources("AWS::ApiGateway::Stage"))["Properties"]
    assert stage["StageName"] == "test"
    assert stage["TracingEnabled"] is True
    log_format = json.loads(stage["AccessLogSetting"]["Format"])
    assert {"requestId", "ip", "apiKeyId", "status", "latencyMs"} <= set(log_format)
    destination = json.dumps(stage["AccessLogSetting"]["DestinationArn"])
    assert "ApiAccessLogs" in destination
    assert stage["MethodSettings"] == [
        {
            "DataTraceEnabled": False,
            "HttpMethod": "*",
            "LoggingLevel": "ERROR",
            "MetricsEnabled": True,
            "ResourcePath": "/*",
            "ThrottlingBurstLimit": 100,
            "ThrottlingRateLimit": 50,
        }
    ]


def test_usage_plan_rate_burst_and_quota_with_a_key(template: Template) -> None:
    plan_id, plan = next(iter(template.find_resources("AWS::ApiGateway::UsagePlan").items()))
    props = plan["Properties"]
    assert props["Throttle"] == {"RateLimit": 50, "BurstLimit": 100}
    assert props["Quota"] == {"Limit": 100_000, "Period": "DAY"}
    assert props["ApiStages"][0]["Stage"]["Ref"].startswith("ApiDeploymentStage")
    key_id = next(iter(template.find_resources("AWS::ApiGateway::ApiKey")))
    template.has_resource_properties(
        "AWS::ApiGateway::UsagePlanKey",
        {"KeyId": {"Ref": key_id}, "UsagePlanId": {"Ref": plan_id}, "KeyType": "API_KEY"},
    )


def test_no_waf_unless_asked(template: Template) -> None:
    template.resource_count_is("AWS::WAFv2::WebACLAssociation", 0)
    template.resource_count_is("AWS::WAFv2::WebACL", 0)


def test_outputs_tell_ops_where_things_are(template: Template) -> None:
    outputs = template.to_json()["Outputs"]
    for name in ("ApiUrl", "ApiKeyId", "ModelUri", "TelemetryBucket", "DeviceRoleAlias"):
        assert name in outputs
    template.has_output("DevicePolicy", {"Value": "wastesort-test-device"})
