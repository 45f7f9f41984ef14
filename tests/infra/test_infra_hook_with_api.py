"""The hook against the real API app and a real registry layout (moto S3), end to end.

The stubbed tests pin the hook's own logic; this one pins the contracts it shares with the
other parts: the registry's keys for the manifest and golden images, the API Gateway event
the API's Mangum adapter accepts, and the fields `/health` and `/predict` answer.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from mangum import Mangum
from moto import mock_aws

from functions.api.app import create_app
from functions.api.settings import Settings
from functions.hooks import pre_traffic as hook
from tests.conftest import LABELS, sample_bytes, tiny_fields
from wastesort import Classifier
from wastesort.registry import GoldenSample, Registry

BUCKET = "wastesort-registry"
REGION = "eu-west-1"
EVENT = {"DeploymentId": "d-XYZ", "LifecycleEventHookExecutionId": "exec-1"}


class ApiLambda:
    """Stands in for `lambda:Invoke` on a version: the real handler's app behind Mangum."""

    def __init__(self, model_uri: str, sha256: str) -> None:
        settings = Settings(model_uri=model_uri, model_sha256=sha256 or None, model_retry_s=0)
        app = create_app(settings, load_on_startup=False)
        app.state.model.load()
        self.handler = Mangum(app, lifespan="off")
        self.targets: list[str] = []

    def invoke(self, *, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:  # noqa: N803 - boto3's names
        assert InvocationType == "RequestResponse"
        self.targets.append(FunctionName)
        response = self.handler(json.loads(Payload), None)
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(response).encode())}


@pytest.fixture
def registry(
    tiny_int8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """`tiny-good` (its golden image labelled as the model answers) and `tiny-bad` (not)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "WASTESORT_CACHE_DIR": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto3.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        root = f"s3://{BUCKET}/registry"
        registry = Registry.from_uri(root, cache_dir=tmp_path / "cache")
        image = sample_bytes("glass")
        registry.publish(tiny_int8, version="probe", **tiny_fields())
        answer = Classifier.load(f"{root}@probe").predict(image).predicted_class
        wrong = next(label for label in LABELS if label != answer)
        for version, expected in (("tiny-good", answer), ("tiny-bad", wrong)):
            registry.publish(
                tiny_int8,
                version=version,
                golden=[GoldenSample("glass.jpg", image, expected)],
                **tiny_fields(),
            )
        yield {"root": root, "sha256": registry.manifest().entry("tiny-good").sha256}


def _run(model_uri: str, *, report: str, sha256: str = "") -> tuple[dict[str, Any], ApiLambda]:
    api = ApiLambda(model_uri, sha256)  # the stack gives both the same MODEL_URI/MODEL_SHA256
    codedeploy = boto3.client("codedeploy")
    env = {
        hook.ENV_MODEL_URI: model_uri,
        hook.ENV_TARGET: "arn:aws:lambda:eu-west-1:123456789012:function:api:3",
        hook.ENV_EXPECTED_VERSION: model_uri.rpartition("@")[2],
        hook.ENV_MODEL_SHA256: sha256,
    }
    with Stubber(codedeploy) as stub:
        stub.add_response(
            "put_lifecycle_event_hook_execution_status",
            {"lifecycleEventHookExecutionId": "exec-1"},
            {"deploymentId": "d-XYZ", "lifecycleEventHookExecutionId": "exec-1", "status": report},
        )
        clients = hook.Clients(s3=boto3.client("s3"), lambda_=api, codedeploy=codedeploy)
        result = hook.handler(EVENT, None, clients=clients, env=env)
        stub.assert_no_pending_responses()
    return result, api


def test_a_right_golden_set_lets_the_version_take_traffic(registry: dict[str, str]) -> None:
    result, api = _run(
        f"{registry['root']}@tiny-good", report="Succeeded", sha256=registry["sha256"]
    )
    assert result == {"status": "Succeeded", "checked": 1, "failures": []}
    assert len(api.targets) == 2  # /health, then one /predict
    assert all(target.endswith(":3") for target in api.targets)  # the version, not the alias


def test_a_wrong_golden_answer_fails_the_deployment(registry: dict[str, str]) -> None:
    result, _ = _run(f"{registry['root']}@tiny-bad", report="Failed")
    assert result["status"] == "Failed"
    assert result["failures"][0].startswith("artifacts/tiny-bad/golden/000-glass.jpg: expected")


def test_a_sha256_the_api_refuses_fails_the_deployment(registry: dict[str, str]) -> None:
    result, _ = _run(f"{registry['root']}@tiny-good", report="Failed", sha256="0" * 64)
    assert result["status"] == "Failed"
    assert result["failures"][0].startswith("/health answered 503")
