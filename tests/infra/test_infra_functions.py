"""Every function the stack builds itself (`infra.constructs.functions.small_function`): arm64,
python3.12, a role of its own that may write only to the function's own log group."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Template

OURS = {  # the API, its hook, bulk, drift, rollout: not CDK's own provider functions
    "functions.api.handler.handler",
    "functions.hooks.pre_traffic.handler",
    "functions.bulk.handler.handler",
    "functions.drift.handler.handler",
    "functions.rollout.handler.handler",
}


def _ours(template: Template) -> dict[str, dict[str, Any]]:
    found = {
        logical_id: function
        for logical_id, function in template.find_resources("AWS::Lambda::Function").items()
        if function["Properties"].get("Handler") in OURS
    }
    assert len(found) == len(OURS), sorted(found)
    return found


def test_every_function_is_arm64_python312_with_its_own_role(template: Template) -> None:
    found = _ours(template)
    roles = [f["Properties"]["Role"]["Fn::GetAtt"][0] for f in found.values()]
    assert len(set(roles)) == len(roles)  # no two functions share a role
    for logical_id, function in found.items():
        props = function["Properties"]
        assert props["Architectures"] == ["arm64"], logical_id
        assert props["Runtime"] == "python3.12", logical_id
        env = props["Environment"]["Variables"]
        assert "POWERTOOLS_SERVICE_NAME" in env or "pre_traffic" in props["Handler"], logical_id


def test_each_role_writes_logs_only_to_its_own_group(
    template: Template, template_json: dict
) -> None:
    resources = template_json["Resources"]
    for logical_id, function in _ours(template).items():
        role = function["Properties"]["Role"]["Fn::GetAtt"][0]
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        writes = [
            statement["Resource"]
            for policy in resources.values()
            if policy["Type"] == "AWS::IAM::Policy"
            and {"Ref": role} in policy["Properties"]["Roles"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if "logs:PutLogEvents" in statement["Action"]
        ]
        assert writes == [{"Fn::GetAtt": [group, "Arn"]}], logical_id


def test_traced_functions_are_the_api_hook_and_bulk(template: Template) -> None:
    traced = {
        function["Properties"]["Handler"]
        for function in _ours(template).values()
        if function["Properties"].get("TracingConfig", {}).get("Mode") == "Active"
    }
    assert traced == {
        "functions.api.handler.handler",
        "functions.hooks.pre_traffic.handler",
        "functions.bulk.handler.handler",
    }
