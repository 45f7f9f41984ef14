"""The local server: uvicorn with every server setting in one place.

    python -m functions.api.server [--host 127.0.0.1] [--port 8000] [--no-access-log]

`make serve` (and so `make demo`), the serving benchmark and the tests that start a real server
all start it here, so what is measured and tested is what `make serve` runs. The app's own
settings (`API_*`, `MODEL_URI`) still come from the environment (`functions.api.settings`);
this module holds only what uvicorn decides:

- the app factory (`functions.api.app:create_app`, built once per process), host and port;
- headers: a connection must finish a request's headers within `HEADER_TIMEOUT_S` and in at
  most `MAX_HEADER_BYTES`, else uvicorn's protocol (subclassed here) answers a plain-text
  408/431 and closes it. uvicorn (0.55) has no header timeout of its own: a connection that
  never finishes its headers would stay open for ever. The body's deadline is the app's
  (`API_BODY_TIMEOUT_S`, `functions.api.limits`);
- `LIMIT_CONCURRENCY`: uvicorn's own 503 (plain text, no `Retry-After`, counting idle
  connections too), a last-resort backstop far above the app's prediction limit, which
  answers first with an `overloaded` problem;
- keep-alive and graceful-shutdown timeouts.

Not for Lambda: there API Gateway holds the connection and Mangum calls the app.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

APP = "functions.api.app:create_app"
HOST = "127.0.0.1"
PORT = 8000
HEADER_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 64 * 1024
LIMIT_CONCURRENCY = 512
"""Connections (idle keep-alive ones too) or requests at once before uvicorn answers 503."""
TIMEOUT_KEEP_ALIVE_S = 5
TIMEOUT_GRACEFUL_SHUTDOWN_S = 10


class ServerConfig(uvicorn.Config):
    """uvicorn's `Config` plus the header limits the protocol below reads."""

    def __init__(
        self,
        app: Any,
        *,
        header_timeout_s: float = HEADER_TIMEOUT_S,
        max_header_bytes: int = MAX_HEADER_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.max_header_bytes = max_header_bytes


class HeaderLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, but a request's headers must arrive within
    `header_timeout_s` of its first byte (or of the connection, for the first request) and in
    at most `max_header_bytes`; else a plain-text 408 or 431 and the connection closes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0

    def _await_headers(self) -> None:
        if self._header_timer is None:
            timeout = getattr(self.config, "header_timeout_s", HEADER_TIMEOUT_S)
            self._header_timer = self.loop.call_later(timeout, self._headers_too_slow)
            self._header_bytes = 0

    def _headers_done(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse(self, status: int, message: bytes) -> None:
        self._headers_done()
        if self.transport.is_closing():
            return
        if self._header_bytes:  # a silent connection (a browser's pre-connect) is just closed
            self.transport.write(
                STATUS_LINE[status]
                + b"content-type: text/plain; charset=utf-8\r\n"
                + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(message)
                + message
            )
        self.transport.close()

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self.logger.info("Request headers not received in time.")
        self._refuse(408, b"Request headers not received in time.")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is None:
            return
        # Still inside a request's headers after this read: count it (within one read of exact:
        # the read that starts a keep-alive request may also end the one before).
        self._header_bytes += len(data)
        if self._header_bytes > getattr(self.config, "max_header_bytes", MAX_HEADER_BYTES):
            self.logger.info("Request headers too large.")
            self._refuse(431, b"Request headers too large.")

    def on_headers_complete(self) -> None:
        self._headers_done()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        super().connection_lost(exc)


def config(
    app: Any = APP,
    *,
    host: str = HOST,
    port: int = PORT,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    max_header_bytes: int = MAX_HEADER_BYTES,
    limit_concurrency: int = LIMIT_CONCURRENCY,
    access_log: bool = True,
    log_level: str = "info",
) -> ServerConfig:
    """The server's configuration. `app` is the factory's import string (the default) or an
    app already built (tests serve one with their own settings)."""
    return ServerConfig(
        app,
        factory=isinstance(app, str),
        host=host,
        port=port,
        http=HeaderLimitedProtocol,
        header_timeout_s=header_timeout_s,
        max_header_bytes=max_header_bytes,
        h11_max_incomplete_event_size=max_header_bytes,  # the same bound if run with h11
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=TIMEOUT_KEEP_ALIVE_S,
        timeout_graceful_shutdown=TIMEOUT_GRACEFUL_SHUTDOWN_S,
        access_log=access_log,
        log_level=log_level,
        lifespan="on",
    )


@contextlib.contextmanager
def serving(app: Any, **overrides: Any) -> Iterator[str]:
    """Serve `app` in a thread on a free loopback port, configured as `main` configures it
    (`overrides`: `config`'s keywords); yields the base URL. For tests."""
    server = uvicorn.Server(config(app, **{"port": 0, "log_level": "warning", **overrides}))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m functions.api.server",
        description="Serve the API (uvicorn); the app's settings come from API_* and MODEL_URI.",
    )
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT_S, metavar="S")
    parser.add_argument("--limit-concurrency", type=int, default=LIMIT_CONCURRENCY, metavar="N")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    uvicorn.Server(
        config(
            host=args.host,
            port=args.port,
            header_timeout_s=args.header_timeout,
            limit_concurrency=args.limit_concurrency,
            access_log=args.access_log,
            log_level=args.log_level,
        )
    ).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
