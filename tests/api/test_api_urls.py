"""Image URLs: https only, allow-listed hosts, every resolved address public, on every hop.

Nothing here can open a connection: names resolve through a patched `getaddrinfo`, responses
come from `httpx.MockTransport`, and `socket.connect` refuses anything but loopback."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest
from starlette.testclient import TestClient

from functions.api.fetch import Fetcher, host_allowed, ip_refusal
from functions.api.problems import PROBLEM_BASE, Problem
from tests.api.conftest import ALLOWLIST, PUBLIC_IP, FakeUpstream


def problem_of(response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["type"].removeprefix(PROBLEM_BASE), body.get("detail", "")


def test_fetches_an_allowed_public_url_via_the_checked_address(
    client: TestClient, upstream: FakeUpstream, classifier, jpeg: bytes
):
    response = client.post("/predict", json={"image_url": "https://images.example.com/bottle.jpg"})
    assert response.status_code == 200, response.text
    assert response.json()["predicted_class"] == classifier.predict(jpeg).predicted_class
    (sent,) = upstream.requests
    assert sent.url.host == PUBLIC_IP  # connected to the address that was checked ...
    assert sent.headers["host"] == "images.example.com"  # ... for the name asked for
    assert sent.extensions["sni_hostname"] == "images.example.com"  # certificate checked too


def test_relative_redirect_is_followed_and_rechecked(client: TestClient, upstream):
    response = client.post("/predict", json={"image_url": "https://images.example.com/relative"})
    assert response.status_code == 200, response.text
    assert [r.url.path for r in upstream.requests] == ["/relative", "/bottle.jpg"]


def test_wildcard_subdomain_and_ipv6(client: TestClient, upstream):
    response = client.post(
        "/predict", json={"image_url": "https://cdn.images.example.com/bottle.png"}
    )
    assert response.status_code == 200, response.text
    response = client.post(
        "/predict", json={"image_url": "https://v6.images.example.com/bottle.jpg"}
    )
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1]
    assert sent.url.host == "2606:2800:220:1:248:1893:25c8:1946"
    assert sent.headers["host"] == "v6.images.example.com"


@pytest.mark.parametrize(
    ("url", "kind", "why"),
    [
        ("https://127.0.0.1/bottle.jpg", "url-not-allowed", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "url-not-allowed", "metadata"),
        ("https://10.0.0.1/bottle.jpg", "url-not-allowed", "private"),
        ("https://evil.example.com/bottle.jpg", "url-not-allowed", "loopback"),
        ("https://sneaky.example.com/bottle.jpg", "url-not-allowed", "private"),
        ("https://mapped.example.com/bottle.jpg", "url-not-allowed", "metadata"),
        ("https://images.example.com/to-evil", "url-not-allowed", "loopback"),
        ("https://images.example.com/to-metadata", "url-not-allowed", "metadata"),
        ("https://images.example.com/to-http", "url-not-allowed", "only https"),
        ("http://images.example.com/bottle.jpg", "url-not-allowed", "only https"),
        ("ftp://images.example.com/bottle.jpg", "url-not-allowed", "only https"),
        ("https://user:pw@images.example.com/bottle.jpg", "url-not-allowed", "credentials"),
        ("https://images.example.com:8443/bottle.jpg", "url-not-allowed", "443"),
        ("https://example.org/bottle.jpg", "url-not-allowed", "allow-list"),
        ("https://images.example.com.evil.org/x.jpg", "url-not-allowed", "allow-list"),
        ("https://[::1]/bottle.jpg", "url-not-allowed", "allow-list"),
        ("not a url", "url-not-allowed", ""),
        ("https://images.example.com/loop", "url-fetch-failed", "redirects"),
        ("https://images.example.com/missing.jpg", "url-fetch-failed", "404"),
        ("https://images.example.com/huge", "payload-too-large", ""),
        ("https://images.example.com/huge-declared", "payload-too-large", ""),
        ("https://images.example.com/lying.png", "content-type-mismatch", ""),
    ],
)
def test_refused_urls(client: TestClient, upstream: FakeUpstream, url: str, kind: str, why: str):
    status, got, detail = problem_of(client.post("/predict", json={"image_url": url}))
    assert got == kind, detail
    assert 400 <= status < 500
    assert why.lower() in detail.lower()
    for sent in upstream.requests:  # nothing but the public address was ever asked
        assert sent.url.host == PUBLIC_IP


def test_refused_before_any_request_when_the_first_hop_is_bad(client: TestClient, upstream):
    for url in ("https://127.0.0.1/x", "https://evil.example.com/x", "http://images.example.com/"):
        client.post("/predict", json={"image_url": url})
    assert upstream.requests == []


def test_url_input_is_off_by_default(make_client, upstream):
    client = make_client()  # no allow-list
    response = client.post("/predict", json={"image_url": "https://images.example.com/bottle.jpg"})
    assert problem_of(response)[:2] == (400, "url-input-disabled")
    assert upstream.requests == []


def test_unresolvable_host(client: TestClient, monkeypatch):
    fetcher = Fetcher(["nowhere.example.com"], max_bytes=1024)
    with pytest.raises(Problem) as caught:
        asyncio.run(fetcher.fetch("https://nowhere.example.com/x.jpg"))
    assert caught.value.kind == "url-fetch-failed"


def test_slow_upstream_hits_the_deadline(no_network):
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    fetcher = Fetcher(
        ["images.example.com"],
        max_bytes=1024,
        total_timeout=0.2,
        transport=httpx.MockTransport(slow),
    )
    with pytest.raises(Problem) as caught:
        asyncio.run(fetcher.fetch("https://images.example.com/x.jpg"))
    assert caught.value.kind == "url-fetch-failed" and "0.2 s" in caught.value.detail


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("10.0.0.1", True),
        ("172.16.5.4", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.100.100.200", True),
        ("100.64.0.1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("239.255.255.250", True),
        ("255.255.255.255", True),
        ("::1", True),
        ("::", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("fd00:ec2::254", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", True),
        ("2002:7f00:1::", True),  # 6to4 around 127.0.0.1
        (PUBLIC_IP, False),
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_ip_refusal(address: str, refused: bool):
    assert (ip_refusal(ipaddress.ip_address(address)) is not None) is refused


def test_host_allowed():
    assert host_allowed("images.example.com", ALLOWLIST)
    assert host_allowed("IMAGES.example.com.", ALLOWLIST)
    assert host_allowed("a.b.images.example.com", ["*.images.example.com"])
    assert not host_allowed("images.example.com", ["*.images.example.com"])
    assert not host_allowed("evilimages.example.com", ["*.images.example.com"])
    assert not host_allowed("anything", [])


def test_the_fetched_url_keeps_no_query_or_fragment(no_network, upstream):
    """The URL is logged; presigned URLs carry their credentials in the query string."""
    fetcher = Fetcher(
        ["images.example.com"], max_bytes=1 << 20, transport=httpx.MockTransport(upstream)
    )
    url = "https://images.example.com/bottle.jpg?X-Amz-Signature=secret&token=t#frag"
    fetched = asyncio.run(fetcher.fetch(url))
    assert fetched.url == "https://images.example.com/bottle.jpg"
    assert upstream.requests[0].url.query == b"X-Amz-Signature=secret&token=t"  # still sent
