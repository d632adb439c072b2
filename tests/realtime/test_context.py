"""build_hub picks the backend from the settings; the app context owns the hub's lifecycle."""

from __future__ import annotations

from tests.conftest import make_settings
from zaima.context import build_context
from zaima.core.clock import FrozenClock
from zaima.realtime import HUB_CLOSED, InProcessHub, RedisHub, build_hub


def _settings(tmp_path, **overrides):
    return make_settings(f"sqlite+aiosqlite:///{tmp_path / 'zaima.db'}", tmp_path, **overrides)


def test_without_a_redis_url_the_hub_is_in_process_and_uses_the_context_clock(tmp_path):
    clock = FrozenClock()
    hub = build_hub(_settings(tmp_path), clock)
    assert isinstance(hub, InProcessHub) and hub.clock is clock


async def test_with_a_redis_url_the_hub_is_redis_and_connects_only_when_started(tmp_path):
    hub = build_hub(_settings(tmp_path, redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(hub, RedisHub) and hub.url == "redis://127.0.0.1:1/0"
    assert not hub.started and not hub.connected
    await hub.close()


async def test_the_context_builds_starts_and_closes_its_hub(tmp_path):
    clock = FrozenClock()
    ctx = build_context(_settings(tmp_path), clock=clock)
    assert isinstance(ctx.hub, InProcessHub) and ctx.hub.clock is ctx.clock is clock
    await ctx.start()
    assert ctx.hub.started
    sub = ctx.hub.subscribe(["conv:1"])
    await ctx.hub.publish("conv:1", {"seq": 1})
    assert await sub.get() == ("conv:1", {"seq": 1})
    await ctx.close()
    assert ctx.hub.closed and sub.close_reason == HUB_CLOSED


async def test_a_context_accepts_a_hub_from_the_caller(tmp_path):
    hub = InProcessHub()
    ctx = build_context(_settings(tmp_path), hub=hub)
    assert ctx.hub is hub
    await ctx.close()  # never started: closing is still fine
    assert hub.closed
