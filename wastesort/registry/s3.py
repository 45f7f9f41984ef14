"""A registry under `s3://bucket/prefix`, made safe for concurrent writers by S3 itself.

The manifest is replaced only with `IfMatch` on the ETag that was read (or `IfNoneMatch: *`
when it is new), and artifacts, captures and labels are written with `IfNoneMatch: *`, so S3
refuses with 412 whatever would lose an update or overwrite a written object.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from wastesort.errors import ConcurrentUpdateError, NotFoundError, RegistryError
from wastesort.registry.store import MANIFEST, RegistryStore

CONFLICT_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
"""What S3 answers a conditional write whose condition failed (the key is already there)."""


def error_code(exc: Exception) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class S3Store(RegistryStore):
    def __init__(self, uri: str, *, client: Any = None, timeout_s: float | None = None) -> None:
        """The store under `uri` (`s3://bucket/prefix`).

        Args:
            client: an S3 client to use (tests); None builds one on first use, so a store that
                is never used costs no client (and no boto3 import) at start-up.
            timeout_s: bound that client's every call (connect and read) and make one attempt
                only: for writes on a request path, which must not wait long.
        """
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise RegistryError(f"{uri!r} names no bucket (expected s3://bucket/prefix)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = client
        self._timeout_s = timeout_s
        self._client_lock = threading.Lock()  # boto3 clients are not built safely in parallel

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import boto3  # noqa: PLC0415  (only registries on S3 pay for boto3)

                if self._timeout_s is None:
                    self._client = boto3.client("s3")
                else:
                    from botocore.config import Config  # noqa: PLC0415

                    config = Config(
                        connect_timeout=self._timeout_s,
                        read_timeout=self._timeout_s,
                        # total: the first attempt included (`max_attempts` counts retries)
                        retries={"total_max_attempts": 1, "mode": "standard"},
                    )
                    self._client = boto3.client("s3", config=config)
            return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def read_manifest(self) -> tuple[bytes, str] | None:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(MANIFEST))
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) in {"NoSuchKey", "404"}:
                return None
            raise RegistryError(f"cannot read {self.uri}/{MANIFEST}: {exc}") from exc
        return response["Body"].read(), response["ETag"]

    def write_manifest(self, data: bytes, *, expected_etag: str | None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        condition = {"IfMatch": expected_etag} if expected_etag else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(MANIFEST),
                Body=data,
                ContentType="application/json",
                CacheControl="no-cache",
                **condition,
            )
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) in CONFLICT_CODES:
                raise ConcurrentUpdateError("the manifest changed since it was read") from exc
            raise RegistryError(f"cannot write {self.uri}/{MANIFEST}: {exc}") from exc

    def put_new(self, key: str, source: bytes | Path, *, tagging: str | None = None) -> bool:
        """See `RegistryStore.put_new`; `tagging` (`k=v&...`) tags the object as it is written,
        for lifecycle rules that filter by tag (captures)."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        extra = {"Tagging": tagging} if tagging else {}
        try:
            with nullcontext(source) if isinstance(source, bytes) else open(source, "rb") as body:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=body, IfNoneMatch="*", **extra
                )
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) in CONFLICT_CODES:
                return False
            raise RegistryError(f"cannot upload {key} to {self.uri}: {exc}") from exc
        return True

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) in {"NoSuchKey", "404"}:
                raise NotFoundError(f"{key} is not in {self.uri}") from None
            raise RegistryError(f"cannot read {key} from {self.uri}: {exc}") from exc

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        base = f"{self.prefix}/" if self.prefix else ""
        params = {"Bucket": self.bucket, "Prefix": base + prefix}
        if start_after:
            params["StartAfter"] = base + start_after
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**params):
                for item in page.get("Contents", ()):
                    yield item["Key"].removeprefix(base)
        except (ClientError, BotoCoreError) as exc:
            raise RegistryError(f"cannot list {prefix!r} in {self.uri}: {exc}") from exc

    def download(self, key: str, dest: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            self.client.download_file(self.bucket, self._key(key), str(dest))
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) in {"NoSuchKey", "404"}:
                raise NotFoundError(f"{key} is not in the registry at {self.uri}") from None
            raise RegistryError(f"cannot download {key} from {self.uri}: {exc}") from exc
