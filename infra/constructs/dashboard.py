"""The stage's dashboard: API, Lambda, and the model's own metrics split by `model_version`.

The per-version widgets use SEARCH, so a version deployed tomorrow shows up without a redeploy
and a canary's new version sits next to the one it replaces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from constructs import Construct

from infra import constants as c

if TYPE_CHECKING:
    from infra.constructs.serving import Serving

PERIOD = Duration.minutes(5)
WIDTH = 12


def by_model_version(metric: str, statistic: str) -> cw.MathExpression:
    """One line per `model_version` of an EMF metric the API emits."""
    schema = f"{{{c.METRICS_NAMESPACE},{c.DIM_MODEL_VERSION},{c.DIM_SERVICE}}}"
    query = f'{schema} MetricName="{metric}" {c.DIM_SERVICE}="{c.SERVICE_NAME}"'
    return cw.MathExpression(
        expression=f"SEARCH('{query}', '{statistic}', {int(PERIOD.to_seconds())})",
        label="",
        period=PERIOD,
    )


def build_dashboard(
    scope: Construct,
    construct_id: str,
    *,
    name: str,
    stage: apigw.Stage,
    serving: Serving,
    alarms: list[cw.Alarm],
) -> cw.Dashboard:
    """The stage's dashboard.

    Args:
        scope: the parent construct.
        construct_id: the dashboard's id.
        name: the dashboard's name (the stack name).
        stage: the API stage whose metrics to show.
        serving: the API function and its alias.
        alarms: shown first, as a status board.

    Returns:
        The dashboard.
    """
    alias = serving.alias
    graph = cw.GraphWidget
    rows: list[list[cw.IWidget]] = [
        [cw.AlarmStatusWidget(title="Alarms", alarms=alarms, width=24)],
        [
            graph(
                title="API requests and errors",
                left=[stage.metric_count(period=PERIOD)],
                right=[
                    stage.metric_client_error(period=PERIOD),
                    stage.metric_server_error(period=PERIOD),
                ],
                width=WIDTH,
            ),
            graph(
                title="API latency (ms)",
                left=[
                    stage.metric_latency(statistic="p50", period=PERIOD),
                    stage.metric_latency(statistic="p99", period=PERIOD),
                ],
                width=WIDTH,
            ),
        ],
        [
            graph(
                title="Lambda (alias live)",
                left=[alias.metric_invocations(period=PERIOD)],
                right=[alias.metric_errors(period=PERIOD), alias.metric_throttles(period=PERIOD)],
                width=WIDTH,
            ),
            graph(
                title="Lambda duration (ms)",
                left=[
                    alias.metric_duration(statistic="p50", period=PERIOD),
                    alias.metric_duration(statistic="p99", period=PERIOD),
                ],
                width=WIDTH,
            ),
        ],
        [
            graph(
                title="Predictions by model_version",
                left=[by_model_version(c.METRIC_PREDICTIONS, "Sum")],
                width=WIDTH,
            ),
            graph(
                title="Uncertain predictions by model_version",
                left=[by_model_version(c.METRIC_UNCERTAIN, "Sum")],
                width=WIDTH,
            ),
        ],
        [
            graph(
                title="Predict latency p99 (ms) by model_version",
                left=[by_model_version(c.METRIC_LATENCY, "p99")],
                width=WIDTH,
            ),
            graph(
                title="Prediction errors by model_version",
                left=[by_model_version(c.METRIC_ERRORS, "Sum")],
                width=WIDTH,
            ),
        ],
    ]
    return cw.Dashboard(scope, construct_id, dashboard_name=name, widgets=rows)
