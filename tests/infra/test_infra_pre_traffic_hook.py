"""The pre-traffic hook against stubbed S3, Lambda and CodeDeploy clients and a golden set."""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from moto import mock_aws

from functions.hooks import pre_traffic as hook
from infra import constants as c
from wastesort.manifest import ArtifactRef, GoldenItem, InputSpec, Manifest, ModelEntry

BUCKET = "registry-bucket"
VERSION = "v20261123-abc123"
TARGET = "arn:aws:lambda:eu-west-1:123456789012:function:wastesort-api:7"
MODEL_SHA = "cd" * 32
GOLDEN = {
    "golden/bottle.jpg": (b"\xff\xd8bottle", "plastic"),
    "golden/can.jpg": (b"\xff\xd8can", "metal"),
}
EVENT = {"DeploymentId": "d-ABC123", "LifecycleEventHookExecutionId": "exec-42"}
ENV = {
    hook.ENV_MODEL_URI: f"s3://{BUCKET}/registry@{VERSION}",
    hook.ENV_TARGET: TARGET,
    hook.ENV_EXPECTED_VERSION: VERSION,
    hook.ENV_MODEL_SHA256: MODEL_SHA,
}


def _ref(path: str, data: bytes) -> ArtifactRef:
    return ArtifactRef(path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def manifest_bytes(
    *, golden: dict[str, tuple[bytes, str]] = GOLDEN, scores: dict[str, float] | None = None
) -> bytes:
    entry = ModelEntry(
        version=VERSION,
        artifact=ArtifactRef(path=f"artifacts/{VERSION}/model.tflite", sha256=MODEL_SHA, size=1),
        labels=["glass", "metal", "paper", "plastic"],
        input=InputSpec(height=224, width=224),
        golden_set=[
            GoldenItem(
                image=_ref(f"artifacts/{VERSION}/{name}", data),
                expected_class=cls,
                scores=scores or {},
            )
            for name, (data, cls) in golden.items()
        ],
    )
    manifest = Manifest(versions={VERSION: entry})
    return manifest.dumps()


def _body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def _http(status: int, body: dict[str, Any]) -> dict[str, Any]:
    payload = json.dumps(
        {"statusCode": status, "headers": {}, "body": json.dumps(body), "isBase64Encoded": False}
    ).encode()
    return {"StatusCode": 200, "Payload": _body(payload), "ExecutedVersion": "7"}


class Aws:
    """S3 in moto; Lambda and CodeDeploy stubbed, each test queueing the calls it expects."""

    def __init__(self) -> None:
        kwargs = {
            "region_name": "eu-west-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        self.clients = hook.Clients(
            s3=boto3.client("s3", **kwargs),
            lambda_=boto3.client("lambda", **kwargs),
            codedeploy=boto3.client("codedeploy", **kwargs),
        )
        self.clients.s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        self.lambda_ = Stubber(self.clients.lambda_)
        self.codedeploy = Stubber(self.clients.codedeploy)

    def registry(self, manifest: bytes, images: dict[str, bytes]) -> None:
        self.clients.s3.put_object(Bucket=BUCKET, Key="registry/manifest.json", Body=manifest)
        for name, data in images.items():
            key = f"registry/artifacts/{VERSION}/{name}"
            self.clients.s3.put_object(Bucket=BUCKET, Key=key, Body=data)

    def answer(self, response: dict[str, Any]) -> None:
        expected = {"FunctionName": TARGET, "InvocationType": "RequestResponse", "Payload": ANY}
        self.lambda_.add_response("invoke", response, expected)

    def healthy(self, *, version: str = VERSION, sha256: str = MODEL_SHA) -> None:
        self.answer(_http(200, {"status": "ok", "model_version": version, "sha256": sha256}))

    def predicts(
        self, cls: str, *, version: str = VERSION, scores: dict[str, float] | None = None
    ) -> None:
        body = {
            "predicted_class": cls,
            "confidence": 0.9,
            "all_confidences": scores or {cls: 0.9},
            "decision": cls,
            "model_version": version,
        }
        self.answer(_http(200, body))

    def expect_report(self, status: str) -> None:
        self.codedeploy.add_response(
            "put_lifecycle_event_hook_execution_status",
            {"lifecycleEventHookExecutionId": "exec-42"},
            {
                "deploymentId": "d-ABC123",
                "lifecycleEventHookExecutionId": "exec-42",
                "status": status,
            },
        )

    def __enter__(self) -> Aws:
        for stub in (self.lambda_, self.codedeploy):
            stub.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        for stub in (self.lambda_, self.codedeploy):
            stub.deactivate()

    def assert_no_pending(self) -> None:
        for stub in (self.lambda_, self.codedeploy):
            stub.assert_no_pending_responses()


@pytest.fixture
def aws(tmp_path, monkeypatch) -> Iterator[Aws]:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the hook's download cache
    with mock_aws(), Aws() as stubs:
        yield stubs


def _images() -> dict[str, bytes]:
    return {name: data for name, (data, _) in GOLDEN.items()}


def test_all_golden_predictions_right_reports_success(aws: Aws) -> None:
    aws.registry(manifest_bytes(), _images())
    aws.healthy()
    aws.predicts("plastic")
    aws.predicts("metal")
    aws.expect_report("Succeeded")

    result = hook.handler(EVENT, None, clients=aws.clients, env=ENV)

    assert result == {"status": "Succeeded", "checked": 2, "failures": []}
    aws.assert_no_pending()


def test_one_wrong_prediction_reports_failure(aws: Aws) -> None:
    aws.registry(manifest_bytes(), _images())
    aws.healthy()
    aws.predicts("plastic")
    aws.predicts("glass")  # the can is metal
    aws.expect_report("Failed")

    result = hook.handler(EVENT, None, clients=aws.clients, env=ENV)

    assert result["status"] == "Failed"
    assert result["failures"] == [
        f"artifacts/{VERSION}/golden/can.jpg: expected 'metal', got 'glass' (confidence 0.9)"
    ]
    aws.assert_no_pending()


def test_scores_drifting_past_the_golden_tolerance_fail_like_on_a_device(aws: Aws) -> None:
    """The hook applies wastesort.golden's rule, as the edge self-test does: the right class
    with scores 0.2 away from the published ones is a failure."""
    published = {"plastic": 0.5, "metal": 0.5}
    aws.registry(manifest_bytes(scores=published), _images())
    aws.healthy()
    aws.predicts("plastic", scores={"plastic": 0.55, "metal": 0.45})  # within 0.1
    aws.predicts("metal", scores={"plastic": 0.3, "metal": 0.7})  # 0.2 off
    aws.expect_report("Failed")

    result = hook.handler(EVENT, None, clients=aws.clients, env=ENV)

    assert result["failures"] == [
        f"artifacts/{VERSION}/golden/can.jpg: plastic scores 0.3000, published 0.5000",
        f"artifacts/{VERSION}/golden/can.jpg: metal scores 0.7000, published 0.5000",
    ]
    aws.assert_no_pending()


def test_a_crashing_version_reports_failure(aws: Aws) -> None:
    aws.registry(manifest_bytes(), _images())
    crash = json.dumps({"errorMessage": "No module named 'ai_edge_litert'"}).encode()
    aws.answer({"StatusCode": 200, "FunctionError": "Unhandled", "Payload": _body(crash)})
    aws.expect_report("Failed")

    result = hook.handler(EVENT, None, clients=aws.clients, env=ENV)

    assert result["status"] == "Failed"
    assert "No module named 'ai_edge_litert'" in result["failures"][0]
    aws.assert_no_pending()


def test_unhealthy_or_wrong_model_reports_failure(aws: Aws) -> None:
    aws.registry(manifest_bytes(), _images())
    aws.healthy(version="v20250101-old")
    aws.predicts("plastic", version="v20250101-old")
    aws.predicts("metal", version="v20250101-old")
    aws.expect_report("Failed")

    result = hook.handler(EVENT, None, clients=aws.clients, env=ENV)

    assert result["status"] == "Failed"
    assert "/health serves model 'v20250101-old'" in result["failures"][0]
    assert len(result["failures"]) == 3


def test_health_500_reports_failure(aws: Aws) -> None:
    aws.registry(manifest_bytes(), _images())
    aws.answer(_http(503, {"type": "model_unavailable"}))
    aws.predicts("plastic")
    aws.predicts("metal")
    aws.expect_report("Failed")

    result = hook.handler(EVENT, None, clients=aws.clients, env=ENV)

    assert result["failures"][0].startswith("/health answered 503")


def test_tampered_golden_image_reports_failure(aws: Aws) -> None:
    images = _images()
    images["golden/bottle.jpg"] = b"something else"
    aws.registry(manifest_bytes(), dict(list(images.items())[:1]))
    aws.expect_report("Failed")

    result = hook.handler(EVENT, None, clients=aws.clients, env=ENV)

    assert result["status"] == "Failed"
    assert "does not match its sha256" in result["failures"][0]
    aws.assert_no_pending()


def test_a_model_without_golden_set_fails(aws: Aws) -> None:
    aws.registry(manifest_bytes(golden={}), {})
    aws.healthy()
    aws.expect_report("Failed")

    result = hook.handler(EVENT, None, clients=aws.clients, env=ENV)

    assert result["failures"] == [f"model {VERSION} has no golden set to replay"]


def test_first_deployment_trigger_raises_on_failure(aws: Aws) -> None:
    aws.registry(manifest_bytes(), _images())
    aws.healthy()
    aws.predicts("paper")
    aws.predicts("metal")

    with pytest.raises(hook.GoldenSetError, match="expected 'plastic', got 'paper'"):
        hook.handler({}, None, clients=aws.clients, env=ENV)
    aws.assert_no_pending()  # and nothing was reported to CodeDeploy


def test_first_deployment_trigger_passes_quietly(aws: Aws) -> None:
    aws.registry(manifest_bytes(), _images())
    aws.healthy()
    aws.predicts("plastic")
    aws.predicts("metal")

    assert hook.handler({}, None, clients=aws.clients, env=ENV)["status"] == "Succeeded"


def test_a_model_uri_outside_s3_is_a_failed_check(aws: Aws) -> None:
    env = {**ENV, hook.ENV_MODEL_URI: "models@production"}
    with pytest.raises(hook.GoldenSetError, match="must be an s3:// registry URI"):
        hook.handler({}, None, clients=aws.clients, env=env)


def test_the_ref_is_split_as_everywhere_else(aws: Aws) -> None:
    """`@` inside the prefix belongs to the prefix; only the last segment's `@` names a ref."""
    aws.registry(manifest_bytes(), {})
    with pytest.raises(hook.GoldenSetError, match="s3://registry-bucket/registry@x/y"):
        hook.handler(
            {},
            None,
            clients=aws.clients,
            env={**ENV, hook.ENV_MODEL_URI: f"s3://{BUCKET}/registry@x/y"},
        )


def test_the_event_is_one_mangum_understands() -> None:
    from fastapi import FastAPI
    from mangum import Mangum

    app = FastAPI()

    @app.post("/predict")
    async def predict(payload: dict) -> dict:
        return {"got": payload}

    event = hook.api_event("POST", "/predict", {"image_base64": "aGk="})
    response = Mangum(app, lifespan="off")(event, None)
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"got": {"image_base64": "aGk="}}


def test_hook_and_infra_agree_on_names() -> None:
    assert hook.ENV_MODEL_URI == c.ENV_MODEL_URI
    assert hook.ENV_MODEL_SHA256 == c.ENV_MODEL_SHA256
    assert hook.ENV_TARGET == c.ENV_TARGET_VERSION_ARN
    assert hook.ENV_EXPECTED_VERSION == c.ENV_EXPECTED_VERSION
    assert f"{hook.__name__}.{hook.handler.__name__}" == c.HOOK_HANDLER
