"""CodeDeploy pre-traffic hook: replay the model's golden set against the new Lambda version.

CodeDeploy calls this before it shifts any traffic to a new version of the API function. The
hook invokes that version directly (not the alias), first `GET /health`, then `POST /predict`
with every golden image published with the model, and reports `Succeeded` only when the
version is healthy, serves the expected model, and answers every golden image under the one
golden-set rule (`wastesort.golden`: the published class, scores within its tolerance).
Anything else, including the hook failing to run, reports `Failed`, so no traffic moves.

CodeDeploy skips the hook when the alias is first created; a CDK Trigger then invokes this
same handler with an empty event, and a failure raises (which fails the stack deployment).
`python -m functions.hooks.pre_traffic --target ARN --model-uri URI` runs it by hand.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wastesort import golden
from wastesort.classifier import split_ref
from wastesort.errors import IntegrityError
from wastesort.manifest import GoldenItem, ModelEntry
from wastesort.registry import Registry
from wastesort.registry.s3 import S3Store

ENV_MODEL_URI = "MODEL_URI"
ENV_MODEL_SHA256 = "MODEL_SHA256"
ENV_TARGET = "TARGET_VERSION_ARN"
ENV_EXPECTED_VERSION = "EXPECTED_MODEL_VERSION"

log = logging.getLogger("wastesort.hooks.pre_traffic")
log.setLevel(logging.INFO)


class HookError(Exception):
    """The hook could not check the version (bad URI, unreadable registry, crashed target)."""


class GoldenSetError(Exception):
    """The new version failed the check; raised when no CodeDeploy hook execution is waiting."""


GoldenCase = tuple[GoldenItem, bytes]
"""One golden item of the manifest and its verified image bytes."""


@dataclass
class Verdict:
    """What the check found; `ok` only with no failure at all."""

    failures: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class Clients:
    """The AWS clients the hook uses; tests pass stubbed ones."""

    s3: Any
    lambda_: Any
    codedeploy: Any


def load_golden(s3: Any, model_uri: str) -> tuple[ModelEntry, list[GoldenCase]]:
    """Resolve the model the URI names and read its golden images, each verified by sha256.

    Args:
        s3: a boto3 S3 client.
        model_uri: the API's `MODEL_URI`, `s3://bucket/prefix[@ref]`.

    Returns:
        The manifest entry and its golden cases.

    Raises:
        HookError: not an `s3://` URI, or a golden image does not match its sha256 and size.
        wastesort.errors.WastesortError: the registry cannot be read or does not know the ref.
    """
    location, ref = split_ref(model_uri)
    if not location.startswith("s3://"):
        raise HookError(f"{ENV_MODEL_URI} must be an s3:// registry URI, got {model_uri!r}")
    cache = Path(tempfile.gettempdir()) / "wastesort-hook"  # Lambda's only writable place
    registry = Registry(S3Store(location, client=s3), cache_dir=cache)
    entry = registry.resolve(ref)
    cases = []
    for item in entry.golden_set:
        try:
            _, data = registry.fetch_content(item.image)
        except IntegrityError as exc:
            raise HookError(
                f"golden image {item.image.path} does not match its sha256 and size ({exc})"
            ) from None
        cases.append((item, data))
    return entry, cases


def api_event(method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An API Gateway (REST, v1) proxy event, as the API's Mangum adapter expects it."""
    headers = {"content-type": "application/json", "user-agent": "wastesort-pre-traffic-hook"}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": path,
            "stage": "pre-traffic-hook",
            "requestId": "pre-traffic-hook",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": headers["user-agent"]},
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def invoke(lambda_client: Any, target: str, event: Mapping[str, Any]) -> tuple[int, Any]:
    """Invoke the target version synchronously; return the HTTP status and the decoded body.

    Raises:
        HookError: the function itself failed (an unhandled error, a timeout, an import error).
    """
    response = lambda_client.invoke(
        FunctionName=target, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
    )
    payload = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError"):
        detail = payload.get("errorMessage") if isinstance(payload, dict) else payload
        raise HookError(f"{target} failed ({response['FunctionError']}): {detail}")
    if not isinstance(payload, dict) or "statusCode" not in payload:
        raise HookError(f"{target} answered no HTTP response: {str(payload)[:200]}")
    raw = payload.get("body") or ""
    if payload.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    try:
        body = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        body = raw
    return int(payload["statusCode"]), body


