"""Persist, then publish: events built inside a unit of work go out only after it commits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog

from zaima.db import on_commit

log = structlog.get_logger("zaima.realtime")
AGENT = "agent"


def publish_after_commit(session, hub, events: Iterable) -> None:
    """Queue `events` (objects with .topic and .payload) for the hub once `session` commits. A failed
    publish is logged, never raised: the data is committed and clients resume from the database."""
    events = list(events)
    if not events:
        return

    async def publish() -> None:
        for event in events:
            try:
                await hub.publish(event.topic, event.payload)
            except Exception as exc:  # noqa: BLE001 - best effort by design
                log.warning("publish failed", topic=event.topic, error=str(exc))

    on_commit(session, publish)


_online: dict[int, tuple[float, int]] = {}
_fetching: dict[int, asyncio.Future] = {}
ONLINE_CACHE_SECONDS = 1.0


async def _count_online(hub) -> int:
    count = sum(1 for state in (await hub.get_presence(AGENT)).values() if state == "online")
    _online[id(hub)] = (time.monotonic(), count)
    return count


async def agents_online(hub, fresh: bool = False) -> int:
    """How many agents are online now (any node). Cached for a second; `fresh` skips the cache, but
    concurrent callers share one lookup: a presence change is announced to every customer socket of
    the node at once, and they should not each ask Redis."""
    cached = _online.get(id(hub))
    if not fresh and cached is not None and time.monotonic() - cached[0] < ONLINE_CACHE_SECONDS:
        return cached[1]
    future = _fetching.get(id(hub))
    if future is None:
        future = asyncio.ensure_future(_count_online(hub))
        _fetching[id(hub)] = future
        future.add_done_callback(lambda _: _fetching.pop(id(hub), None))
    return await asyncio.shield(future)


def forget_online_count(hub) -> None:
    """Drop the cached count: this node just changed an agent's presence."""
    _online.pop(id(hub), None)
