"""A read-only registry published over HTTPS (a static site, CloudFront in front of the bucket).

Devices read `<base>/manifest.json` and `<base>/<artifact path>`; nobody writes through
HTTP, so publishing and promoting stay with the S3 or local store that backs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wastesort.errors import NotFoundError, NotSupportedError, RegistryError
from wastesort.registry.store import MANIFEST, RegistryStore, etag_of

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_allowed_url(url: str) -> bool:
    """https anywhere; plain http only to this machine (a local mirror, tests)."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK)


def _https_only(request: Any) -> None:
    """Refuse any request, a redirect's included, that would leave https."""
    if not is_allowed_url(str(request.url)):
        raise RegistryError(f"refusing {request.url}: registries are read over https only")


class HttpStore(RegistryStore):
    read_only = True

    def __init__(self, url: str, *, client: Any = None, timeout_s: float = 30.0) -> None:
        self.uri = url.rstrip("/")
        self._client = client
        self._timeout_s = timeout_s

    @property
    def client(self) -> Any:
        if self._client is None:
            import httpx  # noqa: PLC0415  (only HTTP registries pay for httpx)

            # Redirects are followed only within https (see _https_only).
            self._client = httpx.Client(
                timeout=self._timeout_s,
                follow_redirects=True,
                event_hooks={"request": [_https_only]},
            )
        return self._client

    def _url(self, key: str) -> str:
        return f"{self.uri}/{key.lstrip('/')}"

    def read_manifest(self) -> tuple[bytes, str] | None:
        import httpx  # noqa: PLC0415

        try:
            response = self.client.get(self._url(MANIFEST), headers={"Cache-Control": "no-cache"})
        except httpx.HTTPError as exc:
            raise RegistryError(f"cannot read {self._url(MANIFEST)}: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryError(f"cannot read {self._url(MANIFEST)}: HTTP {response.status_code}")
        return response.content, response.headers.get("ETag") or etag_of(response.content)

    def write_manifest(self, data: bytes, *, expected_etag: str | None) -> None:
        raise NotSupportedError(f"{self.uri} is read-only (an HTTP registry)")

    def put_new(self, key: str, source: bytes | Path) -> bool:
        raise NotSupportedError(f"{self.uri} is read-only (an HTTP registry)")

    def get(self, key: str) -> bytes:
        raise NotSupportedError(
            f"{self.uri} is an HTTP registry: it serves the manifest and artifacts, not objects"
        )

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        raise NotSupportedError(f"{self.uri} is an HTTP registry: it cannot list keys")

    def download(self, key: str, dest: Path) -> None:
        """Stream `key` into `dest`; the registry verifies size and sha256 afterwards."""
        import httpx  # noqa: PLC0415

        url = self._url(key)
        try:
            with self.client.stream("GET", url) as response:
                if response.status_code == 404:
                    raise NotFoundError(f"{key} is not in the registry at {self.uri}")
                if response.status_code != 200:
                    raise RegistryError(f"cannot download {url}: HTTP {response.status_code}")
                with open(dest, "wb") as handle:
                    for chunk in response.iter_bytes():
                        handle.write(chunk)
        except httpx.HTTPError as exc:
            raise RegistryError(f"cannot download {url}: {exc}") from exc
