"""Start a bulk classification job on a deployed stage and say where its results land.

python -m tools.bulk_start s3://<BulkBucket>/input/<job>/ <version id> [--stack wastesort-dev]
                           [--name NAME] [--wait]

`make bulk INPUT=... MODEL=...` runs it. The stack's outputs name the state machine and the
input and results locations (`infra/constructs/bulk.py`); the input must lie under the input
prefix (the state machine may list nothing else) and the model must be a version id published
in the stage's registry (a job is one version throughout: an alias could move mid-run, an
unknown id would fail every image). Results: `<BulkResultsUri><map run id>/` holds
`SUCCEEDED_*.jsonl` (one `wastesort.bulk.to_record` line per image), `FAILED_*.jsonl` (failed
batches, with their keys), Step Functions' `manifest.json` and the run's `run-summary.json`.
With `--wait` it polls until the run ends and prints that exact folder and the item counts.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from infra.constants import MODEL_NAME_PATTERN
from wastesort.bulk import parse_s3
from wastesort.errors import WastesortError

OUTPUTS = (
    "BulkStateMachineArn",
    "BulkInputUri",
    "BulkResultsUri",
    "RegistryBucket",
    "RegistryPrefix",
)
POLL_S = 10.0


class JobError(Exception):
    """A job that cannot start (bad input, no such stack); the message is the one line shown."""


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    """The bulk outputs of a deployed stack.

    Raises:
        JobError: no such stack, or one deployed without the bulk part.
    """
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    try:
        found = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    except (ClientError, BotoCoreError) as exc:
        raise JobError(f"cannot read stack {stack!r}: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}
    missing = [name for name in OUTPUTS if name not in outputs]
    if missing:
        raise JobError(f"stack {stack!r} has no {', '.join(missing)}: deploy it first")
    return outputs


def execution_input(input_uri: str, model: str, outputs: dict[str, str]) -> dict[str, str]:
    """`{"input_prefix", "model_version"}`, once both are known to be acceptable.

    Raises:
        JobError: the input is not under the stack's input prefix, or the model no version id.
    """
    try:
        bucket, prefix = parse_s3(input_uri)
        allowed_bucket, allowed = parse_s3(outputs["BulkInputUri"])
    except WastesortError as exc:
        raise JobError(exc.message) from None
    prefix = f"{prefix.strip('/')}/"
    if bucket != allowed_bucket or not prefix.startswith(allowed):
        raise JobError(
            f"{input_uri} is not under {outputs['BulkInputUri']}: copy the images there "
            f"(aws s3 sync <folder> {outputs['BulkInputUri']}<job>/)"
        )
    if not re.match(MODEL_NAME_PATTERN, model):
        raise JobError(f"{model!r} is not a version id (see `wastesort registry <uri> list`)")
    return {"input_prefix": prefix, "model_version": model}


def check_published(session: Any, outputs: dict[str, str], model: str) -> None:
    """Refuse an alias or a version the stage's registry (its `manifest.json`) does not list.

    Raises:
        JobError: an alias, an unknown version, or a manifest that cannot be read.
    """
    from wastesort.registry import Registry  # noqa: PLC0415
    from wastesort.registry.s3 import S3Store  # noqa: PLC0415

    uri = f"s3://{outputs['RegistryBucket']}/{outputs['RegistryPrefix']}"
    try:
        manifest = Registry(S3Store(uri, client=session.client("s3"))).manifest()
    except WastesortError as exc:
        raise JobError(f"cannot read the registry {uri}: {exc.message}") from None
    if model in manifest.aliases:
        raise JobError(
            f"{model!r} is an alias (now {manifest.resolve(model).version}): pass a version id, "
            "so the whole job uses one version"
        )
    if model not in manifest.versions:
        raise JobError(f"no version {model!r} in {uri} (see `wastesort registry {uri} list`)")


def start(sfn: Any, outputs: dict[str, str], job: dict[str, str], name: str | None) -> str:
    """Start the execution; returns its ARN."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    default = f"{job['model_version'][:40]}-{stamp}"
    response = sfn.start_execution(
        stateMachineArn=outputs["BulkStateMachineArn"],
        name=re.sub(r"[^A-Za-z0-9_-]", "-", name or default)[:80],
        input=json.dumps(job),
    )
    return str(response["executionArn"])


def wait(sfn: Any, execution_arn: str, outputs: dict[str, str]) -> int:
    """Poll until the execution ends; print where its results are and the item counts."""
    while (status := sfn.describe_execution(executionArn=execution_arn)["status"]) == "RUNNING":
        time.sleep(POLL_S)
    runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
    if runs:
        run = sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"])
        run_id = runs[0]["mapRunArn"].rsplit(":", 1)[-1]
        print(f"results:   {outputs['BulkResultsUri']}{run_id}/")
        print(f"items:     {json.dumps(run.get('itemCounts', {}), default=str)}")
    print(f"status:    {status}")
    return 0 if status == "SUCCEEDED" else 1


def main(argv: list[str] | None = None, *, session: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bulk_start", description=__doc__)
    parser.add_argument("input", help="s3://<BulkBucket>/input/<job>/ (the images)")
    parser.add_argument("model", help="the version id every image is classified with")
    parser.add_argument("--stack", default="wastesort-dev", help="the deployed stage's stack")
    parser.add_argument("--name", help="the execution's name (default: <model>-<UTC time>)")
    parser.add_argument("--wait", action="store_true", help="poll until the run ends")
    args = parser.parse_args(argv)
    if session is None:
        import boto3  # noqa: PLC0415

        session = boto3.session.Session()
    try:
        outputs = stack_outputs(session.client("cloudformation"), args.stack)
        job = execution_input(args.input, args.model, outputs)
        check_published(session, outputs, args.model)
        sfn = session.client("stepfunctions")
        execution_arn = start(sfn, outputs, job, args.name)
    except JobError as exc:
        print(f"bulk: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # credentials, throttling: one line, not a traceback
        print(f"bulk: cannot start the job: {exc}", file=sys.stderr)
        return 1
    print(f"execution: {execution_arn}")
    print(f"input:     s3://{parse_s3(args.input)[0]}/{job['input_prefix']}")
    print(
        f"results:   {outputs['BulkResultsUri']}<map run id>/ (SUCCEEDED_*.jsonl: one line per "
        "image; FAILED_*.jsonl: failed batches; run-summary.json once it ends)"
    )
    return wait(sfn, execution_arn, outputs) if args.wait else 0


if __name__ == "__main__":
    sys.exit(main())
