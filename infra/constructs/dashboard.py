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


def _drift_search(
    metric: str, dimension: str, statistic: str, period: Duration
) -> cw.MathExpression:
    """One line per value of `dimension` of a metric the drift watch emits."""
    schema = f"{{{c.METRICS_NAMESPACE},{c.DIM_SERVICE},{dimension}}}"
    query = f'{schema} MetricName="{metric}" {c.DIM_SERVICE}="{c.DRIFT_SERVICE_NAME}"'
    return cw.MathExpression(
        expression=f"SEARCH('{query}', '{statistic}', {int(period.to_seconds())})",
        label="",
        period=period,
    )


def drift_rows(*, period: Duration, alarms: list[cw.Alarm]) -> list[list[cw.IWidget]]:
    """The drift and fleet watch's rows: verdict, score and expected accuracy per model
    version (0 ok, 1 warn, 2 drift), devices per version and stale devices, and the worst
    device verdicts; `period` is the watch's schedule."""
    version, device, graph = c.DIM_MODEL_VERSION, c.DIM_DEVICE, cw.GraphWidget
    fleet = {
        name: cw.Metric(
            namespace=c.METRICS_NAMESPACE,
            metric_name=name,
            dimensions_map={c.DIM_SERVICE: c.DRIFT_SERVICE_NAME},
            statistic="Maximum",
            period=period,
        )
        for name in (c.METRIC_DEVICES, c.METRIC_STALE_DEVICES, c.METRIC_DEVICES_BEHIND)
    }
    return [
        [
            graph(
                title="Drift verdict by model_version (0 ok, 1 warn, 2 drift)",
                left=[_drift_search(c.METRIC_DRIFT_VERDICT, version, "Maximum", period)],
                left_y_axis=cw.YAxisProps(min=0, max=2),
                width=8,
            ),
            graph(
                title="Drift score by model_version (-log10 p; 3 = drift level)",
                left=[_drift_search(c.METRIC_DRIFT_SCORE, version, "Maximum", period)],
                width=8,
            ),
            graph(
                title="Expected accuracy by model_version (mean confidence)",
                left=[_drift_search(c.METRIC_EXPECTED_ACCURACY, version, "Average", period)],
                left_y_axis=cw.YAxisProps(min=0, max=1),
                width=8,
            ),
        ],
        [
            graph(
                title="Devices by model_version",
                left=[_drift_search(c.METRIC_DEVICES_BY_VERSION, version, "Maximum", period)],
                width=8,
            ),
            graph(title="Fleet: devices, stale, behind", left=list(fleet.values()), width=8),
            graph(
                title="Device drift verdict (0 ok, 1 warn, 2 drift)",
                left=[_drift_search(c.METRIC_DEVICE_DRIFT_VERDICT, device, "Maximum", period)],
                left_y_axis=cw.YAxisProps(min=0, max=2),
                width=8,
            ),
        ],
        [cw.AlarmStatusWidget(title="Drift and fleet alarms", alarms=alarms, width=24)],
    ]
