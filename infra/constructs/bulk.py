"""Bulk classification: a Step Functions Distributed Map over an S3 prefix, in batches, on Lambda.

`StartExecution` with `{"input_prefix": "input/<job>/", "model_version": "<version id>"}`:
the map lists the prefix (`S3ObjectsItemReader`), hands the keys to the batch handler
(`functions.bulk.handler`, the API's package) `bulk_batch_size` at a time in EXPRESS child
workflows, and `ResultWriterV2` writes the children's records as JSON lines under
`results/<map run id>/` (Step Functions' own `manifest.json` indexes them); the last two states
add `run-summary.json` there with the run's item counts.

Least privilege, written out: the automatic grants of the reader and writer name the whole
bucket, so the state machine's role takes no automatic policy at all (`without_policy_updates`)
and every statement below is scoped to the input or results prefix, the batch function and this
state machine's own executions.
"""

from __future__ import annotations

from typing import cast

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra import constants as c
from infra.config import InfraConfig
from infra.constructs.buckets import private_bucket
from infra.constructs.functions import service_environment, small_function
from infra.constructs.log_groups import log_group
from infra.constructs.model_bucket import ModelBucket
from infra.nag import acknowledge, object_wildcard_finding

NONCURRENT_DAYS = 7
LAMBDA_RETRY_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
]
"""Lambda's own failures and throttles: worth retrying. A batch that raised is not (the
handler turns every bad image into a record, so a raise means the model or event is wrong)."""
RUN_TIMEOUT = Duration.hours(24)
"""A run that has not ended in a day is stopped: about 300 million images at the defaults."""
NO_RESOURCE_LEVEL = "AwsSolutions-IAM5[Resource::*]"
INPUT_KEYS = f"{c.BULK_INPUT_PREFIX}/*"
RESULTS_KEYS = f"{c.BULK_RESULTS_PREFIX}/*"


