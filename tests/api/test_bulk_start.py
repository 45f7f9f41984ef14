"""`make bulk` (tools/bulk_start.py) against moto's CloudFormation, Step Functions and S3: it
reads the stack's outputs, refuses an input outside the input prefix or a model the stage's
registry does not publish as a version in one line, and starts an execution whose input is what
the state machine reads (`input_prefix`, `model_version`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.conftest import tiny_fields
from tools import bulk_start
from wastesort.registry import Registry
from wastesort.registry.s3 import S3Store

STACK = "wastesort-test"
BUCKET = "wastesort-test-bulk"
ROLE = "arn:aws:iam::123456789012:role/bulk"
MODELS = "wastesort-test-models"
VERSION = "v20261206-e7841cfe"


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch, tiny_int8: Any, tmp_path: Any) -> Iterator[Any]:
    """A moto AWS with the stage's stack (its bulk and registry outputs), a state machine and
    a registry publishing `VERSION` behind `production`."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        aws = boto3.session.Session(region_name="eu-west-1")
        machine = aws.client("stepfunctions").create_state_machine(
            name="bulk", definition=json.dumps({"StartAt": "P", "States": {}}), roleArn=ROLE
        )["stateMachineArn"]
        s3 = aws.client("s3")
        s3.create_bucket(
            Bucket=MODELS, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        registry = Registry(S3Store(f"s3://{MODELS}/registry", client=s3), cache_dir=tmp_path)
        registry.publish(tiny_int8, version=VERSION, aliases=["production"], **tiny_fields())
        outputs = {
            "BulkStateMachineArn": machine,
            "BulkInputUri": f"s3://{BUCKET}/input/",
            "BulkResultsUri": f"s3://{BUCKET}/results/",
            "RegistryBucket": MODELS,
            "RegistryPrefix": "registry",
        }
        template = {
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {k: {"Value": v} for k, v in outputs.items()},
        }
        aws.client("cloudformation").create_stack(
            StackName=STACK, TemplateBody=json.dumps(template)
        )
        yield aws


def test_starts_an_execution_and_says_where_results_land(
    session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = bulk_start.main(
        [f"s3://{BUCKET}/input/season-2026", VERSION, "--stack", STACK],
        session=session,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    arn = out.split("execution: ")[1].split()[0]
    started = session.client("stepfunctions").describe_execution(executionArn=arn)
    assert json.loads(started["input"]) == {
        "input_prefix": "input/season-2026/",
        "model_version": VERSION,
    }
    assert f"results:   s3://{BUCKET}/results/<map run id>/" in out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([f"s3://{BUCKET}/elsewhere/", "v1"], "is not under"),
        (["s3://other-bucket/input/job/", "v1"], "is not under"),
        (["s3:/bucket/input/", "v1"], "names no bucket"),
        ([f"s3://{BUCKET}/input/job/", "../v1"], "not a version id"),
        ([f"s3://{BUCKET}/input/job/", "v1", "--stack", "wastesort-nope"], "cannot read stack"),
        ([f"s3://{BUCKET}/input/job/", "production"], f"is an alias (now {VERSION})"),
        ([f"s3://{BUCKET}/input/job/", "v20990101-00000000"], "no version 'v20990101-00000000'"),
    ],
)
def test_a_bad_job_is_one_line_and_exit_2(
    session: Any, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    stack = [] if "--stack" in argv else ["--stack", STACK]
    assert bulk_start.main([*argv, *stack], session=session) == 2
    err = capsys.readouterr().err
    assert says in err
    assert len(err.strip().splitlines()) == 1
    runs = session.client("stepfunctions").list_state_machines()["stateMachines"]
    arn = runs[0]["stateMachineArn"]
    assert session.client("stepfunctions").list_executions(stateMachineArn=arn)["executions"] == []


class FinishedRun:
    """Step Functions once the run ended (moto has no map runs)."""

    map_run = "arn:aws:states:eu-west-1:123456789012:mapRun:bulk/ClassifyAll:0f1e2d3c"

    def describe_execution(self, executionArn: str) -> dict[str, str]:  # noqa: N803 - boto3's
        return {"status": "SUCCEEDED"}

    def list_map_runs(self, executionArn: str) -> dict[str, Any]:  # noqa: N803
        return {"mapRuns": [{"mapRunArn": self.map_run}]}

    def describe_map_run(self, mapRunArn: str) -> dict[str, Any]:  # noqa: N803
        return {"itemCounts": {"succeeded": 998, "failed": 2, "total": 1000}}


def test_wait_prints_the_map_runs_own_folder(capsys: pytest.CaptureFixture[str]) -> None:
    outputs = {"BulkResultsUri": f"s3://{BUCKET}/results/"}
    assert bulk_start.wait(FinishedRun(), "arn:execution", outputs) == 0
    out = capsys.readouterr().out
    assert f"results:   s3://{BUCKET}/results/0f1e2d3c/" in out
    assert '"failed": 2' in out
