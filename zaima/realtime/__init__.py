"""Realtime fan-out and presence: the Hub interface, the in-process hub (one node, the default) and
the Redis hub (several nodes). See zaima/realtime/hub.py for the contract."""

from __future__ import annotations

from zaima.config import Settings
from zaima.core.clock import Clock
from zaima.realtime.hub import (
    CLOSED,
    HUB_CLOSED,
    OFFLINE,
    OVERFLOW,
    PRESENCE_TOPIC,
    RESYNC_TOPIC,
    Event,
    Hub,
    PresenceLease,
    Subscription,
    SubscriptionClosed,
    presence_event,
)
from zaima.realtime.memory import InProcessHub
from zaima.realtime.redis_hub import RedisHub


def build_hub(settings: Settings, clock: Clock | None = None) -> Hub:
    """RedisHub when ZAIMA_REDIS_URL is set, else the in-process hub. Nothing connects until start()."""
    if settings.redis_url:
        return RedisHub(settings.redis_url, prefix=settings.redis_prefix)
    return InProcessHub(clock)


__all__ = [
    "CLOSED",
    "HUB_CLOSED",
    "OFFLINE",
    "OVERFLOW",
    "PRESENCE_TOPIC",
    "RESYNC_TOPIC",
    "Event",
    "Hub",
    "InProcessHub",
    "PresenceLease",
    "RedisHub",
    "Subscription",
    "SubscriptionClosed",
    "build_hub",
    "presence_event",
]
