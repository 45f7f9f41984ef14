"""Fixtures for the API tests: a served tiny model, images good and bad, URL plumbing that
can never reach the network, and real API Gateway events."""

from __future__ import annotations

import base64
import copy
import io
import ipaddress
import json
import socket
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette 1.x nudges TestClient users towards `httpx2`; the API itself uses httpx 0.28.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from functions.api.app import create_app
from functions.api.capture import Capturer
from functions.api.fetch import Fetcher
from functions.api.settings import Settings
from tests.conftest import SAMPLES, sample_bytes, tiny_fields
from wastesort import Classifier
from wastesort.registry import GoldenSample, Registry

EVENTS = Path(__file__).resolve().parent / "events"

# Names the fake DNS knows. Only `images.example.com` is public; the rest point inside.
PUBLIC_IP = "93.184.216.34"
DNS = {
    "images.example.com": [PUBLIC_IP],
    "cdn.images.example.com": [PUBLIC_IP, "2606:2800:220:1:248:1893:25c8:1946"],
    "v6.images.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
    "evil.example.com": ["127.0.0.1"],
    "sneaky.example.com": [PUBLIC_IP, "10.0.0.7"],  # one bad answer is enough to refuse
    "mapped.example.com": ["::ffff:169.254.169.254"],
}
ALLOWLIST = [
    "images.example.com",
    "*.images.example.com",
    "evil.example.com",
    "sneaky.example.com",
    "mapped.example.com",
    # IP literals on the allow-list: the address check must still refuse them.
    "127.0.0.1",
    "169.254.169.254",
    "10.0.0.1",
]


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def jpeg() -> bytes:
    return sample_bytes("glass")


@pytest.fixture(scope="session")
def png(jpeg: bytes) -> bytes:
    return encode(Image.open(io.BytesIO(jpeg)), "PNG")


@pytest.fixture(scope="session")
def webp(jpeg: bytes) -> bytes:
    return encode(Image.open(io.BytesIO(jpeg)), "WEBP", quality=80)


@pytest.fixture(scope="session")
def huge_png() -> bytes:
    """A real 50-megapixel PNG (10000x5000, one colour: ~50 KB on the wire)."""
    return encode(Image.new("1", (10_000, 5_000)), "PNG")


@pytest.fixture(scope="session")
def sample_images() -> list[bytes]:
    return [p.read_bytes() for p in sorted(SAMPLES.glob("*/*.jpg"))]


@pytest.fixture(scope="session")
def api_registry(tmp_path_factory: pytest.TempPathFactory, tiny_int8: Path) -> Path:
    """A local registry with `tiny-1` behind `production` (shared by the whole session)."""
    root = tmp_path_factory.mktemp("api") / "registry"
    Registry.from_uri(root, cache_dir=root.parent / "cache").publish(
        tiny_int8,
        version="tiny-1",
        golden=[GoldenSample("glass.jpg", sample_bytes("glass"), "glass")],
        aliases=["production"],
        **tiny_fields(uncertain_threshold=0.5),
    )
    return root


@pytest.fixture(scope="session")
def classifier(api_registry: Path) -> Classifier:
    return Classifier.load(api_registry, cache_dir=api_registry.parent / "cache", pool_size=2)


# --- URLs: a fake DNS and a mock transport; nothing reaches a socket ---------------------------


class FakeUpstream:
    """The web as the tests see it: `httpx.MockTransport` routes by Host header."""

    def __init__(self, jpeg: bytes, png: bytes) -> None:
        self.jpeg = jpeg
        self.png = png
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        host = request.headers["host"]
        chunk = b"\xff\xd8\xff" + b"\0" * (1 << 16)
        routes = {
            "/bottle.jpg": lambda: httpx.Response(
                200, content=self.jpeg, headers={"content-type": "image/jpeg"}
            ),
            "/bottle.png": lambda: httpx.Response(
                200, content=self.png, headers={"content-type": "image/png"}
            ),
            "/lying.png": lambda: httpx.Response(
                200, content=self.jpeg, headers={"content-type": "image/png"}
            ),
            "/to-evil": lambda: httpx.Response(
                302, headers={"location": "https://evil.example.com/x.jpg"}
            ),
            "/to-metadata": lambda: httpx.Response(
                301, headers={"location": "https://169.254.169.254/latest/meta-data/"}
            ),
            "/to-http": lambda: httpx.Response(
                302, headers={"location": f"http://{host}/bottle.jpg"}
            ),
            "/relative": lambda: httpx.Response(307, headers={"location": "/bottle.jpg"}),
            "/loop": lambda: httpx.Response(302, headers={"location": "/loop"}),
            # streamed, no Content-Length: only the running count can stop it
            "/huge": lambda: httpx.Response(200, content=_stream(chunk, 200)),
            "/huge-declared": lambda: httpx.Response(
                200, headers={"content-length": str(1 << 30)}, content=b""
            ),
        }
        route = routes.get(request.url.path)
        return route() if route else httpx.Response(404)


