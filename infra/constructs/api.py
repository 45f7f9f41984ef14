"""The public door: a REST API proxying every path to the `live` alias, metered by API keys.

Three kinds of request pass without a key, all still answered by the app: CORS preflights
(`OPTIONS` on any path; browsers never send `x-api-key` on them, and the app's CORS settings
decide the answer), the interactive docs (`/docs`, `/openapi.json`), and the web pages
(`GET /`, `GET /review`, `GET /static/...`: a browser sends no key on navigation; the pages'
scripts send the key the person typed, and the app itself decides who may review).
"""

from __future__ import annotations

import json

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra import constants as c
from infra.config import InfraConfig
from infra.constructs.log_groups import log_group
from infra.constructs.waf import managed_web_acl
from infra.nag import acknowledge

ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "time": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "apiKeyId": "$context.identity.apiKeyId",
    "method": "$context.httpMethod",
    "path": "$context.path",
    "status": "$context.status",
    "bytes": "$context.responseLength",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "integrationStatus": "$context.integrationStatus",
    "error": "$context.error.message",
}


class RestApi(Construct):
    """API Gateway REST API, usage plan and key, access logs, optional WAF.

    Attributes:
        api: the REST API.
        stage: its one stage, named after the config's stage.
        api_key: the key clients send as `x-api-key`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: InfraConfig,
        target: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        access_logs = log_group(self, "AccessLogs", retention_days=config.log_retention_days)
        self.api = apigw.LambdaRestApi(
            self,
            "Api",
            handler=target,
            proxy=False,  # the routes below: the proxy, plus methods that need no key
            rest_api_name=config.stack_name,
            description="wastesort: classify a photo of waste into a bin",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            binary_media_types=list(c.BINARY_MEDIA_TYPES),
            default_method_options=apigw.MethodOptions(api_key_required=True),
            cloud_watch_role=True,
            deploy_options=apigw.StageOptions(
                stage_name=config.stage,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                tracing_enabled=True,
                throttling_rate_limit=config.throttle_rate,
                throttling_burst_limit=config.throttle_burst,
            ),
        )
        self._routes()
        self.stage = self.api.deployment_stage
        # Execution logs (LoggingLevel ERROR) go to a group API Gateway names itself; made here
        # first, it keeps the stage's retention instead of never expiring.
        execution_logs = log_group(
            self,
            "ExecutionLogs",
            retention_days=config.log_retention_days,
            name=f"API-Gateway-Execution-Logs_{self.api.rest_api_id}/{config.stage}",
        )
        self.stage.node.add_dependency(execution_logs)
        plan = self.api.add_usage_plan(
            "UsagePlan",
            name=f"{config.stack_name}-clients",
            throttle=apigw.ThrottleSettings(
                rate_limit=config.throttle_rate, burst_limit=config.throttle_burst
            ),
            quota=apigw.QuotaSettings(limit=config.quota_per_day, period=apigw.Period.DAY),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.stage)],
        )
        self.api_key = self.api.add_api_key("ClientKey")
        plan.add_api_key(self.api_key)
        self._protect(config)
        self._acknowledge(has_waf=bool(config.waf_acl_arn or config.waf_managed))

    def _routes(self) -> None:
        """`ANY /` and `ANY /{proxy+}` need a key; `OPTIONS`, the docs and the pages do not."""
        proxy = self.api.root.add_proxy()  # ANY on / and /{proxy+}, with the default options
        proxy.add_method("OPTIONS", api_key_required=False)  # on / as well (a ProxyResource)
        for path in c.PUBLIC_PATHS:
            self.api.root.add_resource(path).add_method("ANY", api_key_required=False)
        self.api.root.add_method("GET", api_key_required=False)  # the try-it page
        for path in c.PAGE_PATHS:
            self.api.root.add_resource(path).add_method("GET", api_key_required=False)
        assets = self.api.root.add_resource(c.STATIC_PATH).add_proxy(any_method=False)
        assets.add_method("GET", api_key_required=False)

    def _protect(self, config: InfraConfig) -> None:
        acl_arn = config.waf_acl_arn
        if config.waf_managed:
            acl_arn = managed_web_acl(self, "WebAcl", name=config.stack_name).attr_arn
        if acl_arn:
            association = wafv2.CfnWebACLAssociation(
                self, "WebAclAssociation", resource_arn=self.stage.stage_arn, web_acl_arn=acl_arn
            )
            # The stage ARN is a formatted string, not a reference: order it explicitly.
            association.node.add_dependency(self.stage)

    def _acknowledge(self, *, has_waf: bool) -> None:
        acknowledge(
            self.api,
            rule="AwsSolutions-APIG2",
            reason="Every path proxies to one FastAPI app that validates each request itself "
            "and answers problems as application/problem+json.",
        )
        acknowledge(
            self.api,
            rule="AwsSolutions-APIG4",
            reason="Clients are machines metered by API keys and a usage plan (issue 6); CORS "
            "preflights (OPTIONS), the docs and the static web pages are public by design; "
            "reviewing needs an admin key, checked by the app. Put an IAM or Cognito "
            "authorizer in front when end users call it directly.",
        )
        acknowledge(
            self.api,
            rule="AwsSolutions-COG4",
            reason="No Cognito user pool: clients authenticate with API keys (see APIG4).",
        )
        acknowledge(
            self.api,
            rule="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            reason="The account-level role API Gateway needs to write execution logs; AWS "
            "maintains this policy and it grants only CloudWatch Logs writes.",
        )
        if not has_waf:
            acknowledge(
                self.api,
                rule="AwsSolutions-APIG3",
                reason="WAF is opt-in per stage (-c waf_managed=true or -c waf_acl_arn=...); "
                "without it the usage plan's throttle and quota bound abuse.",
            )