class Bulk(Construct):
    """The bulk bucket, the batch function and the state machine.

    Attributes:
        input_bucket, results_bucket: where jobs read (`input/`) and write (`results/`).
        function: the batch handler.
        state_machine: start an execution per job (`tools/bulk_start.py`).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: InfraConfig,
        code: lambda_.Code,
        models: ModelBucket,
        access_logs: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        owned = None
        if not (config.bulk_input_bucket and config.bulk_results_bucket):
            owned = private_bucket(
                self, "Bucket", access_logs=access_logs, noncurrent_days=NONCURRENT_DAYS
            )
        self.input_bucket = self._bucket("Input", config.bulk_input_bucket, owned)
        self.results_bucket = self._bucket("Results", config.bulk_results_bucket, owned)
        self.function = self._function(config, code, models)
        self.state_machine = self._state_machine(config)

    def _bucket(self, name: str, existing: str | None, owned: s3.IBucket | None) -> s3.IBucket:
        if existing:
            return s3.Bucket.from_bucket_name(self, f"{name}Bucket", existing)
        assert owned is not None
        return owned

    @property
    def input_uri(self) -> str:
        return f"s3://{self.input_bucket.bucket_name}/{c.BULK_INPUT_PREFIX}/"

    @property
    def results_uri(self) -> str:
        return f"s3://{self.results_bucket.bucket_name}/{c.BULK_RESULTS_PREFIX}/"

    def _list_input(self) -> iam.PolicyStatement:
        """Listing only under `input/`: the reader lists a job's prefix and nothing else."""
        prefix = c.BULK_INPUT_PREFIX
        return iam.PolicyStatement(
            actions=["s3:ListBucket"],
            resources=[self.input_bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
        )

    def _function(
        self, config: InfraConfig, code: lambda_.Code, models: ModelBucket
    ) -> lambda_.Function:
        function = small_function(
            self,
            "Function",
            code=code,
            handler=c.BULK_HANDLER,
            memory_mb=config.bulk_memory_mb,
            timeout=Duration.seconds(config.bulk_timeout_s),
            log_retention_days=config.log_retention_days,
            traced=True,
            environment={
                # The registry, no ref: each job pins its version in the execution input.
                c.ENV_MODEL_URI: f"s3://{models.bucket.bucket_name}/{models.prefix}",
                **service_environment(c.BULK_SERVICE_NAME),
            },
        )
        role = cast("iam.Role", function.role)  # small_function always makes one
        models.grant_read(role)
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[self.input_bucket.arn_for_objects(INPUT_KEYS)]
            )
        )
        acknowledge(
            role,
            rule=object_wildcard_finding(self.input_bucket, INPUT_KEYS),
            reason="Read-only, and only the objects under the bulk input prefix: the images a "
            "job classifies.",
        )
        return function

    def _definition(self, config: InfraConfig) -> sfn.IChainable:
        classify = tasks.LambdaInvoke(
            self,
            "ClassifyBatch",
            lambda_function=self.function,
            payload=sfn.TaskInput.from_json_path_at("$"),
            retry_on_service_exceptions=False,  # the retry below names them, throttles too
            output_path="$.Payload.records",  # one JSON line per image once FLATTENed
        )
        classify.add_retry(
            errors=LAMBDA_RETRY_ERRORS,
            interval=Duration.seconds(2),
            max_attempts=6,
            backoff_rate=2,
            jitter_strategy=sfn.JitterType.FULL,
        )
        classify.add_catch(
            sfn.Fail(self, "BatchFailed", error="BatchFailed", cause_path="$.error.Cause"),
            errors=[sfn.Errors.ALL],
            result_path="$.error",
        )
        # Rendered as given (CDK does not turn paths into `.$` keys here): from the map's input.
        batch_input = {
            "bucket": self.input_bucket.bucket_name,
            "model_version.$": "$.model_version",
        }
        classify_all = sfn.DistributedMap(
            self,
            "ClassifyAll",
            # On the map itself: set on the item processor alone, children still run STANDARD.
            map_execution_type=sfn.StateMachineType.EXPRESS,
            item_reader=sfn.S3ObjectsItemReader(
                bucket=self.input_bucket, prefix=sfn.JsonPath.string_at("$.input_prefix")
            ),
            item_batcher=sfn.ItemBatcher(
                max_items_per_batch=config.bulk_batch_size, batch_input=batch_input
            ),
            max_concurrency=config.bulk_max_concurrency,
            tolerated_failure_percentage=config.bulk_tolerated_failure_percent,
            result_writer_v2=sfn.ResultWriterV2(
                bucket=self.results_bucket,
                prefix=c.BULK_RESULTS_PREFIX,
                writer_config=sfn.WriterConfig(
                    output_type=sfn.OutputType.JSONL,
                    transformation=sfn.Transformation.FLATTEN,
                ),
            ),
            result_path="$.map",
        )
        classify_all.item_processor(classify)
        describe = tasks.CallAwsService(
            self,
            "DescribeRun",
            service="sfn",
            action="describeMapRun",
            iam_action="states:DescribeMapRun",
            iam_resources=["*"],  # unused: the role takes no automatic policy (see module)
            parameters={"MapRunArn": sfn.JsonPath.string_at("$.map.MapRunArn")},
            result_path="$.run",  # whole: status, item and execution counts, start and stop
        )
        run_id = sfn.JsonPath.array_get_item(
            sfn.JsonPath.string_split(sfn.JsonPath.string_at("$.map.MapRunArn"), ":"), 7
        )
        summary_key = sfn.JsonPath.format(
            f"{c.BULK_RESULTS_PREFIX}/{{}}/{c.BULK_RUN_SUMMARY}", run_id
        )
        write_summary = tasks.CallAwsService(
            self,
            "WriteRunSummary",
            service="s3",
            action="putObject",
            iam_action="s3:PutObject",
            iam_resources=["*"],  # unused, as above
            parameters={
                "Bucket": self.results_bucket.bucket_name,
                "Key": summary_key,
                "ContentType": "application/json",
                "Body": {
                    "execution": sfn.JsonPath.execution_id,
                    "input": sfn.JsonPath.format(
                        f"s3://{self.input_bucket.bucket_name}/{{}}",
                        sfn.JsonPath.string_at("$.input_prefix"),
                    ),
                    "model_version": sfn.JsonPath.string_at("$.model_version"),
                    "map_run": sfn.JsonPath.string_at("$.map.MapRunArn"),
                    "results": sfn.JsonPath.object_at("$.map.ResultWriterDetails"),
                    "run": sfn.JsonPath.object_at("$.run"),
                },
            },
            result_path=sfn.JsonPath.DISCARD,
        )
        return classify_all.next(describe).next(write_summary)

    def _state_machine(self, config: InfraConfig) -> sfn.StateMachine:
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("states.amazonaws.com"))
        for statement in self._role_statements():
            role.add_to_policy(statement)
        logs = log_group(self, "StateMachineLogs", retention_days=config.log_retention_days)
        state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(self._definition(config)),
            state_machine_type=sfn.StateMachineType.STANDARD,
            role=role.without_policy_updates(),
            logs=sfn.LogOptions(destination=logs, level=sfn.LogLevel.ALL),
            tracing_enabled=True,
            timeout=RUN_TIMEOUT,
            removal_policy=RemovalPolicy.DESTROY,
        )
        # Created once the role's policy exists: Step Functions checks the log delivery rights.
        state_machine.node.add_dependency(role)
        self._run_policy(role, state_machine)
        return state_machine

    def _role_statements(self) -> list[iam.PolicyStatement]:
        """What the state machine does before it runs: list the input, invoke the function,
        write results, deliver logs and traces. Nothing here names the state machine."""
        return [
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"], resources=[self.function.function_arn]
            ),
            self._list_input(),
            iam.PolicyStatement(
                # ResultWriter's multipart upload of the result files, and the run summary.
                actions=[
                    "s3:PutObject",
                    "s3:GetObject",
                    "s3:ListMultipartUploadParts",
                    "s3:AbortMultipartUpload",
                ],
                resources=[self.results_bucket.arn_for_objects(RESULTS_KEYS)],
            ),
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogDelivery",
                    "logs:GetLogDelivery",
                    "logs:UpdateLogDelivery",
                    "logs:DeleteLogDelivery",
                    "logs:ListLogDeliveries",
                    "logs:PutResourcePolicy",
                    "logs:DescribeResourcePolicies",
                    "logs:DescribeLogGroups",
                    "xray:PutTraceSegments",
                    "xray:PutTelemetryRecords",
                    "xray:GetSamplingRules",
                    "xray:GetSamplingTargets",
                ],
                resources=["*"],
            ),
        ]

    def _run_policy(self, role: iam.Role, state_machine: sfn.StateMachine) -> iam.Policy:
        """The map's rights over this state machine's own child executions and map runs: a
        policy apart from the role's, since it names the state machine (which must not wait
        for it)."""
        stack = Stack.of(self)
        name = state_machine.state_machine_name

        def arn(resource: str, resource_name: str) -> str:
            return stack.format_arn(
                service="states",
                resource=resource,
                resource_name=resource_name,
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )

        policy = iam.Policy(
            self,
            "RunPolicy",
            roles=[role],
            statements=[
                iam.PolicyStatement(
                    actions=["states:StartExecution"], resources=[state_machine.state_machine_arn]
                ),
                iam.PolicyStatement(
                    actions=["states:DescribeExecution", "states:StopExecution"],
                    # its executions, and the map's children (`<name>/<label>:<id>`)
                    resources=[arn("execution", f"{name}:*"), arn("execution", f"{name}/*")],
                ),
                iam.PolicyStatement(
                    actions=["states:DescribeMapRun"], resources=[arn("mapRun", f"{name}/*")]
                ),
            ],
        )
        self._acknowledge(role, policy, state_machine)
        return policy

    def _acknowledge(
        self, role: iam.Role, run_policy: iam.Policy, state_machine: sfn.StateMachine
    ) -> None:
        acknowledge(
            role,
            rule=object_wildcard_finding(self.results_bucket, RESULTS_KEYS),
            reason="Step Functions writes the result files and the run summary under the "
            "results prefix only.",
        )
        acknowledge(
            role,
            rule=NO_RESOURCE_LEVEL,
            reason="CloudWatch Logs' log-delivery APIs and X-Ray's trace APIs support no "
            "resource-level permissions (AWS's documented policy for state machine logging).",
        )
        logical_id = Stack.of(self).resolve(state_machine.node.default_child.logical_id)  # type: ignore[union-attr]
        states = "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:"
        for pattern in (":*", "/*"):
            acknowledge(
                run_policy,
                rule=f"{states}<AWS::AccountId>:execution:<{logical_id}.Name>{pattern}]",
                reason="The executions of this one state machine and of its map's children.",
            )
        acknowledge(
            run_policy,
            rule=f"{states}<AWS::AccountId>:mapRun:<{logical_id}.Name>/*]",
            reason="The map runs of this one state machine, read for the run summary.",
        )
        # CDK's automatic policy for the map is attached to nothing (the role takes no automatic
        # policy), so it is not in the template; cdk-nag reads the tree and sees it all the same.
        machine = '{"Fn::Select":[6,{"Fn::Split":[":",{"Ref":"%s"}]}]}' % logical_id  # noqa: UP031
        for suffix in (":*", "/*:*"):
            acknowledge(
                state_machine.node.find_child("DistributedMapPolicy"),
                rule=f"{states}<AWS::AccountId>:execution:{machine}{suffix}]",
                reason="Attached to no role, so never deployed; RunPolicy grants its rights.",
            )
