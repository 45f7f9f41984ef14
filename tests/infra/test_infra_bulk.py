"""The bulk state machine as synthesized: a Distributed Map with EXPRESS children over the input
prefix, batched, retried and caught, written as JSON lines by ResultWriterV2 (which needs the
cdk.json feature flag), and IAM that names only the input and results prefixes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from infra_testlib import ROOT, cfn_lint, only, statements

from infra import constants as c
from infra.app import build_app
from infra.config import ConfigError, InfraConfig

SFN = "AWS::StepFunctions::StateMachine"
FLAG = "@aws-cdk/aws-stepfunctions:useDistributedMapResultWriterV2"
VARIANT = {
    "bulk_batch_size": "20",
    "bulk_max_concurrency": "7",
    "bulk_tolerated_failure_percent": "12.5",
    "bulk_input_bucket": "wastesort-archive",
    "bulk_results_bucket": "wastesort-triage",
}


def _placeholder(token: dict[str, Any]) -> str:
    """A readable stand-in for an intrinsic inside the definition string."""
    if "Ref" in token:
        return "aws" if token["Ref"] == "AWS::Partition" else f"<{token['Ref']}>"
    logical_id, attribute = token["Fn::GetAtt"]
    return f"<{logical_id}.{attribute}>"


def definition(template_json: dict) -> dict[str, Any]:
    """The bulk state machine's definition, parsed, with intrinsics as `<LogicalId>`."""
    found = {
        k: v
        for k, v in template_json["Resources"].items()
        if v["Type"] == SFN and k.startswith("Bulk")
    }
    parts = only(found)["Properties"]["DefinitionString"]["Fn::Join"][1]
    return json.loads("".join(p if isinstance(p, str) else _placeholder(p) for p in parts))


