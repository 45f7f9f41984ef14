"""API Gateway: proxy to the alias, API keys and usage plan, binary types, logs, metrics."""

from __future__ import annotations

import json

from aws_cdk.assertions import Template
from infra_testlib import only


def test_rest_api_accepts_multipart_images_and_octet_stream_as_binary(template: Template) -> None:
    api = only(template.find_resources("AWS::ApiGateway::RestApi"))["Properties"]
    # A type missing here reaches Lambda as text and the upload's bytes are mangled.
    assert api["BinaryMediaTypes"] == ["multipart/form-data", "image/*", "application/octet-stream"]
    assert api["EndpointConfiguration"] == {"Types": ["REGIONAL"]}


def _methods(template: Template) -> dict[tuple[str, str], dict]:
    """(full path, HTTP method) -> the method's properties."""
    resources = template.find_resources("AWS::ApiGateway::Resource")

    def path_of(ref: dict) -> str:
        if "Fn::GetAtt" in ref:  # the root resource
            return ""
        props = resources[ref["Ref"]]["Properties"]
        return f"{path_of(props['ParentId'])}/{props['PathPart']}"

    found = {}
    for method in template.find_resources("AWS::ApiGateway::Method").values():
        props = method["Properties"]
        found[(path_of(props["ResourceId"]) or "/", props["HttpMethod"])] = props
    return found


KEYLESS_PATHS = ("/docs", "/openapi.json")
PAGES = {("/", "GET"), ("/review", "GET"), ("/static/{proxy+}", "GET")}


def test_only_preflights_the_docs_and_the_pages_pass_without_an_api_key(
    template: Template,
) -> None:
    methods = _methods(template)
    assert set(methods) == {
        ("/", "ANY"),
        ("/", "OPTIONS"),
        ("/{proxy+}", "ANY"),
        ("/{proxy+}", "OPTIONS"),
        ("/docs", "ANY"),
        ("/openapi.json", "ANY"),
        *PAGES,
    }
    for (path, verb), props in methods.items():
        keyless = verb == "OPTIONS" or path in KEYLESS_PATHS or (path, verb) in PAGES
        assert props["ApiKeyRequired"] is (not keyless), (path, verb)
        assert props["AuthorizationType"] == "NONE"


def test_every_method_proxies_to_the_alias(template: Template) -> None:
    """Preflights and docs too: the app answers them (its CORS settings decide a preflight)."""
    alias = next(iter(template.find_resources("AWS::Lambda::Alias")))
    for props in _methods(template).values():
        assert props["Integration"]["Type"] == "AWS_PROXY"
        assert {"Ref": alias} in json.loads(json.dumps(props["Integration"]["Uri"]))["Fn::Join"][1]


def test_execution_logs_have_the_stages_retention(template: Template) -> None:
    """API Gateway would create this group itself (LoggingLevel ERROR), never expiring."""
    api_id = next(iter(template.find_resources("AWS::ApiGateway::RestApi")))
    groups = template.find_resources(
        "AWS::Logs::LogGroup",
        {
            "Properties": {
                "LogGroupName": {
                    "Fn::Join": ["", ["API-Gateway-Execution-Logs_", {"Ref": api_id}, "/test"]]
                }
            }
        },
    )
    group_id, group = next(iter(groups.items()))
    assert len(groups) == 1
    assert group["Properties"]["RetentionInDays"] == 30
    stage = only(template.find_resources("AWS::ApiGateway::Stage"))
    assert group_id in stage["DependsOn"]  # made before the stage can log anything


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
