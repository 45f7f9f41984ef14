"""The other stage shapes: an imported bucket, an alias, linear/all-at-once, WAF, SnapStart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template
from infra_testlib import cfn_lint, only, statements

from infra import constants as c
from infra.app import build_app

WAF_ARN = "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/shared/0123-abcd"


@pytest.fixture(scope="module")
def variant(context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An imported bucket, a model alias, linear 20%/2 min, managed WAF, SnapStart, concurrency.

    A bucket with no access logs and no TLS policy is added after the fact: synth must then
    fail on exactly its findings, which proves cdk-nag runs and that the rest is clean.
    """
    ctx = {**context, "registry_bucket": "my-registry", "registry_prefix": "models"}
    ctx.pop("model_version")
    ctx.update(
        model_alias="production",
        deployment="linear",
        traffic_percent="20",
        interval_minutes="2",
        waf_managed="true",
        snapstart="true",
        reserved_concurrency="5",
        # as `-c key=...` gives them: one comma-separated string each
        cors_origins="https://App.example.com, https://admin.example.com:8443",
        url_allowlist="images.example.com,*.CDN.example.com",
        admin_key_ids="Ab12cd34EF, zz9yy8xx7w",
    )
    outdir = tmp_path_factory.mktemp("variant.out")
    app, stack = build_app(ctx, outdir=str(outdir))
    s3.Bucket(stack, "Naked")
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    # The template is written before the validation plugins run; read what they judged.
    template = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    report = json.loads((outdir / "validation-report.json").read_text())
    return {"template": template, "report": report}


def test_nag_fails_synth_on_an_unacknowledged_finding_and_only_there(variant: dict) -> None:
    violations = [
        (v["ruleName"], c["constructPath"])
        for plugin in variant["report"]["pluginReports"]
        for v in plugin["violations"]
        for c in v["violatingConstructs"]
    ]
    assert violations
    assert {rule for rule, _ in violations} == {"AwsSolutions-S1", "AwsSolutions-S10"}
    assert all(path.startswith("wastesort-test/Naked/") for _, path in violations)


def test_variant_template_is_cfn_lint_clean(variant: dict, tmp_path: Path) -> None:
    template = dict(variant["template"])
    template["Resources"] = {k: v for k, v in template["Resources"].items() if "Naked" not in k}
    cfn_lint(template, tmp_path)


def test_imported_bucket_is_not_created_and_grants_name_it(variant: dict) -> None:
    template = Template.from_json(variant["template"])
    buckets = [k for k in template.find_resources("AWS::S3::Bucket") if k.startswith("Models")]
    assert buckets == []
    found = statements(variant["template"], "ServingFunctionRole")
    get = next(s for s in found if s["Action"] == "s3:GetObject")
    assert get["Resource"]["Fn::Join"][1][-1] == ":s3:::my-registry/models/*"


def test_alias_mode_serves_the_alias_and_the_canary_watches_the_lambda_only(variant: dict) -> None:
    template = Template.from_json(variant["template"])
    fn = only(
        template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": c.API_HANDLER}})
    )
    assert fn["Properties"]["Environment"]["Variables"]["MODEL_URI"] == (
        "s3://my-registry/models@production"
    )
    names = {
        a["Properties"]["AlarmName"]
        for a in template.find_resources("AWS::CloudWatch::Alarm").values()
    }
    assert "wastesort-test-uncertain-ratio" not in names
    group = only(template.find_resources("AWS::CodeDeploy::DeploymentGroup"))["Properties"]
    assert len(group["AlarmConfiguration"]["Alarms"]) == 2


def test_cors_origins_url_allowlist_and_admin_key_ids_reach_the_api_only(variant: dict) -> None:
    template = Template.from_json(variant["template"])
    for handler, expected in (
        (
            c.API_HANDLER,
            {
                c.ENV_CORS_ORIGINS: "https://app.example.com,https://admin.example.com:8443",
                c.ENV_URL_ALLOWLIST: "images.example.com,*.cdn.example.com",
                c.ENV_ADMIN_KEY_IDS: "Ab12cd34EF,zz9yy8xx7w",  # key ids keep their case
            },
        ),
        (c.HOOK_HANDLER, {}),
    ):
        fn = only(
            template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": handler}})
        )
        env = fn["Properties"]["Environment"]["Variables"]
        names = (c.ENV_CORS_ORIGINS, c.ENV_URL_ALLOWLIST, c.ENV_ADMIN_KEY_IDS)
        assert {k: env[k] for k in names if k in env} == expected


def test_linear_traffic_shift(variant: dict) -> None:
    Template.from_json(variant["template"]).has_resource_properties(
        "AWS::CodeDeploy::DeploymentConfig",
        {
            "TrafficRoutingConfig": {
                "Type": "TimeBasedLinear",
                "TimeBasedLinear": {"LinearInterval": 2, "LinearPercentage": 20},
            }
        },
    )


def test_snapstart_and_reserved_concurrency(variant: dict) -> None:
    template = Template.from_json(variant["template"])
    fn = only(
        template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": c.API_HANDLER}})
    )["Properties"]
    assert fn["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert fn["ReservedConcurrentExecutions"] == 5


def test_managed_waf_lets_photos_through_and_guards_the_stage(variant: dict) -> None:
    template = Template.from_json(variant["template"])
    acl_id, acl = next(iter(template.find_resources("AWS::WAFv2::WebACL").items()))
    rules = {r["Name"]: r for r in acl["Properties"]["Rules"]}
    assert rules["RateLimitPerIp"]["Statement"]["RateBasedStatement"]["Limit"] == 2000
    common = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
    assert common["RuleActionOverrides"] == [
        {"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}
    ]
    association = only(template.find_resources("AWS::WAFv2::WebACLAssociation"))
    assert association["Properties"]["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    stage = next(iter(template.find_resources("AWS::ApiGateway::Stage")))
    assert stage in association["DependsOn"]


def test_all_at_once_and_an_existing_web_acl(context: dict[str, Any], tmp_path: Path) -> None:
    ctx = {**context, "deployment": "all_at_once", "waf_acl_arn": WAF_ARN}
    _, stack = build_app(ctx, outdir=str(tmp_path))
    template = Template.from_stack(stack)
    group = only(template.find_resources("AWS::CodeDeploy::DeploymentGroup"))["Properties"]
    assert group["DeploymentConfigName"] == "CodeDeployDefault.LambdaAllAtOnce"
    template.resource_count_is("AWS::CodeDeploy::DeploymentConfig", 0)
    template.resource_count_is("AWS::WAFv2::WebACL", 0)
    template.has_resource_properties("AWS::WAFv2::WebACLAssociation", {"WebACLArn": WAF_ARN})


def test_registry_only_needs_no_model_and_no_package(
    context: dict[str, Any], tmp_path: Path
) -> None:
    ctx = {k: v for k, v in context.items() if not k.startswith("model_")}
    ctx.update(stage="new", registry_only="true", package=str(tmp_path / "not-built"))
    _, stack = build_app(ctx, outdir=str(tmp_path / "out"))
    template = Template.from_stack(stack)  # cdk-nag runs here too
    template.resource_count_is("AWS::S3::Bucket", 4)  # registry, telemetry, captures, access logs
    template.resource_count_is("AWS::IoT::RoleAlias", 1)
    template.resource_count_is("AWS::Lambda::Function", 0)
    template.resource_count_is("AWS::ApiGateway::RestApi", 0)
    assert "RegistryBucket" in template.to_json()["Outputs"]
