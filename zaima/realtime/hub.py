"""The realtime hub interface: best-effort, bounded fan-out of JSON events to this node's websocket
connections (and, in RedisHub, to every other node's), plus presence that expires on its own.

The hub is not a source of truth. Messages are persisted with a per-conversation sequence number
before they are published; pub/sub may drop. The hub's promises are therefore small and cheap:

- ``publish`` never waits on a subscriber. Each subscription has a bounded queue; when it is full
  the subscription is closed with ``close_reason == "overflow"`` (memory stays bounded, other
  subscribers are not delayed) and its consumer's iteration ends. The websocket layer then closes
  the socket with a "resume" code and the client catches up from the database "after N".
- When the hub knows events may have been lost for everyone on this node (RedisHub reconnected after
  losing its pub/sub connection), each subscription receives ``(RESYNC_TOPIC, {"type": "resync",
  ...})`` regardless of its topics: the consumer should fetch "after N" for what it shows.
- Events of one topic published from one node arrive in publish order. Across nodes there is no
  total order: a client orders and de-duplicates by sequence number.

Topics: ``conv:{id}`` (customer-visible events of a conversation), ``conv:{id}:staff`` (agent-only),
``inbox`` (agent inbox summaries), ``presence`` (presence changes, published by the hub itself).
Topics starting with ``hub:`` are reserved.

Presence is ``kind`` (e.g. "agent") → ``ident`` → ``state`` ("online", "away"; "offline" removes the
entry), each entry with a ttl so that a node that dies without saying goodbye drops out. A node keeps
its entries alive with a heartbeat: ``hold_presence`` returns a lease the hub refreshes every
``heartbeat_seconds`` until released. Every change (not every refresh) is published on the
``presence`` topic as ``{"type": "presence", "kind", "id", "state"}``; an entry found expired by a
sweep (heartbeat or ``get_presence``) is announced as ``state: "offline", "reason": "expired"``.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from typing import Any

import structlog

log = structlog.get_logger("zaima.realtime")

RESYNC_TOPIC = "hub:resync"  # delivered to every subscription, whatever its topics
PRESENCE_TOPIC = "presence"
OFFLINE = "offline"

# Subscription.close_reason values
CLOSED = "closed"  # the consumer closed it
OVERFLOW = "overflow"  # its queue was full: the consumer fell behind and must resume from the database
HUB_CLOSED = "hub_closed"  # the hub shut down (node stopping)

Event = dict[str, Any]


class SubscriptionClosed(Exception):
    """Raised by Subscription.get() once the subscription is closed; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


async def stop_task(task: asyncio.Task | None, timeout: float = 2.0) -> None:
    """Cancel ``task`` and wait for it to end, cancelling again if needed: on Python 3.11,
    ``asyncio.wait_for`` (used inside redis-py) swallows a cancellation that lands just as its inner
    future completes, so one ``cancel()`` is not always enough."""
    if task is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("realtime task did not stop", task=task.get_name())
            return
        task.cancel()
        await asyncio.wait({task}, timeout=min(0.05, remaining))
    if not task.cancelled() and task.exception() is not None:
        log.warning("realtime task had failed", task=task.get_name(), error=repr(task.exception()))


def presence_event(kind: str, ident: str, state: str, **extra: Any) -> Event:
    return {"type": "presence", "kind": kind, "id": ident, "state": state, **extra}


def check_topic(topic: str) -> None:
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"topic must be a non-empty string, not {topic!r}")
    if topic.startswith("hub:"):
        raise ValueError(f"topics starting with 'hub:' are reserved ({topic!r})")


def check_presence_kind(kind: str) -> None:
    # ':' in a kind would let two kinds share a Redis key.
    if not kind or ":" in kind:
        raise ValueError(f"presence kind must be non-empty and contain no ':' ({kind!r})")


def check_presence_key(kind: str, ident: str) -> None:
    check_presence_kind(kind)
    if not ident:
        raise ValueError("presence ident must be non-empty")


