"""RedisHub: the multi-node hub. Every node publishes to and listens on ONE Redis pub/sub channel
(``{prefix}events``) through ONE pub/sub connection, and fans events out to its own subscriptions.

Why one channel rather than a channel per topic with reference counts:
- A websocket connecting or leaving costs no Redis round trip; ``subscribe()`` stays synchronous and
  is effective immediately (a per-topic SUBSCRIBE would have to be awaited before the client reads
  "after N" from the database, or events in between could be missed).
- Nothing to get wrong across reconnects: re-subscribing is one channel, not a refcounted set that
  must match the local subscriptions exactly.
- The cost is that every node decodes every event, including those for conversations nobody on it
  watches. At after-sales volumes (hundreds of events a second, a handful of nodes) that is noise;
  if it ever is not, shard the channel by a hash of the topic — the interface does not change.

Envelope: ``{"topic", "event", "node"}`` as JSON. The publishing node delivers to its own
subscriptions directly (no Redis round trip, works while Redis is away) and ignores its own envelope
when it comes back. Publishing enqueues the envelope on a bounded outbox; one writer task sends it,
pipelining bursts, so a request never waits on Redis and one node's events keep their order. A full
outbox or a Redis error drops the event (counted in ``metrics``): pub/sub is best effort, the
database is the truth.

Reconnects: the reader task owns the pub/sub connection (redis-py's silent retry is disabled on it so
that a drop is seen). After a drop it reconnects with backoff, logs it, keeps local subscriptions and
delivers ``RESYNC_TOPIC`` to each of them, because events published meanwhile are gone.

Presence (Redis 7.0: no per-field hash expiry): per kind, a sorted set ident → expiry (ms, Redis
server time, so node clocks do not matter) and a hash ident → state, both changed only by Lua
scripts, so a change and its "was it a change?" answer are atomic, and of several nodes sweeping,
exactly one removes (and announces) each expired entry. Both keys carry a key-level expiry covering
the longest entry, so a cluster that dies entirely leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from zaima.realtime.hub import RESYNC_TOPIC, Event, Hub, log, stop_task

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: zset (ident -> expiry ms), hash (ident -> state). ARGV: ident, state, ttl ms.
# Returns 1 when the entry was absent, expired or in another state.
_PUT = _NOW_MS + """
local ttl = tonumber(ARGV[3])
local prev_exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
local prev_state = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
if prev_exp and tonumber(prev_exp) > now and prev_state == ARGV[2] then return 0 end
return 1
"""

# KEYS: zset, hash. ARGV: ident. Returns 1 when the entry was present and unexpired.
_DROP = _NOW_MS + """
local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if exp and tonumber(exp) > now then return 1 end
return 0
"""

# KEYS: zset, hash. Returns {expired idents removed now, {ident, state, ident, state, ...} live}.
_SWEEP = _NOW_MS + """
local gone = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE')
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  for _, ident in ipairs(gone) do redis.call('HDEL', KEYS[2], ident) end
end
local live = {}
for _, ident in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local state = redis.call('HGET', KEYS[2], ident)
  if state then
    live[#live + 1] = ident
    live[#live + 1] = state
  end
end
return {gone, live}
"""


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisHub(Hub):
    def __init__(self, url: str, *, node_id: str | None = None, prefix: str = "zaima:",
                 heartbeat_seconds: float = 10.0, presence_ttl_seconds: float = 30.0,
                 start_timeout: float = 5.0, outbox_size: int = 10_000, publish_batch: int = 256,
                 reconnect_min_seconds: float = 0.05, reconnect_max_seconds: float = 2.0,
                 health_check_seconds: float = 5.0, flush_timeout: float = 2.0):
        super().__init__(heartbeat_seconds=heartbeat_seconds, presence_ttl_seconds=presence_ttl_seconds)
        self.url = url
        self.node_id = node_id or default_node_id()
        self.prefix = prefix
        self.channel = f"{prefix}events"
        self.sub_client_name = f"zaima-hub-sub-{self.node_id}"
        self.start_timeout = start_timeout
        self.outbox_size = outbox_size
        self.publish_batch = publish_batch
        self.reconnect_min_seconds = reconnect_min_seconds
        self.reconnect_max_seconds = reconnect_max_seconds
        self.health_check_seconds = health_check_seconds
        self.flush_timeout = flush_timeout
        # received: remote events dispatched; publish_errors / dropped_outbox: events other nodes
        # did not get; reconnects: pub/sub connection re-established after a drop.
        self.metrics.update(received=0, publish_errors=0, dropped_outbox=0, reconnects=0, decode_errors=0)
        self._redis: Redis | None = None
        self._sub_redis: Redis | None = None
        self._connected: asyncio.Event | None = None
        self._outbox: asyncio.Queue[str] | None = None
        self._reader: asyncio.Task | None = None
        self._writer: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """The pub/sub connection is subscribed: events from other nodes are arriving."""
        return self._connected is not None and self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        if self._connected is None:
            return False
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _startup(self) -> None:
        # Commands (PUBLISH, presence): a pool; one quick retry replaces a connection that went stale
        # when Redis restarted. Timeouts keep a missing Redis from hanging the writer for long.
        self._redis = Redis.from_url(self.url, decode_responses=True, socket_connect_timeout=2,
                                     socket_timeout=5, retry=Retry(NoBackoff(), 1),
                                     client_name=f"zaima-hub-{self.node_id}")
        # Pub/sub: no silent retry (the reader must see a drop to tell subscribers to resync); a
        # periodic PING notices a dead peer that never closed the socket.
        self._sub_redis = Redis.from_url(self.url, socket_connect_timeout=2, socket_keepalive=True,
                                         retry=Retry(NoBackoff(), 0),
                                         health_check_interval=self.health_check_seconds,
                                         client_name=self.sub_client_name)
        self._put = self._redis.register_script(_PUT)
        self._drop = self._redis.register_script(_DROP)
        self._sweep = self._redis.register_script(_SWEEP)
        self._connected = asyncio.Event()
        self._outbox = asyncio.Queue(self.outbox_size)
        self._writer = asyncio.create_task(self._write_loop(), name=f"zaima-hub-writer-{self.node_id}")
        self._reader = asyncio.create_task(self._read_loop(), name=f"zaima-hub-reader-{self.node_id}")
        # Return once subscribed, so that events published after start() reach this node. If Redis
        # is not there yet, carry on locally; the reader keeps trying.
        if not await self.wait_connected(self.start_timeout):
            log.warning("realtime redis not reachable at start; retrying in the background",
                        node=self.node_id)

    async def _shutdown(self) -> None:
        if self._writer is not None and self._outbox is not None:
            try:  # send what was published before close() (e.g. presence going offline)
                await asyncio.wait_for(self._outbox.join(), self.flush_timeout)
            except TimeoutError:
                log.warning("realtime redis outbox not flushed on close", pending=self._outbox.qsize())
        await stop_task(self._reader)
        await stop_task(self._writer)
        self._reader = self._writer = None
        for client in (self._redis, self._sub_redis):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        if self._connected is not None:
            self._connected.clear()

    # -- events ------------------------------------------------------------------------------------
    async def publish(self, topic: str, event: Event) -> None:
        payload = self._encode(topic, event, node=self.node_id)
        if self._closed:
            return
        if not self._started:
            await self.start()
        self.metrics["published"] += 1
        self._fanout.dispatch(topic, event)
        try:
            self._outbox.put_nowait(payload)
        except asyncio.QueueFull:
            self.metrics["dropped_outbox"] += 1
            if self.metrics["dropped_outbox"] % 1000 == 1:
                log.warning("realtime redis outbox full; events for other nodes dropped",
                            dropped=self.metrics["dropped_outbox"])

    async def _write_loop(self) -> None:
        assert self._outbox is not None and self._redis is not None
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < self.publish_batch:
                try:
                    batch.append(self._outbox.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                if len(batch) == 1:
                    await self._redis.publish(self.channel, batch[0])
                else:
                    pipe = self._redis.pipeline(transaction=False)
                    for payload in batch:
                        pipe.publish(self.channel, payload)
                    await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics["publish_errors"] += len(batch)
                log.warning("realtime redis publish failed; events dropped for other nodes",
                            count=len(batch), error=repr(exc))
            finally:
                for _ in batch:
                    self._outbox.task_done()

    async def _read_loop(self) -> None:
        assert self._sub_redis is not None and self._connected is not None
        delay = self.reconnect_min_seconds
        failures = 0
        was_ever_connected = False
        while not self._closing:
            pubsub = self._sub_redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                confirmation = await pubsub.get_message(timeout=self.start_timeout)
                if not confirmation or confirmation["type"] != "subscribe":
                    raise TimeoutError(f"no subscribe confirmation from Redis: {confirmation!r}")
                self._connected.set()
                if was_ever_connected:
                    self.metrics["reconnects"] += 1
                    log.info("realtime redis reconnected; local subscribers told to resync",
                             node=self.node_id, subscribers=self.subscriber_count())
                    self._fanout.broadcast(RESYNC_TOPIC, {"type": "resync", "reason": "reconnected"})
                elif failures:
                    log.info("realtime redis connected", node=self.node_id, attempts=failures + 1)
                was_ever_connected = True
                failures = 0
                delay = self.reconnect_min_seconds
                while not self._closing:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._on_message(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if self._connected.is_set():
                    self._connected.clear()
                    log.warning("realtime redis pub/sub connection lost; reconnecting",
                                node=self.node_id, error=repr(exc))
                elif failures == 1 or failures % 30 == 0:
                    log.warning("realtime redis unreachable; retrying", node=self.node_id,
                                attempts=failures, error=repr(exc))
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_seconds)

    def _on_message(self, data: bytes) -> None:
        try:
            envelope = json.loads(data)
            topic, event, node = envelope["topic"], envelope["event"], envelope.get("node")
        except (ValueError, KeyError, TypeError) as exc:
            self.metrics["decode_errors"] += 1
            log.warning("realtime redis message not understood", error=repr(exc))
            return
        if node == self.node_id:
            return  # already delivered locally by publish()
        self.metrics["received"] += 1
        self._fanout.dispatch(topic, event)

    # -- presence ----------------------------------------------------------------------------------
    def _presence_keys(self, kind: str) -> list[str]:
        base = f"{self.prefix}presence:{kind}"
        return [base, f"{base}:state"]

    async def _presence_ready(self) -> None:
        if not self._started:
            await self.start()
        if self._closed:
            raise RuntimeError("hub is closed")

    async def _put_presence(self, kind: str, ident: str, state: str, ttl_seconds: float) -> bool:
        await self._presence_ready()
        ttl_ms = max(1, round(ttl_seconds * 1000))
        return bool(await self._put(keys=self._presence_keys(kind), args=[ident, state, ttl_ms]))

    async def _drop_presence(self, kind: str, ident: str) -> bool:
        await self._presence_ready()
        return bool(await self._drop(keys=self._presence_keys(kind), args=[ident]))

    async def _sweep_presence(self, kind: str) -> tuple[dict[str, str], list[str]]:
        await self._presence_ready()
        gone, flat = await self._sweep(keys=self._presence_keys(kind), args=[])
        live = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
        return live, list(gone)
