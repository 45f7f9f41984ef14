"""`cdk synth` entry point (see cdk.json): validate context, build the stage's stack, run cdk-nag.

cdk-nag's AwsSolutions pack runs as a CDK validation plugin: synth fails on any finding that is
not acknowledged, and every acknowledgment in `infra/constructs/` carries its reason.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from aws_cdk import App, Environment, Tags, Validations
from cdk_nag import AwsSolutionsChecks

from infra import constants as c
from infra.config import ConfigError, InfraConfig
from infra.stack import WastesortStack


def build_app(
    context: dict[str, Any] | None = None, *, outdir: str | None = None
) -> tuple[App, WastesortStack]:
    """Build the app for the stage that the context names.

    Args:
        context: CDK context (tests); the CLI passes it through the environment instead.
        outdir: where the cloud assembly goes (tests); the CLI sets it.

    Returns:
        The app (call `synth()`) and its one stack.

    Raises:
        ConfigError: bad or missing context, or no Lambda package at `package`.
    """
    app = App(context=context, outdir=outdir)
    config = InfraConfig.from_context(app.node.get_all_context())
    if not config.registry_only:
        config.require_package()
        config.require_drift_package()
    env = Environment(
        account=config.account or os.environ.get("CDK_DEFAULT_ACCOUNT"),
        region=config.region or os.environ.get("CDK_DEFAULT_REGION"),
    )
    stack = WastesortStack(
        app,
        config.stack_name,
        config=config,
        env=env,
        description=f"{c.APP_NAME} {config.stage}: waste-sorting API, canary, alarms, devices",
    )
    Tags.of(app).add("project", c.APP_NAME)
    Tags.of(app).add("stage", config.stage)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def main(context: dict[str, Any] | None = None) -> int:
    """Synthesize, or print one clear line about the context and exit 2."""
    try:
        app, _ = build_app(context)
    except ConfigError as exc:
        print(f"wastesort infra: {exc}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