class Subscription:
    """One consumer's topics and its bounded queue of ``(topic, event)``.

    Single consumer: one task calls ``get()`` / iterates. Events are shared between subscribers, so
    treat them as read-only. ``add``/``remove`` take effect at once; an event of a removed topic that
    is still queued is skipped. Usable as a context manager (closes on exit).
    """

    __slots__ = ("_fanout", "_topics", "_queue", "_maxsize", "_waiter", "close_reason", "__weakref__")

    def __init__(self, fanout: LocalFanout, maxsize: int):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._fanout = fanout
        self._topics: set[str] = set()
        self._queue: deque[tuple[str, Event]] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future | None = None
        self.close_reason: str | None = None

    # -- state -------------------------------------------------------------------------------------
    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._topics)

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    @property
    def overflowed(self) -> bool:
        """True when the hub closed this subscription because its queue was full."""
        return self.close_reason == OVERFLOW

    @property
    def maxsize(self) -> int:
        return self._maxsize

    def qsize(self) -> int:
        return len(self._queue)

    # -- topics ------------------------------------------------------------------------------------
    def add(self, topic: str) -> None:
        check_topic(topic)
        if self.closed or topic in self._topics:
            return
        self._topics.add(topic)
        self._fanout._index(self, topic)

    def remove(self, topic: str) -> None:
        if topic in self._topics:
            self._topics.discard(topic)
            self._fanout._unindex(self, topic)

    # -- consuming ---------------------------------------------------------------------------------
    async def get(self) -> tuple[str, Event]:
        """The next ``(topic, event)``; waits if none. Raises SubscriptionClosed once closed (queued
        events are discarded on close: whoever closes has decided the consumer resumes elsewhere).
        Cancelling a waiting get() loses nothing."""
        while True:
            if self.close_reason is not None:
                raise SubscriptionClosed(self.close_reason)
            while self._queue:
                topic, event = self._queue.popleft()
                if topic in self._topics or topic == RESYNC_TOPIC:
                    return topic, event
            if self._waiter is not None:
                raise RuntimeError("Subscription.get() is already being awaited by another task")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[str, Event]:
        try:
            return await self.get()
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    def close(self) -> None:
        self._close(CLOSED)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- hub side ----------------------------------------------------------------------------------
    def _offer(self, topic: str, event: Event) -> bool:
        """Queue without waiting; False when the queue is full (the fan-out then closes us)."""
        if len(self._queue) >= self._maxsize:
            return False
        self._queue.append((topic, event))
        self._wake()
        return True

    def _close(self, reason: str) -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self._queue.clear()
        self._fanout._forget(self)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __repr__(self) -> str:
        state = self.close_reason or "open"
        return f"<Subscription {sorted(self._topics)} {len(self._queue)}/{self._maxsize} {state}>"


