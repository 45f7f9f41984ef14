"""Fetch an image from a caller's URL without becoming a proxy into our network (SSRF).

Every hop (the URL and each redirect, at most `max_redirects`) must be `https`, on port 443,
with no credentials, to a host on the allow-list; the host is resolved here and every address
it resolves to must be public. The connection then goes to the address that was checked (the
URL is rewritten to the IP, with the original name in the Host header and TLS SNI, so the
certificate is still verified for the name): a second DNS answer cannot swap in a private
address (DNS rebinding). The body streams under a size cap and an overall deadline.

httpx is imported on the first fetch: URL input is off by default and cold starts stay short.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from functions.api.problems import Problem

if TYPE_CHECKING:
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list[tuple[Any, ...]]]

REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Cloud metadata endpoints that are not already caught as private/link-local/shared space.
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None
    url: str


def host_allowed(host: str, allowlist: list[str]) -> bool:
    """`host` is on the list exactly, or under a `*.domain` entry (not the bare domain)."""
    host = host.lower().rstrip(".")
    for entry in allowlist:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def ip_refusal(ip: IPAddress) -> str | None:
    """Why an address may not be fetched from, or None when it is public unicast."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and (why := ip_refusal(embedded)):
            return f"{why} (inside an IPv6 address)"
    checks = (
        (ip in METADATA, "a cloud metadata address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    )
    return next((why for refused, why in checks if refused), None)


class Fetcher:
    """Fetch image URLs under the API's rules.

    Args:
        allowlist: hosts (or `*.domain`) that may be named; empty refuses every URL.
        max_bytes: refuse bodies larger than this (checked while streaming).
        connect_timeout, read_timeout: per socket operation, seconds.
        total_timeout: for the whole fetch, redirects included.
        max_redirects: redirects followed at most (each one checked like the first URL).
        transport: an httpx transport (tests pass `httpx.MockTransport`).
        resolver: `socket.getaddrinfo`-compatible (tests patch it); looked up per call.
    """

    def __init__(
        self,
        allowlist: list[str],
        *,
        max_bytes: int,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        total_timeout: float = 10.0,
        max_redirects: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.allowlist = [h.lower().rstrip(".") for h in allowlist]
        self.max_bytes = max_bytes
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.max_redirects = max_redirects
        self._transport = transport
        self._resolver = resolver

    @property
    def enabled(self) -> bool:
        return bool(self.allowlist)

    def require_enabled(self) -> None:
        """Refuse at once where no host is allow-listed (the OpenAPI schema then has no
        `image_url` at all).

        Raises:
            Problem: url-input-disabled.
        """
        if not self.enabled:
            raise Problem("url-input-disabled", "this deployment does not fetch image URLs")

    async def fetch(self, url: str) -> Fetched:
        """The image bytes at `url`.

        Raises:
            Problem: url-input-disabled, url-not-allowed, url-fetch-failed, payload-too-large.
        """
        self.require_enabled()
        try:
            async with asyncio.timeout(self.total_timeout):
                return await self._follow(url)
        except TimeoutError:
            raise Problem(
                "url-fetch-failed", f"fetching the image took over {self.total_timeout:g} s"
            ) from None

    async def _follow(self, url: str) -> Fetched:
        import httpx  # noqa: PLC0415 - see the module docstring

        current = self._parse(url)
        timeout = httpx.Timeout(
            connect=self.connect_timeout,
            read=self.read_timeout,
            write=self.read_timeout,
            pool=self.connect_timeout,
        )
        async with httpx.AsyncClient(
            transport=self._transport,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,  # never through a proxy from the environment
        ) as client:
            for hop in range(self.max_redirects + 1):
                ip = await self._check(current)
                target = current.copy_with(host=str(ip))
                request = client.build_request(
                    "GET",
                    target,
                    headers={"Host": current.netloc.decode("ascii"), "Accept": "image/*"},
                    extensions={"sni_hostname": current.host},
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise Problem(
                        "url-fetch-failed", f"{current.host}: {type(exc).__name__}"
                    ) from None
                try:
                    if response.status_code in REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise Problem("url-fetch-failed", "a redirect without a Location")
                        if hop == self.max_redirects:
                            raise Problem(
                                "url-fetch-failed", f"more than {self.max_redirects} redirects"
                            )
                        current = self._parse(str(current.join(location)))
                        continue
                    if response.status_code != 200:
                        raise Problem(
                            "url-fetch-failed",
                            f"{current.host} answered HTTP {response.status_code}",
                            upstream_status=response.status_code,
                        )
                    data = await self._read(response)
                    content_type = response.headers.get("content-type")
                    # No query or fragment: presigned URLs carry credentials there.
                    return Fetched(
                        data, content_type, str(current.copy_with(query=None, fragment=None))
                    )
                finally:
                    await response.aclose()
        raise AssertionError("unreachable")  # pragma: no cover

    def _parse(self, url: str) -> httpx.URL:
        import httpx  # noqa: PLC0415

        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise Problem("url-not-allowed", "the image URL cannot be parsed") from None
        if parsed.scheme != "https":
            raise Problem("url-not-allowed", f"only https URLs are fetched, not {parsed.scheme}")
        if parsed.userinfo:
            raise Problem("url-not-allowed", "URLs with credentials are not fetched")
        if parsed.port not in (None, 443):
            raise Problem("url-not-allowed", "only the default https port (443) is fetched")
        if not parsed.host or not host_allowed(parsed.host, self.allowlist):
            raise Problem("url-not-allowed", f"host {parsed.host!r} is not on the allow-list")
        return parsed

    async def _check(self, url: httpx.URL) -> IPAddress:
        """Resolve the host; refuse unless every address is public. Returns the one to use."""
        host = url.host
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            resolve = self._resolver or socket.getaddrinfo
            try:
                infos = await asyncio.to_thread(
                    resolve, host, 443, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
            except (OSError, UnicodeError):
                raise Problem("url-fetch-failed", f"host {host!r} does not resolve") from None
            addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        if not addresses:
            raise Problem("url-fetch-failed", f"host {host!r} does not resolve")
        for ip in addresses:
            why = ip_refusal(ip)
            if why:
                raise Problem("url-not-allowed", f"host {host!r} resolves to {why}")
        return addresses[0]

    async def _read(self, response: httpx.Response) -> bytes:
        import httpx  # noqa: PLC0415

        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise Problem(
                "payload-too-large", "the image at the URL is too large", limit=self.max_bytes
            )
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise Problem(
                        "payload-too-large",
                        "the image at the URL is too large",
                        limit=self.max_bytes,
                    )
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise Problem("url-fetch-failed", f"reading the image: {type(exc).__name__}") from None
        return b"".join(chunks)