def logical_id(template_json: dict, type_: str, prefix: str) -> str:
    found = [
        k
        for k, v in template_json["Resources"].items()
        if v["Type"] == type_ and k.startswith(prefix)
    ]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def variant(context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Batch size, concurrency and tolerance from context, and buckets named in context."""
    app, stack = build_app({**context, **VARIANT}, outdir=str(tmp_path_factory.mktemp("bulk")))
    return app.synth().get_stack_by_name(stack.stack_name).template


def test_a_distributed_map_of_express_children_over_the_input_prefix(template_json: dict) -> None:
    bucket = logical_id(template_json, "AWS::S3::Bucket", "BulkBucket")
    states = definition(template_json)["States"]
    assert definition(template_json)["StartAt"] == "ClassifyAll"
    assert definition(template_json)["TimeoutSeconds"] == 24 * 3600  # a runaway run is stopped
    run = states["ClassifyAll"]
    assert run["Type"] == "Map"
    assert run["ItemProcessor"]["ProcessorConfig"] == {
        "Mode": "DISTRIBUTED",
        "ExecutionType": "EXPRESS",
    }
    assert run["ItemReader"] == {
        "Resource": "arn:aws:states:::s3:listObjectsV2",
        "Parameters": {"Bucket": f"<{bucket}>", "Prefix.$": "$.input_prefix"},
    }
    assert run["ItemBatcher"] == {
        "MaxItemsPerBatch": 50,
        "BatchInput": {"bucket": f"<{bucket}>", "model_version.$": "$.model_version"},
    }
    assert run["MaxConcurrency"] == 50
    assert run["ToleratedFailurePercentage"] == 5
    assert run["ResultWriter"] == {
        "Resource": "arn:aws:states:::s3:putObject",
        "Parameters": {"Bucket": f"<{bucket}>", "Prefix": c.BULK_RESULTS_PREFIX},
        "WriterConfig": {"OutputType": "JSONL", "Transformation": "FLATTEN"},
    }


def test_each_batch_calls_the_batch_handler_with_retry_and_catch(template_json: dict) -> None:
    function = logical_id(template_json, "AWS::Lambda::Function", "BulkFunction")
    processor = definition(template_json)["States"]["ClassifyAll"]["ItemProcessor"]
    task = processor["States"][processor["StartAt"]]
    assert task["Resource"] == "arn:aws:states:::lambda:invoke"
    assert task["Parameters"] == {"FunctionName": f"<{function}.Arn>", "Payload.$": "$"}
    assert task["OutputPath"] == "$.Payload.records"  # one line per image once flattened
    [retry] = task["Retry"]
    assert {"Lambda.ServiceException", "Lambda.TooManyRequestsException"} <= set(
        retry["ErrorEquals"]
    )
    assert "States.ALL" not in retry["ErrorEquals"]  # a batch that raised is not retried
    assert retry["MaxAttempts"] >= 3 and retry["BackoffRate"] > 1
    [catch] = task["Catch"]
    assert catch["ErrorEquals"] == ["States.ALL"]
    failed = processor["States"][catch["Next"]]
    assert failed["Type"] == "Fail"
    assert failed["CausePath"] == "$.error.Cause"


def test_the_run_summary_is_not_the_writers_manifest(template_json: dict) -> None:
    states = definition(template_json)["States"]
    assert states["ClassifyAll"]["Next"] == "DescribeRun"
    assert states["DescribeRun"]["Resource"].endswith(":aws-sdk:sfn:describeMapRun")
    write = states[states["DescribeRun"]["Next"]]
    assert write["Resource"].endswith(":aws-sdk:s3:putObject")
    key = write["Parameters"]["Key.$"]
    assert c.BULK_RUN_SUMMARY in key and "manifest.json" not in key
    assert key.startswith(f"States.Format('{c.BULK_RESULTS_PREFIX}/{{}}/")
    assert write["End"] is True


def test_the_batch_function_shares_the_api_package_and_reads_only_its_prefixes(
    template_json: dict,
) -> None:
    function = template_json["Resources"][
        logical_id(template_json, "AWS::Lambda::Function", "BulkFunction")
    ]["Properties"]
    assert function["Handler"] == c.BULK_HANDLER
    assert function["Runtime"] == "python3.12"
    assert function["Architectures"] == ["arm64"]
    serving = template_json["Resources"][
        logical_id(template_json, "AWS::Lambda::Function", "ServingFunction")
    ]["Properties"]
    assert function["Code"] == serving["Code"]  # one asset: the API's package
    env = function["Environment"]["Variables"]
    assert "@" not in json.dumps(env[c.ENV_MODEL_URI])  # the execution pins the version
    assert env[c.ENV_SERVICE_NAME] == c.BULK_SERVICE_NAME

    granted = statements(template_json, "BulkFunctionRole")
    reads = [s for s in granted if s["Action"] == "s3:GetObject"]
    keys = sorted(r["Fn::Join"][1][1] for s in reads for r in s["Resource"])
    assert keys == ["/input/*", "/registry/*"]
    lists = [s for s in granted if s["Action"] == "s3:ListBucket"]
    assert [s["Condition"]["StringLike"]["s3:prefix"] for s in lists] == [
        ["registry", "registry/*"]  # the registry's; the function lists no input
    ]


def _s3_statements(template_json: dict, role_prefix: str) -> list[dict[str, Any]]:
    return [
        s
        for s in statements(template_json, role_prefix)
        if any(
            a.startswith("s3:")
            for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        )
    ]


def test_the_state_machine_role_names_only_the_prefixes(template_json: dict) -> None:
    bucket = logical_id(template_json, "AWS::S3::Bucket", "BulkBucket")
    role = logical_id(template_json, "AWS::IAM::Role", "BulkRole")
    granted = _s3_statements(template_json, role)
    listing = next(s for s in granted if s["Action"] == "s3:ListBucket")
    assert listing["Resource"] == {"Fn::GetAtt": [bucket, "Arn"]}
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["input", "input/*"]}}
    writes = next(s for s in granted if "s3:PutObject" in s["Action"])
    assert writes["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/results/*"]]}
    assert len(granted) == 2  # no automatic, bucket-wide grant beside them
    everything = statements(template_json, role)
    wildcards = [s for s in everything if s["Resource"] == "*"]
    assert all(a.split(":")[0] in {"logs", "xray"} for s in wildcards for a in s["Action"])
    invoke = next(s for s in everything if s["Action"] == "lambda:InvokeFunction")
    function = logical_id(template_json, "AWS::Lambda::Function", "BulkFunction")
    assert invoke["Resource"] == {"Fn::GetAtt": [function, "Arn"]}
    start = next(s for s in everything if s["Action"] == "states:StartExecution")
    assert start["Resource"] == {"Ref": logical_id(template_json, SFN, "Bulk")}
    # CDK's own map policy stays unattached, so it is not deployed at all
    assert not [k for k in template_json["Resources"] if "DistributedMapPolicy" in k]


def test_the_bulk_bucket_is_private_encrypted_logged_and_tls_only(template_json: dict) -> None:
    bucket_id = logical_id(template_json, "AWS::S3::Bucket", "BulkBucket")
    props = template_json["Resources"][bucket_id]["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert props["LoggingConfiguration"]["DestinationBucketName"]["Ref"].startswith("AccessLogs")
    policy = only(
        {
            k: v
            for k, v in template_json["Resources"].items()
            if v["Type"] == "AWS::S3::BucketPolicy"
            and v["Properties"]["Bucket"] == {"Ref": bucket_id}
        }
    )
    denies = [
        s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"
    ]
    assert denies[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    outputs = template_json["Outputs"]
    assert outputs["BulkStateMachineArn"]["Value"] == {
        "Ref": logical_id(template_json, SFN, "Bulk")
    }
    assert outputs["BulkInputUri"]["Value"]["Fn::Join"][1][-1] == "/input/"
    assert outputs["BulkResultsUri"]["Value"]["Fn::Join"][1][-1] == "/results/"


def test_limits_and_buckets_come_from_context(variant: dict, tmp_path: Path) -> None:
    run = definition(variant)["States"]["ClassifyAll"]
    assert run["ItemBatcher"]["MaxItemsPerBatch"] == 20
    assert run["MaxConcurrency"] == 7
    assert run["ToleratedFailurePercentage"] == 12.5
    assert run["ItemReader"]["Parameters"]["Bucket"] == "wastesort-archive"
    assert run["ResultWriter"]["Parameters"]["Bucket"] == "wastesort-triage"
    assert not [k for k in variant["Resources"] if k.startswith("BulkBucket")]  # none made
    role = logical_id(variant, "AWS::IAM::Role", "BulkRole")
    text = json.dumps(_s3_statements(variant, role))
    assert ":s3:::wastesort-archive" in text and ":s3:::wastesort-triage/results/*" in text
    assert ":s3:::wastesort-archive/*" not in text and ":s3:::wastesort-triage/*" not in text
    cfn_lint(variant, tmp_path)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bulk_batch_size", "500"),  # a batch's records would pass Step Functions' 256 KiB
        ("bulk_timeout_s", "600"),  # longer than an EXPRESS child may live
        ("bulk_tolerated_failure_percent", "101"),
        ("bulk_input_bucket", "Not_A_Bucket"),
        ("bulk_batch_size", "200"),  # 200 objects in 1024 MB: 2.6 MiB each, under a photo
    ],
)
def test_a_bad_bulk_setting_stops_synth_naming_the_key(
    context: dict[str, Any], key: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        InfraConfig.from_context({**context, key: value})


def test_bulk_memory_for_its_batch_size_is_accepted(context: dict[str, Any]) -> None:
    bigger = {**context, "bulk_batch_size": "200", "bulk_memory_mb": "1600"}
    config = InfraConfig.from_context(bigger)
    assert (config.bulk_batch_size, config.bulk_memory_mb) == (200, 1600)


def test_cdk_json_keeps_the_result_writer_flag() -> None:
    assert json.loads((ROOT / "cdk.json").read_text())["context"][FLAG] is True


@pytest.mark.parametrize("flag", [True, False])
def test_without_the_flag_the_writer_is_silently_left_out(flag: bool) -> None:
    """Why the flag is asserted: CDK drops ResultWriterV2 without it, and says nothing."""
    app = App(context={FLAG: flag})
    stack = Stack(app, "FlagCheck")
    bucket = s3.Bucket(stack, "Results")
    run = sfn.DistributedMap(
        stack,
        "Run",
        result_writer_v2=sfn.ResultWriterV2(
            bucket=bucket,
            prefix="results",
            writer_config=sfn.WriterConfig(
                output_type=sfn.OutputType.JSONL, transformation=sfn.Transformation.FLATTEN
            ),
        ),
    )
    run.item_processor(sfn.Pass(stack, "Each"))
    rendered = stack.resolve(run.to_state_json())
    assert ("ResultWriter" in rendered) is flag
