"""The API Lambda, alias `live`, the CodeDeploy canary and the pre-traffic hook."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Template
from infra_testlib import MODEL_SHA256, MODEL_VERSION, only, statements

from infra import constants as c


def _function(template: Template, handler: str) -> tuple[str, dict[str, Any]]:
    found = template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": handler}})
    return next(iter(found)), only(found)["Properties"]


def _logical_id(template: Template, kind: str, prefix: str) -> str:
    ids = [k for k in template.find_resources(kind) if k.startswith(prefix)]
    assert len(ids) == 1, ids
    return ids[0]


def test_api_function_runtime_size_and_environment(template: Template) -> None:
    _, props = _function(template, c.API_HANDLER)
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["arm64"]
    assert props["MemorySize"] == 1024
    assert props["Timeout"] == 20
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert "ReservedConcurrentExecutions" not in props
    assert "SnapStart" not in props
    env = props["Environment"]["Variables"]
    uri = env["MODEL_URI"]["Fn::Join"][1]
    assert uri[0] == "s3://"
    assert uri[1]["Ref"].startswith("ModelsBucket")
    assert uri[2] == f"/registry@{MODEL_VERSION}"
    assert env["MODEL_SHA256"] == MODEL_SHA256
    assert env["POWERTOOLS_SERVICE_NAME"] == "wastesort-api"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Wastesort"
    assert env["WASTESORT_CACHE_DIR"] == "/tmp/wastesort"
    # Unset context: no CORS and no URL input, and no variable that would change the version.
    assert c.ENV_CORS_ORIGINS not in env
    assert c.ENV_URL_ALLOWLIST not in env


def test_functions_log_to_their_own_group_with_retention(template: Template) -> None:
    for handler in (c.API_HANDLER, c.HOOK_HANDLER):
        _, props = _function(template, handler)
        group = props["LoggingConfig"]["LogGroup"]["Ref"]
        retention = template.to_json()["Resources"][group]["Properties"]["RetentionInDays"]
        assert retention == 30


def test_every_function_and_log_group_has_the_retention(template: Template) -> None:
    """CDK's Trigger provider too: left alone it logs to `/aws/lambda/<name>`, kept forever."""
    resources = template.to_json()["Resources"]
    functions = template.find_resources("AWS::Lambda::Function")
    # the API, the hook, the Trigger's provider, the bulk batch, the drift watch, the rollout check
    assert len(functions) == 6
    for logical_id, function in functions.items():
        group = function["Properties"].get("LoggingConfig", {}).get("LogGroup", {})
        assert "Ref" in group, logical_id
        assert resources[group["Ref"]]["Type"] == "AWS::Logs::LogGroup"
    for logical_id, group in template.find_resources("AWS::Logs::LogGroup").items():
        assert group["Properties"]["RetentionInDays"] == 30, logical_id


def test_api_role_reads_only_the_model_prefix(template: Template, template_json: dict) -> None:
    found = statements(template_json, "ServingFunctionRole")
    actions = sorted(
        a for s in found for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    )
    assert actions == sorted(
        [
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "xray:PutTelemetryRecords",
            "xray:PutTraceSegments",
            "s3:GetObject",
            "s3:ListBucket",
        ]
    )
    get = next(s for s in found if s["Action"] == "s3:GetObject")
    assert get["Resource"]["Fn::Join"][1][1] == "/registry/*"
    listing = next(s for s in found if s["Action"] == "s3:ListBucket")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["registry", "registry/*"]}}
    assert all(s["Resource"] == "*" for s in found if s["Action"][0].startswith("xray"))


def test_alias_live_is_shifted_by_codedeploy_after_the_hook(template: Template) -> None:
    aliases = template.find_resources("AWS::Lambda::Alias")
    alias = only(aliases)
    assert alias["Properties"]["Name"] == "live"
    hook_id, _ = _function(template, c.HOOK_HANDLER)
    update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    assert update["BeforeAllowTrafficHook"] == {"Ref": hook_id}
    assert update["DeploymentGroupName"]["Ref"].startswith("ServingDeployment")


