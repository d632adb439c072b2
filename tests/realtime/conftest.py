"""Fixtures for the realtime hub: every behavioural test runs against the in-process hub and against
RedisHub on a real Redis (127.0.0.1:6379, or ZAIMA_TEST_REDIS_URL). Without a reachable Redis the
Redis variants are skipped, unless ZAIMA_REQUIRE_SERVICES=1. Each test gets its own key and channel
prefix, so parallel runs do not see each other."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import pytest

from zaima.core.clock import FrozenClock
from zaima.realtime import Hub, InProcessHub, RedisHub, Subscription

REDIS_URL = os.environ.get("ZAIMA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("ZAIMA_REQUIRE_SERVICES") == "1"

# Short enough for real expiry in a fast test, long enough to be well above scheduling noise.
HEARTBEAT = 0.1
TTL = 0.5


def _redis_available() -> bool:
    parsed = urlparse(REDIS_URL)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _redis_available():
        if REQUIRE_SERVICES:
            pytest.fail(f"Redis is required (ZAIMA_REQUIRE_SERVICES=1) but {REDIS_URL} is unreachable")
        pytest.skip("Redis not reachable")
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url):
    """A key and channel prefix of this test's own; its keys are deleted afterwards. (Synchronous, so
    that the async ``case`` fixture can request it lazily.)"""
    from redis import Redis

    prefix = f"zaima-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    with Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
async def redis_admin(redis_url):
    """A plain client for poking at Redis from the outside (CLIENT LIST / KILL, TTLs)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@dataclass
class HubCase:
    """One backend under test: ``hub`` is this node; ``peer`` is another node on the same backend
    (the same hub for the in-process backend, which has only one node)."""

    backend: str
    hub: Hub
    peer: Hub
    clock: FrozenClock
    make: object  # (**kwargs) -> Hub: a further node (not started); the fixture closes it

    async def elapse(self, seconds: float) -> None:
        """Let time pass: the frozen clock for the in-process hub, real time for Redis (server time)."""
        if self.backend == "memory":
            self.clock.advance(seconds=seconds)
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(seconds)


@pytest.fixture(params=["memory", "redis"])
async def case(request):
    clock = FrozenClock()
    hubs: list[Hub] = []
    if request.param == "memory":
        def make(**kwargs) -> Hub:
            kwargs.setdefault("heartbeat_seconds", HEARTBEAT)
            kwargs.setdefault("presence_ttl_seconds", TTL)
            hub = InProcessHub(clock, **kwargs)
            hubs.append(hub)
            return hub

        hub = make()
        peer = hub
    else:
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")

        def make(**kwargs) -> Hub:
            kwargs.setdefault("heartbeat_seconds", HEARTBEAT)
            kwargs.setdefault("presence_ttl_seconds", TTL)
            kwargs.setdefault("reconnect_min_seconds", 0.02)
            hub = RedisHub(url, prefix=prefix, node_id=f"node{len(hubs) + 1}-{uuid.uuid4().hex[:6]}", **kwargs)
            hubs.append(hub)
            return hub

        hub, peer = make(), make()
    for h in hubs:
        await h.start()
    yield HubCase(request.param, hub, peer, clock, make)
    for h in hubs:
        await h.close()


async def next_event(sub: Subscription, timeout: float = 2.0) -> tuple[str, dict]:
    return await asyncio.wait_for(sub.get(), timeout)


async def take(sub: Subscription, count: int, timeout: float = 2.0) -> list[tuple[str, dict]]:
    return [await next_event(sub, timeout) for _ in range(count)]