async def _stream(chunk: bytes, times: int) -> AsyncIterator[bytes]:
    for _ in range(times):
        yield chunk


def fake_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[tuple]:
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        if host not in DNS:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        addresses = DNS[host]
    out = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
        out.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
    return out


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolve through the fake DNS, and refuse any socket connection that is not loopback
    (a broken guard would fail loudly here instead of reaching an internal address)."""
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else None
        if host is None or not ipaddress.ip_address(host).is_loopback:
            raise AssertionError(f"a test tried to connect to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def upstream(jpeg: bytes, png: bytes) -> FakeUpstream:
    return FakeUpstream(jpeg, png)


def make_settings(**overrides: Any) -> Settings:
    fields: dict[str, Any] = {"model_uri": "unused", "batch_max": 4, "model_retry_s": 0}
    fields.update(overrides)
    return Settings(**fields)


@pytest.fixture
def make_client(
    classifier: Classifier, upstream: FakeUpstream, no_network: None
) -> Iterator[Callable[..., TestClient]]:
    """Build a TestClient over an app serving the tiny model; settings as keywords (and a
    `capturer` to inject a seeded one)."""
    clients: list[TestClient] = []

    def build(
        classifier_: Classifier | None = classifier,
        *,
        capturer: Capturer | None = None,
        **overrides: Any,
    ) -> TestClient:
        settings = make_settings(**overrides)
        fetcher = Fetcher(
            settings.url_allowlist,
            max_bytes=settings.url_max_bytes,
            transport=httpx.MockTransport(upstream),
        )
        app: FastAPI = create_app(
            settings,
            classifier=classifier_,
            fetcher=fetcher,
            capturer=capturer,
            load_on_startup=False,
        )
        client = TestClient(app, raise_server_exceptions=False)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(url_allowlist=ALLOWLIST, url_max_bytes=1 << 20)


# --- API Gateway events ----------------------------------------------------------------------


def gateway_event(
    version: str,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    content_type: str | None = None,
    binary: bool = True,
) -> dict[str, Any]:
    """An API Gateway proxy event (REST `v1` or HTTP API `v2`) from the recorded samples in
    tests/api/events, with this request in it; binary bodies base64 as API Gateway sends them."""
    event = copy.deepcopy(json.loads((EVENTS / f"apigw_{version}.json").read_text()))
    encoded = body is not None and binary
    text = None
    if body is not None:
        text = base64.b64encode(body).decode() if encoded else body.decode()
    if version == "v1":
        event["httpMethod"] = method
        event["path"] = path
        event["pathParameters"] = {"proxy": path.lstrip("/")}
        event["requestContext"]["httpMethod"] = method
        event["requestContext"]["path"] = f"/{event['requestContext']['stage']}{path}"
        if content_type:
            event["headers"]["Content-Type"] = content_type
            event["multiValueHeaders"]["Content-Type"] = [content_type]
    else:
        event["rawPath"] = path
        event["routeKey"] = "$default"
        event["requestContext"]["http"]["method"] = method
        event["requestContext"]["http"]["path"] = path
        if content_type:
            event["headers"]["content-type"] = content_type
    event["body"] = text
    event["isBase64Encoded"] = encoded
    return event


def multipart(fields: list[tuple[str, tuple[str, bytes, str]]]) -> tuple[bytes, str]:
    """A multipart/form-data body exactly as httpx (and browsers) encode it."""
    request = httpx.Request("POST", "https://x/", files=fields)
    return request.read(), request.headers["content-type"]
