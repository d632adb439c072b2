"""InProcessHub: the single-node hub (the default, and `zaima demo`'s). Publish is a synchronous
fan-out into the subscriptions' bounded queues; presence lives in a dict with expiry read from the
injected clock, so tests expire entries by moving a FrozenClock instead of sleeping."""

from __future__ import annotations

from datetime import datetime, timedelta

from zaima.core.clock import Clock
from zaima.realtime.hub import Event, Hub


class InProcessHub(Hub):
    def __init__(self, clock: Clock | None = None, *, heartbeat_seconds: float = 10.0,
                 presence_ttl_seconds: float = 30.0):
        super().__init__(heartbeat_seconds=heartbeat_seconds, presence_ttl_seconds=presence_ttl_seconds)
        self.clock = clock or Clock()
        # kind → ident → (state, expires_at)
        self._presence: dict[str, dict[str, tuple[str, datetime]]] = {}

    async def publish(self, topic: str, event: Event) -> None:
        self._encode(topic, event)
        if self._closed:
            return
        self.metrics["published"] += 1
        self._fanout.dispatch(topic, event)

    async def _put_presence(self, kind: str, ident: str, state: str, ttl_seconds: float) -> bool:
        now = self.clock.now()
        entries = self._presence.setdefault(kind, {})
        previous = entries.get(ident)
        entries[ident] = (state, now + timedelta(seconds=ttl_seconds))
        return previous is None or previous[1] <= now or previous[0] != state

    async def _drop_presence(self, kind: str, ident: str) -> bool:
        previous = self._presence.get(kind, {}).pop(ident, None)
        return previous is not None and previous[1] > self.clock.now()

    async def _sweep_presence(self, kind: str) -> tuple[dict[str, str], list[str]]:
        now = self.clock.now()
        entries = self._presence.get(kind, {})
        expired = [ident for ident, (_, expires_at) in entries.items() if expires_at <= now]
        for ident in expired:
            del entries[ident]
        return {ident: state for ident, (state, _) in entries.items()}, expired
