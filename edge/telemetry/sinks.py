"""Where batches and heartbeats go: an S3 prefix or an HTTPS endpoint, behind one protocol.

A sink's `put` replaces whatever is at the key, so a retried batch (same rows, same key)
is harmless. `put_capture` writes a capture's photo, then its record, each only if nothing is
there yet (S3 `IfNoneMatch`): a retry leaves what was stored alone, so a versioned bucket keeps
one version of each.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from wastesort.capture import UNLABELLED
from wastesort.fleet import DEVICE_PREFIX
from wastesort.registry.s3 import CONFLICT_CODES, error_code

_JSON = "application/json"

log = logging.getLogger(__name__)


class Sink(Protocol):
    uri: str

    def put(self, key: str, body: bytes) -> None:
        """Store `body` at `key`, replacing whatever is there (retries resend the same)."""
        ...

    def put_heartbeat(self, device_id: str, body: bytes) -> None: ...


class CaptureSink(Protocol):
    uri: str

    def put_capture(self, key: str, jpeg: bytes, record: bytes) -> None:
        """Store `<key>.jpg` then `<key>.json`, leaving either alone if it is already there."""
        ...


# DEVICE_PREFIX (wastesort.fleet): the device role may write only under `telemetry/<thing name>/`
# (infra/constructs/devices.py).
CAPTURE_PREFIX = "captures"
"""... and, in the capture bucket, under `captures/<thing name>/` (infra/constructs/captures.py),
at the bucket's root: a bin's capture store is `s3://<capture bucket>`."""


class S3Sink:
    """Batches at `s3://bucket/prefix/<device id>/events/...`, the latest heartbeat at
    `s3://bucket/prefix/<device id>/heartbeat.json`: everything a device writes is under its
    own name, which is what the device role allows (`telemetry/<thing name>/*`, infra)."""

    def __init__(self, uri: str, *, client: Any = None, captures: bool = False) -> None:
        """
        Args:
            captures: a capture store (`capture.upload_to`), not a telemetry prefix.
        """
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = uri
        if captures and self.prefix:
            log.warning(
                "capture.upload_to %s: the device role may write only under "
                "s3://<capture bucket>/%s/<device id>/; uploads here will be denied",
                uri,
                CAPTURE_PREFIX,
            )
        elif not captures and self.prefix.rpartition("/")[2] != DEVICE_PREFIX:
            log.warning(
                "telemetry.upload_to %s: the device role may write only under "
                "s3://<telemetry bucket>/%s/<device id>/; uploads here will be denied",
                uri,
                DEVICE_PREFIX,
            )
        self._client = client
        self._client_lock = threading.Lock()  # the uploader and the heartbeat share it

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import boto3  # noqa: PLC0415
                from botocore.config import Config  # noqa: PLC0415

                # Short timeouts and no SDK retries: the uploader owns backoff.
                self._client = boto3.client(
                    "s3",
                    config=Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 1}),
                )
            return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(key),
            Body=body,
            ContentType="application/x-ndjson",
        )

    def put_heartbeat(self, device_id: str, body: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(f"{device_id}/heartbeat.json"),
            Body=body,
            ContentType="application/json",
        )

    def put_capture(self, key: str, jpeg: bytes, record: bytes) -> None:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        for suffix, body, kind in ((".jpg", jpeg, "image/jpeg"), (".json", record, _JSON)):
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key + suffix),
                    Body=body,
                    ContentType=kind,
                    IfNoneMatch="*",
                    Tagging=UNLABELLED,  # the lifecycle rule expires captures nobody labelled
                )
            except ClientError as exc:
                if error_code(exc) not in CONFLICT_CODES:
                    raise  # 412: stored by an earlier try whose answer was lost


class HttpSink:
    """POSTs batches to `<url>/events` with an `Idempotency-Key` (the batch key)."""

    def __init__(self, url: str, *, timeout_s: float = 20.0) -> None:
        import httpx  # noqa: PLC0415

        self.uri = url.rstrip("/")
        self.client = httpx.Client(timeout=timeout_s)

    def put(self, key: str, body: bytes) -> None:
        response = self.client.post(
            f"{self.uri}/events",
            content=body,
            headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": key},
        )
        response.raise_for_status()

    def put_heartbeat(self, device_id: str, body: bytes) -> None:
        response = self.client.post(
            f"{self.uri}/heartbeats/{device_id}",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        response.raise_for_status()

    def put_capture(self, key: str, jpeg: bytes, record: bytes) -> None:
        """POSTs `<url>/<key>.jpg` then `.json`, each with its key as `Idempotency-Key`."""
        for suffix, body, kind in ((".jpg", jpeg, "image/jpeg"), (".json", record, _JSON)):
            response = self.client.post(
                f"{self.uri}/{key}{suffix}",
                content=body,
                headers={"Content-Type": kind, "Idempotency-Key": key + suffix},
            )
            response.raise_for_status()


def open_capture_sink(uri: str | None) -> CaptureSink | None:
    if not uri:
        return None
    if uri.startswith("s3://"):
        return S3Sink(uri, captures=True)
    if uri.startswith(("https://", "http://")):
        return HttpSink(uri)
    raise ValueError(f"capture.upload_to {uri!r}: expected s3://bucket or https://...")


def open_sink(uri: str | None) -> Sink | None:
    if not uri:
        return None
    if uri.startswith("s3://"):
        return S3Sink(uri)
    if uri.startswith(("https://", "http://")):
        return HttpSink(uri)
    raise ValueError(f"telemetry.upload_to {uri!r}: expected s3://bucket/prefix or https://...")
