"""Outbound HTTP to the store's peers (the 易支付 gateway, the recharge supplier, the LLM).

One pooled `httpx.AsyncClient` per peer, made on first use and reused: making a client builds a TLS
context, about 20 ms of CPU on the event loop (every customer's request waits meanwhile), and a client per
call also opens a new connection per call. A client belongs to the event loop it was made in; used from
another loop (a test's, a CLI command's), a new one is made there.
"""

from __future__ import annotations

import asyncio
import weakref

import httpx

_ALL: weakref.WeakSet[PooledClient] = weakref.WeakSet()


class PooledClient:
    def __init__(self, timeout: float, transport: httpx.AsyncBaseTransport | None = None):
        self.timeout = timeout
        self.transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        _ALL.add(self)

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._loop is not loop:
            self._client = httpx.AsyncClient(timeout=self.timeout, transport=self.transport)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


async def aclose_all() -> None:
    """Close every pooled client made in the running event loop: the app's own peers and the module-level
    ones (the LLM's, the demo gateway's and supplier's), at shutdown."""
    for pooled in list(_ALL):
        await pooled.aclose()
