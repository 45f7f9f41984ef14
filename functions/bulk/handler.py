"""The batch handler: `functions.bulk.handler.handler`, one Distributed Map child per batch.

Step Functions lists the input prefix (`S3ObjectsItemReader`), groups the keys (`ItemBatcher`)
and invokes this function with `{"Items": [{"Key", "Size", ...}], "BatchInput": {"bucket",
"model_version"}}`. Every object becomes one `wastesort.bulk.to_record` line, an error record
when it is missing, unreadable or not an image: only a model that cannot load (or the function
itself failing) fails the batch, and then Step Functions' retry, catch and tolerated failure
percentage decide. The child's output is `{"records", "counts", ...}`; the state machine keeps
`records`, so its JSONL results hold one line per image, the same lines as `wastesort classify
--out` writes locally.

The model comes from the registry in `MODEL_URI` (the same setting and loader as the API), at
the version the execution pins; it is cached per version across warm invocations. Objects are
fetched on a few threads while inference runs on one interpreter: on Lambda the S3 round trips,
not the model, would otherwise set the pace. A batch's objects are held in memory together, so
an object over `functions.bulk.limits.max_object_bytes` of the function's memory
(`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`) and the batch's size gets a `too_large` record, unread.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions.api.metric_names import DIM_MODEL_VERSION, METRICS_NAMESPACE
from functions.api.model import ModelState, load_failure
from functions.api.observability import logger
from functions.api.settings import Settings
from functions.bulk.limits import MIB, max_object_bytes
from wastesort.bulk import to_record
from wastesort.classifier import Classifier, split_ref
from wastesort.errors import ImageError, WastesortError
from wastesort.registry.s3 import S3Store

SERVICE_NAME = "wastesort-bulk"
METRIC_IMAGES = "BulkImages"
METRIC_FAILED = "BulkFailedImages"
METRIC_MS_PER_IMAGE = "BulkMsPerImage"
FETCH_THREADS = 16
"""Objects read at once: enough to hide S3's first-byte latency behind inference."""
ENV_MEMORY_MB = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
"""Set by Lambda: the function's memory, which a batch's objects must fit in."""
MAX_MODELS = 2
"""Versions kept loaded in one sandbox; a job pins one, so two covers a switch-over."""
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""A version id as the manifest spells it (no `/`, no `..`): checked before it names a path."""

metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)


class BatchError(Exception):
    """The batch as a whole cannot run (a malformed event, a model that does not load)."""


class Item(BaseModel):
    """One object as `S3ObjectsItemReader` lists it (`Etag`, `Size`, ... are ignored)."""

    model_config = ConfigDict(extra="ignore")
    Key: str = Field(min_length=1)
    Size: int | None = None


class BatchInput(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())
    bucket: str = Field(min_length=3)
    model_version: str = Field(pattern=VERSION_PATTERN)


class BatchEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Items: list[Item]
    BatchInput: BatchInput


class BatchRunner:
    """Classifies batches with one cached classifier per pinned version.

    Args:
        settings: the API's settings (`MODEL_URI` names the registry; its `@ref`, if any, is
            replaced by the version each batch pins).
        client: an S3 client (tests); None makes one on first use.
        memory_mb: the function's memory (default: Lambda's `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`;
            unset, objects up to `MAX_OBJECT_BYTES` are read).
    """

    def __init__(
        self, settings: Settings, *, client: Any = None, memory_mb: int | None = None
    ) -> None:
        self.settings = settings
        self.memory_mb = memory_mb or int(os.environ.get(ENV_MEMORY_MB) or 0) or None
        self.registry = split_ref(settings.model_uri)[0]
        self._client = client
        self._models: OrderedDict[str, ModelState] = OrderedDict()

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # noqa: PLC0415 - made once per sandbox, on the first batch
            from botocore.config import Config  # noqa: PLC0415

            # One connection per fetch thread; S3's throttling (SlowDown) retried with backoff
            # rather than turned into error records.
            config = Config(
                max_pool_connections=FETCH_THREADS, retries={"mode": "standard", "max_attempts": 6}
            )
            self._client = boto3.client("s3", config=config)
        return self._client

    def classifier(self, version: str) -> Classifier:
        """The classifier for `version`, loaded once per sandbox.

        Raises:
            BatchError: the version does not load, or names an alias (an alias may move
                during a job, and a job must be one version throughout).
        """
        state = self._models.get(version)
        if state is None:
            uri = f"{self.registry}@{version}"
            state = ModelState(self.settings.model_copy(update={"model_uri": uri}))
            self._models[version] = state
            while len(self._models) > MAX_MODELS:
                self._models.popitem(last=False)
        self._models.move_to_end(version)
        if state.classifier is None and state.retry_due():
            state.load()
        if state.classifier is None:
            raise BatchError(load_failure(state.error_code or "load_failed"))
        if state.classifier.version != version:
            raise BatchError(
                f"model_version {version!r} is an alias (of {state.classifier.version!r}); "
                "a bulk job pins a version id"
            )
        return state.classifier

    def _read(self, bucket: str, items: list[Item]) -> list[bytes | WastesortError]:
        store = S3Store(f"s3://{bucket}", client=self.client)
        limit = max_object_bytes(self.memory_mb, len(items))
        over = f"over {limit / MIB:.1f} MiB" + (
            f" (a batch of {len(items)} in {self.memory_mb} MB)" if self.memory_mb else ""
        )

        def read(item: Item) -> bytes | WastesortError:
            if item.Size is not None and item.Size > limit:
                return ImageError(f"{item.Size} bytes, {over}", code="too_large")
            try:
                return store.get(item.Key)
            except WastesortError as exc:  # NotFoundError, RegistryError: a record, not a crash
                return exc

        with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, max(1, len(items)))) as pool:
            return list(pool.map(read, items))

    def run(self, event: dict[str, Any]) -> dict[str, Any]:
        """Classify one batch.

        Returns:
            `records` (one `to_record` dict per object, in item order), `counts` (`images`,
            `classified`, `failed`, `skipped` folder markers), `model_version`, `ms_per_image`.

        Raises:
            BatchError: the event is not a batch of S3 objects, or the model does not load.
        """
        started = time.perf_counter()
        try:
            batch = BatchEvent.model_validate(event)
        except ValidationError as exc:
            raise BatchError(f"not a Distributed Map batch of S3 objects: {exc}") from None
        version, bucket = batch.BatchInput.model_version, batch.BatchInput.bucket
        clf = self.classifier(version)
        items = [item for item in batch.Items if not item.Key.endswith("/")]
        keys = [item.Key for item in items]
        outcomes: list[Any] = self._read(bucket, items)
        readable = [i for i, data in enumerate(outcomes) if isinstance(data, bytes)]
        predicted = clf.predict_batch([outcomes[i] for i in readable], return_exceptions=True)
        for i, outcome in zip(readable, predicted, strict=True):
            outcomes[i] = outcome
        records = [
            to_record(f"s3://{bucket}/{key}", outcome)
            for key, outcome in zip(keys, outcomes, strict=True)
        ]
        failed = sum("error" in record for record in records)
        elapsed_ms = (time.perf_counter() - started) * 1000
        ms_per_image = round(elapsed_ms / len(keys), 2) if keys else 0.0
        counts = {
            "images": len(keys),
            "classified": len(keys) - failed,
            "failed": failed,
            "skipped": len(batch.Items) - len(keys),
        }
        logger.info(
            "bulk batch",
            extra={"model_version": clf.version, "bucket": bucket, **counts, "ms": elapsed_ms},
        )
        return {
            "records": records,
            "counts": counts,
            "model_version": clf.version,
            "ms_per_image": ms_per_image,
        }


_runner: BatchRunner | None = None


@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point; the runner (settings, S3 client, models) lives as long as the sandbox."""
    global _runner  # noqa: PLW0603 - one runner per sandbox is the point
    if _runner is None:
        _runner = BatchRunner(Settings())
    result = _runner.run(event)
    counts = result["counts"]
    metrics.add_dimension(name=DIM_MODEL_VERSION, value=result["model_version"])
    metrics.add_metric(name=METRIC_IMAGES, unit=MetricUnit.Count, value=counts["images"])
    metrics.add_metric(name=METRIC_FAILED, unit=MetricUnit.Count, value=counts["failed"])
    if counts["images"]:
        metrics.add_metric(
            name=METRIC_MS_PER_IMAGE, unit=MetricUnit.Milliseconds, value=result["ms_per_image"]
        )
    return result
