"""A sliding-window rate limiter (per process). Keys are strings such as "lookup-ip:1.2.3.4"."""

from __future__ import annotations

import time
from collections import deque


class RateLimiter:
    def __init__(self, limit: int, window_seconds: float, clock=time.monotonic):
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}

    def _prune(self, key: str) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        cutoff = self.clock() - self.window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        return hits

    def allowed(self, key: str) -> bool:
        return len(self._prune(key)) < self.limit

    def hit(self, key: str) -> None:
        self._prune(key).append(self.clock())
        if len(self._hits) > 100_000:  # bound memory under a flood of distinct keys
            for stale in [k for k, v in self._hits.items() if not v][:50_000]:
                del self._hits[stale]