def verify(
    lambda_client: Any,
    target: str,
    entry: ModelEntry,
    cases: list[GoldenCase],
    *,
    expected_sha256: str | None = None,
) -> Verdict:
    """Check health, the model served, and every golden prediction; collect every failure."""
    verdict = Verdict()
    status, body = invoke(lambda_client, target, api_event("GET", "/health"))
    health = body if isinstance(body, dict) else {}
    if status != 200:
        verdict.failures.append(f"/health answered {status}: {str(body)[:200]}")
    elif health.get("model_version") != entry.version:
        verdict.failures.append(
            f"/health serves model {health.get('model_version')!r}, expected {entry.version!r}"
        )
    elif expected_sha256 and health.get("sha256") != expected_sha256.lower():
        verdict.failures.append(f"/health sha256 {health.get('sha256')!r} != {expected_sha256}")
    if not cases:
        verdict.failures.append(f"model {entry.version} has no golden set to replay")

    def predict(image: bytes) -> dict[str, Any]:
        request = {"image_base64": base64.b64encode(image).decode()}
        status, body = invoke(lambda_client, target, api_event("POST", "/predict", request))
        if status != 200:
            raise golden.PredictError(f"/predict answered {status}: {str(body)[:200]}")
        answer = body if isinstance(body, dict) else {}
        if answer.get("model_version") != entry.version:
            verdict.failures.append(
                f"/predict answered with model {answer.get('model_version')!r}, "
                f"expected {entry.version!r}"
            )
        return answer

    verdict.failures += golden.check(predict, entry, cases)
    verdict.checked = len(cases)
    return verdict


def run_checks(env: Mapping[str, str], clients: Clients) -> Verdict:
    """Load the golden set the environment names and verify the target version against it.

    Never raises: a check that cannot run is a failed check.
    """
    try:
        entry, cases = load_golden(clients.s3, env[ENV_MODEL_URI])
        expected = env.get(ENV_EXPECTED_VERSION)
        if expected and entry.version != expected:
            return Verdict([f"{env[ENV_MODEL_URI]} resolves to {entry.version}, not {expected}"])
        return verify(
            clients.lambda_,
            env[ENV_TARGET],
            entry,
            cases,
            expected_sha256=env.get(ENV_MODEL_SHA256) or None,
        )
    except Exception as exc:  # the hook must always report, whatever broke
        log.exception("pre-traffic check could not run")
        return Verdict([f"check could not run: {type(exc).__name__}: {exc}"])


def _default_clients() -> Clients:
    import boto3  # noqa: PLC0415 - only where AWS is really called
    from botocore.config import Config  # noqa: PLC0415

    # A cold version downloads and loads its model before answering; one retry at most, since
    # a retried invoke is a second request.
    invoke_config = Config(read_timeout=120, retries={"mode": "standard", "max_attempts": 2})
    return Clients(
        s3=boto3.client("s3"),
        lambda_=boto3.client("lambda", config=invoke_config),
        codedeploy=boto3.client("codedeploy"),
    )


def handler(
    event: Mapping[str, Any],
    context: Any,
    *,
    clients: Clients | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Lambda entry point for CodeDeploy's `BeforeAllowTraffic` (and the first-deploy trigger).

    Args:
        event: CodeDeploy's `{DeploymentId, LifecycleEventHookExecutionId}`, or `{}`.
        context: the Lambda context (unused).
        clients: AWS clients (tests); default boto3 clients.
        env: the environment (tests); default `os.environ`.

    Returns:
        `{"status": "Succeeded"|"Failed", "checked": n, "failures": [...]}`.

    Raises:
        GoldenSetError: the check failed and no CodeDeploy execution waits for the status.
    """
    clients = clients or _default_clients()
    verdict = run_checks(env if env is not None else os.environ, clients)
    status = "Succeeded" if verdict.ok else "Failed"
    report = {"status": status, "checked": verdict.checked, "failures": verdict.failures}
    log.info(json.dumps(report))
    if "DeploymentId" in event:
        clients.codedeploy.put_lifecycle_event_hook_execution_status(
            deploymentId=event["DeploymentId"],
            lifecycleEventHookExecutionId=event["LifecycleEventHookExecutionId"],
            status=status,
        )
    elif not verdict.ok:
        raise GoldenSetError("; ".join(verdict.failures))
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the check by hand (e.g. against the `live` alias after a deployment)."""
    parser = argparse.ArgumentParser(prog="python -m functions.hooks.pre_traffic")
    parser.add_argument("--target", required=True, help="function ARN, version or alias")
    parser.add_argument("--model-uri", required=True, help="s3://bucket/prefix@version")
    parser.add_argument("--sha256", default="", help="the model's expected sha256")
    args = parser.parse_args(argv)
    env = {ENV_MODEL_URI: args.model_uri, ENV_TARGET: args.target, ENV_MODEL_SHA256: args.sha256}
    verdict = run_checks(env, _default_clients())
    for failure in verdict.failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"{'ok' if verdict.ok else 'FAILED'}: {verdict.checked} golden images")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