class LocalFanout:
    """This node's subscriptions, indexed by topic. Dispatch is synchronous and never blocks."""

    def __init__(self, metrics: dict[str, int]):
        self._metrics = metrics
        self._by_topic: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self._closed = False

    def subscribe(self, topics: Iterable[str], maxsize: int) -> Subscription:
        if isinstance(topics, str):
            raise TypeError("subscribe() takes an iterable of topics, not a single string")
        sub = Subscription(self, maxsize)
        if self._closed:
            sub._close(HUB_CLOSED)
            return sub
        self._all.add(sub)
        for topic in topics:
            sub.add(topic)
        return sub

    def dispatch(self, topic: str, event: Event) -> int:
        subs = self._by_topic.get(topic)
        if not subs:
            return 0
        return self._offer_all(subs, topic, event)

    def broadcast(self, topic: str, event: Event) -> int:
        """To every open subscription, whatever its topics (used for RESYNC_TOPIC)."""
        return self._offer_all(self._all, topic, event)

    def _offer_all(self, subs: set[Subscription], topic: str, event: Event) -> int:
        delivered = 0
        full = None
        for sub in subs:
            if sub._offer(topic, event):
                delivered += 1
            else:
                (full := full or []).append(sub)
        if full:
            # Closed after the loop: closing removes the subscription from the set being iterated.
            for sub in full:
                sub._close(OVERFLOW)
            self._metrics["dropped_overflow"] += len(full)
            log.info("realtime subscriber overflowed", topic=topic, count=len(full))
        self._metrics["delivered"] += delivered
        return delivered

    def close_all(self, reason: str = HUB_CLOSED) -> None:
        self._closed = True
        for sub in list(self._all):
            sub._close(reason)

    def subscriber_count(self, topic: str | None = None) -> int:
        if topic is None:
            return len(self._all)
        return len(self._by_topic.get(topic, ()))

    def _index(self, sub: Subscription, topic: str) -> None:
        self._by_topic.setdefault(topic, set()).add(sub)

    def _unindex(self, sub: Subscription, topic: str) -> None:
        subs = self._by_topic.get(topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_topic[topic]

    def _forget(self, sub: Subscription) -> None:
        self._all.discard(sub)
        for topic in sub._topics:
            self._unindex(sub, topic)


class PresenceLease:
    """This node's claim that ``ident`` is present; refreshed by the hub's heartbeat until released.

    Several leases on one ident (an agent with two tabs on this node) share one entry: the state is
    the most recently updated lease's, and the entry is cleared when the last lease is released.
    """

    def __init__(self, hub: Hub, kind: str, ident: str, state: str, ttl_seconds: float):
        self.hub = hub
        self.kind = kind
        self.ident = ident
        self.state = state
        self.ttl_seconds = ttl_seconds
        self.released = False

    async def update(self, state: str) -> None:
        if self.released:
            raise RuntimeError("presence lease already released")
        if state == OFFLINE:
            raise ValueError("release the lease to go offline")
        self.state = state
        await self.hub._lease_updated(self)

    async def release(self) -> None:
        if not self.released:
            self.released = True
            await self.hub._lease_released(self)


class Hub(ABC):
    """Fan-out of events to subscriptions on this node (and other nodes), and presence.

    Lifecycle: ``await start()`` once (idempotent; the app lifespan calls it through
    ``AppContext.start()``); implementations that need it also start lazily on first publish or
    presence call. ``close()`` is final: it clears this node's presence leases, closes every
    subscription with ``HUB_CLOSED`` and stops background tasks; later publishes are ignored.
    """

    def __init__(self, *, heartbeat_seconds: float = 10.0, presence_ttl_seconds: float = 30.0):
        if presence_ttl_seconds <= heartbeat_seconds:
            raise ValueError("presence ttl must be longer than the heartbeat interval")
        self.heartbeat_seconds = heartbeat_seconds
        self.presence_ttl_seconds = presence_ttl_seconds
        # published: publish() calls; delivered: events queued to local subscriptions;
        # dropped_overflow: subscriptions closed because their queue was full.
        self.metrics: dict[str, int] = {"published": 0, "delivered": 0, "dropped_overflow": 0}
        self._fanout = LocalFanout(self.metrics)
        self._leases: dict[tuple[str, str], list[PresenceLease]] = {}
        self._presence_kinds: set[str] = set()
        self._heartbeat_task: asyncio.Task | None = None
        self._start_lock: asyncio.Lock | None = None
        self._started = False
        self._closing = False  # close() has begun: background loops exit
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self) -> None:
        if self._started or self._closing:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started or self._closing:
                return
            await self._startup()
            self._heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name="zaima-hub-heartbeat")
            self._started = True

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._start_lock is not None:
            async with self._start_lock:  # let a start() in progress finish, so it can be undone
                pass
        await stop_task(self._heartbeat_task)
        self._heartbeat_task = None
        if self._started:
            # Going away politely: this node's agents go offline now rather than at ttl.
            for kind, ident in list(self._leases):
                try:
                    await self.clear_presence(kind, ident)
                except Exception as exc:  # best effort; the ttl covers it
                    log.warning("realtime presence not cleared on close", kind=kind, ident=ident, error=str(exc))
        self._leases.clear()
        self._closed = True
        self._fanout.close_all(HUB_CLOSED)
        if self._started:
            await self._shutdown()

    async def _startup(self) -> None:
        """Connect whatever the implementation needs (called once, inside start())."""
        return None

    async def _shutdown(self) -> None:
        """Disconnect (called once, inside close(), after subscriptions are closed)."""
        return None

    # -- events ------------------------------------------------------------------------------------
    def subscribe(self, topics: Iterable[str] = (), maxsize: int = 256) -> Subscription:
        """A new subscription on this node. Synchronous; it receives events published after it is
        created, as long as the hub is started (RedisHub: subscribed to Redis)."""
        return self._fanout.subscribe(topics, maxsize)

    @abstractmethod
    async def publish(self, topic: str, event: Event) -> None:
        """Fan ``event`` out to every subscription of ``topic`` on every node. Best effort: never
        blocks on a subscriber; raises only for a bad topic or an event that is not JSON."""

    def subscriber_count(self, topic: str | None = None) -> int:
        """Open subscriptions on this node (of ``topic``, or all)."""
        return self._fanout.subscriber_count(topic)

    @staticmethod
    def _encode(topic: str, event: Event, **envelope: Any) -> str:
        check_topic(topic)
        if not isinstance(event, dict):
            raise TypeError(f"an event is a dict, not {type(event).__name__}")
        # Both hubs serialise, so a non-JSON event fails on one node exactly as on many.
        return json.dumps({"topic": topic, "event": event, **envelope}, ensure_ascii=False,
                          separators=(",", ":"))

    # -- presence ----------------------------------------------------------------------------------
    async def set_presence(self, kind: str, ident: str, state: str, ttl_seconds: float) -> None:
        """Mark ``ident`` present in ``state`` for ``ttl_seconds`` (``"offline"`` clears it). Publishes
        a presence event when the state changed or the entry was absent or expired."""
        check_presence_key(kind, ident)
        if state == OFFLINE:
            await self.clear_presence(kind, ident)
            return
        if not state:
            raise ValueError("presence state must be non-empty")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._presence_kinds.add(kind)
        if await self._put_presence(kind, ident, state, ttl_seconds):
            await self.publish(PRESENCE_TOPIC, presence_event(kind, ident, state))

    async def get_presence(self, kind: str) -> dict[str, str]:
        """Unexpired entries of ``kind`` as ident → state. Expired ones are removed and announced."""
        check_presence_kind(kind)
        self._presence_kinds.add(kind)
        live, expired = await self._sweep_presence(kind)
        await self._announce_expired(kind, expired)
        return live

    async def clear_presence(self, kind: str, ident: str) -> None:
        """Remove ``ident`` now; publishes ``offline`` if it was present."""
        check_presence_key(kind, ident)
        if await self._drop_presence(kind, ident):
            await self.publish(PRESENCE_TOPIC, presence_event(kind, ident, OFFLINE))

    async def hold_presence(self, kind: str, ident: str, state: str = "online",
                            ttl_seconds: float | None = None) -> PresenceLease:
        """Claim presence for as long as this node lives (or until ``release()``): the heartbeat
        refreshes it every ``heartbeat_seconds``; if the node dies it expires after the ttl."""
        ttl = self.presence_ttl_seconds if ttl_seconds is None else ttl_seconds
        if ttl <= self.heartbeat_seconds:
            raise ValueError("presence ttl must be longer than the heartbeat interval")
        if state == OFFLINE:
            raise ValueError("a lease cannot hold 'offline'")
        check_presence_key(kind, ident)
        await self.start()
        lease = PresenceLease(self, kind, ident, state, ttl)
        self._leases.setdefault((kind, ident), []).append(lease)
        await self.set_presence(kind, ident, state, ttl)
        return lease

    async def heartbeat(self) -> None:
        """Refresh this node's leases and sweep expired entries (run periodically by start())."""
        for (kind, ident), leases in list(self._leases.items()):
            current = leases[-1]
            await self.set_presence(kind, ident, current.state, max(lease.ttl_seconds for lease in leases))
        for kind in list(self._presence_kinds):
            _, expired = await self._sweep_presence(kind)
            await self._announce_expired(kind, expired)

    async def _heartbeat_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("realtime presence heartbeat failed", error=str(exc))

    async def _lease_updated(self, lease: PresenceLease) -> None:
        leases = self._leases.get((lease.kind, lease.ident), [])
        if lease in leases:
            leases.remove(lease)
            leases.append(lease)  # the most recently updated lease decides the state
        await self.set_presence(lease.kind, lease.ident, lease.state, lease.ttl_seconds)

    async def _lease_released(self, lease: PresenceLease) -> None:
        key = (lease.kind, lease.ident)
        leases = self._leases.get(key)
        if not leases or lease not in leases:
            return
        leases.remove(lease)
        if leases:
            current = leases[-1]
            await self.set_presence(lease.kind, lease.ident, current.state, current.ttl_seconds)
        else:
            del self._leases[key]
            await self.clear_presence(lease.kind, lease.ident)

    async def _announce_expired(self, kind: str, idents: Iterable[str]) -> None:
        for ident in idents:
            await self.publish(PRESENCE_TOPIC, presence_event(kind, ident, OFFLINE, reason="expired"))

    @abstractmethod
    async def _put_presence(self, kind: str, ident: str, state: str, ttl_seconds: float) -> bool:
        """Store the entry; True if it was absent, expired or in another state (a change)."""

    @abstractmethod
    async def _drop_presence(self, kind: str, ident: str) -> bool:
        """Remove the entry; True if it was present and unexpired."""

    @abstractmethod
    async def _sweep_presence(self, kind: str) -> tuple[dict[str, str], list[str]]:
        """Remove expired entries; return (live ident → state, idents removed by this call). Atomic
        so that among several nodes sweeping, exactly one announces each expiry."""