def test_canary_10_percent_for_5_minutes_by_default(template: Template) -> None:
    template.has_resource_properties(
        "AWS::CodeDeploy::DeploymentConfig",
        {
            "ComputePlatform": "Lambda",
            "TrafficRoutingConfig": {
                "Type": "TimeBasedCanary",
                "TimeBasedCanary": {"CanaryInterval": 5, "CanaryPercentage": 10},
            },
        },
    )


def test_deployment_group_rolls_back_on_failure_and_on_canary_alarms(template: Template) -> None:
    group = only(template.find_resources("AWS::CodeDeploy::DeploymentGroup"))["Properties"]
    assert set(group["AutoRollbackConfiguration"]["Events"]) == {
        "DEPLOYMENT_FAILURE",
        "DEPLOYMENT_STOP_ON_ALARM",
        "DEPLOYMENT_STOP_ON_REQUEST",
    }
    assert group["AutoRollbackConfiguration"]["Enabled"] is True
    assert group["DeploymentConfigName"]["Ref"].startswith("ServingTrafficShift")
    watched = {a["Name"]["Ref"] for a in group["AlarmConfiguration"]["Alarms"]}
    expected = {
        _logical_id(template, "AWS::CloudWatch::Alarm", f"Monitoring{name}")
        for name in (
            "canaryerrors",
            "canarydurationp99",
            "uncertainratio",
            "canarypredictionerrors",
        )
    }
    assert watched == expected
    assert group["AlarmConfiguration"]["Enabled"] is True


def test_hook_targets_the_new_version(template: Template) -> None:
    _, props = _function(template, c.HOOK_HANDLER)
    env = props["Environment"]["Variables"]
    version_id = _logical_id(template, "AWS::Lambda::Version", "ServingFunctionCurrentVersion")
    assert env["TARGET_VERSION_ARN"] == {"Ref": version_id}
    assert env["EXPECTED_MODEL_VERSION"] == MODEL_VERSION
    assert env["MODEL_SHA256"] == MODEL_SHA256
    assert env["MODEL_URI"]["Fn::Join"][1][2] == f"/registry@{MODEL_VERSION}"
    assert props["Timeout"] == 300


def test_hook_may_report_to_codedeploy_and_invoke_only_the_new_version(
    template: Template, template_json: dict
) -> None:
    found = statements(template_json, "ServingPreTrafficHookRole")
    report = next(
        s for s in found if s["Action"] == "codedeploy:PutLifecycleEventHookExecutionStatus"
    )
    arn = report["Resource"]["Fn::Join"][1]
    assert ":deploymentgroup:" in arn
    assert arn[-1]["Ref"].startswith("ServingDeployment")
    invoke = next(s for s in found if s["Action"] == "lambda:InvokeFunction")
    version_id = _logical_id(template, "AWS::Lambda::Version", "ServingFunctionCurrentVersion")
    assert invoke["Resource"] == {"Ref": version_id}
    assert not any("Put" in str(s["Action"]) and "s3" in str(s["Action"]) for s in found)


def test_first_deployment_runs_the_hook_once_through_a_trigger(template: Template) -> None:
    trigger = only(template.find_resources("Custom::Trigger"))
    # CloudFormation hands it to the provider as the string "false"; it skips updates then.
    assert trigger["Properties"]["ExecuteOnHandlerChange"] is False
    hook_version = _logical_id(
        template, "AWS::Lambda::Version", "ServingPreTrafficHookCurrentVersion"
    )
    assert trigger["Properties"]["HandlerArn"] == {"Ref": hook_version}
    alias_id = _logical_id(template, "AWS::Lambda::Alias", "ServingLive")
    assert alias_id in trigger["DependsOn"]


def test_hook_and_api_share_one_code_asset(template: Template) -> None:
    api = _function(template, c.API_HANDLER)[1]["Code"]
    hook = _function(template, c.HOOK_HANDLER)[1]["Code"]
    assert api == hook


def test_replaced_versions_are_deleted_not_hoarded(template: Template) -> None:
    versions = template.find_resources("AWS::Lambda::Version")
    assert len(versions) == 2  # the API's and the hook's (for the first-deployment trigger)
    assert {v["DeletionPolicy"] for v in versions.values()} == {"Delete"}
