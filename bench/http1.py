"""A minimal HTTP/1.1 keep-alive client for load generators: one connection, one request at a time.

The benchmarks run their client on the same 2-core machine as the server they measure, so every
microsecond the client spends is taken from the server. aiohttp costs about 0.6 ms of CPU per request
here (its session, connector, tracing and cookie machinery); this client writes the request bytes and
parses the answer with httptools (the C parser uvicorn uses, installed with uvicorn[standard]): about a
tenth of that. It speaks plain HTTP/1.1 — Content-Length or chunked bodies, keep-alive, a reconnect after
the server closes — and is used only where a benchmark loops over a few fixed requests.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode, urlsplit

import httptools


class HttpError(Exception):
    pass


class Http1Connection(asyncio.Protocol):
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http":
            raise ValueError("plain http:// only")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.host_header = parts.netloc.encode()
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.body: list[bytes] = []
        self.keep_alive = True

    # --- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"bad response: {exc}"))

    def connection_lost(self, exc) -> None:
        self.transport = None
        self._fail(HttpError("connection closed by the server" if exc is None else str(exc)))

    # --- httptools callbacks --------------------------------------------------------------------
    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    # --- requests -------------------------------------------------------------------------------
    async def _connect(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        await asyncio.get_running_loop().create_connection(lambda: self, self.host, self.port)

    async def request(self, method: str, path: str, *, params: dict | None = None, json_body=None,
                      headers: dict[str, str] | None = None) -> tuple[int, str]:
        """(status, body text) of one request."""
        if self.waiter is not None and not self.waiter.done():
            raise RuntimeError("one request at a time per connection")
        if self.transport is None or not self.keep_alive:
            if self.transport is not None:
                self.transport.close()
            await self._connect()
            self.keep_alive = True
        if params:
            path = f"{path}?{urlencode(params)}"
        body = b"" if json_body is None else json.dumps(json_body).encode()
        head = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self.host_header]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}".encode())
        if json_body is not None:
            head.append(b"Content-Type: application/json")
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: " + str(len(body)).encode())
        self.body = []
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        try:
            status, raw = await asyncio.wait_for(self.waiter, self.timeout)
        except TimeoutError:
            self.close()  # a late answer must not be read as the next request's
            raise
        return status, raw.decode()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
