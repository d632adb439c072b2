"""What only RedisHub has: several nodes on one Redis, one pub/sub connection per node, reconnecting
after the connection is dropped, lazy start, and the presence of a dead node expiring."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from zaima.realtime import PRESENCE_TOPIC, RESYNC_TOPIC, RedisHub
from zaima.realtime.hub import stop_task

from .conftest import next_event, take

# Only the Redis variant of the `case` fixture applies here.
redis_only = pytest.mark.parametrize("case", ["redis"], indirect=True)


async def _sub_connections(admin, hub: RedisHub) -> list[dict]:
    return [c for c in await admin.client_list() if c.get("name") == hub.sub_client_name]


@redis_only
async def test_two_nodes_see_each_others_events_once(case):
    a, b = case.hub, case.peer
    on_a, on_b = a.subscribe(["conv:1"]), b.subscribe(["conv:1"])
    await a.publish("conv:1", {"from": "a"})
    await b.publish("conv:1", {"from": "b"})

    for sub in (on_a, on_b):
        assert sorted(event["from"] for _, event in await take(sub, 2)) == ["a", "b"]
    # Each node delivered its own event locally and ignored its echo from Redis.
    await a.publish("conv:1", {"from": "a", "last": True})
    assert await next_event(on_b) == ("conv:1", {"from": "a", "last": True})
    assert await next_event(on_a) == ("conv:1", {"from": "a", "last": True})
    assert on_a.qsize() == 0 and on_b.qsize() == 0
    assert a.metrics["published"] == 2 and a.metrics["received"] == 1
    assert b.metrics["published"] == 1 and b.metrics["received"] == 2


@redis_only
async def test_one_pubsub_connection_per_node_whatever_the_number_of_subscribers(case, redis_admin):
    hub = case.hub
    subs = [hub.subscribe([f"conv:{n}", "inbox"]) for n in range(50)]
    await case.peer.publish("inbox", {"n": 1})
    for sub in subs:
        assert await next_event(sub) == ("inbox", {"n": 1})
    connections = await _sub_connections(redis_admin, hub)
    assert len(connections) == 1 and connections[0]["sub"] == "1"  # subscribed to one channel


@redis_only
async def test_a_hub_that_was_never_started_starts_on_first_publish(case):
    node = case.make()
    assert not node.started
    listener = case.hub.subscribe(["conv:5"])
    await node.publish("conv:5", {"n": 1})
    assert node.started and node.connected
    assert await next_event(listener) == ("conv:5", {"n": 1})
    # ... and, started, it hears the others.
    local = node.subscribe(["conv:5"])
    await case.hub.publish("conv:5", {"n": 2})
    assert await next_event(local) == ("conv:5", {"n": 2})


@redis_only
async def test_the_hub_reconnects_after_its_pubsub_connection_is_killed(case, redis_admin):
    hub, peer = case.hub, case.peer
    sub = hub.subscribe(["conv:1"])
    await peer.publish("conv:1", {"n": 1})
    assert await next_event(sub) == ("conv:1", {"n": 1})

    [connection] = await _sub_connections(redis_admin, hub)
    assert await redis_admin.client_kill_filter(_id=connection["id"]) == 1

    # Local subscriptions survive and are told that events may have been missed...
    assert await next_event(sub) == (RESYNC_TOPIC, {"type": "resync", "reason": "reconnected"})
    assert hub.metrics["reconnects"] == 1 and hub.connected
    [again] = await _sub_connections(redis_admin, hub)
    assert again["id"] != connection["id"]
    # ... and events flow again.
    await peer.publish("conv:1", {"n": 2})
    assert await next_event(sub) == ("conv:1", {"n": 2})
    assert not sub.closed


@redis_only
async def test_close_stops_the_reader_and_releases_the_connections(case, redis_admin):
    node = case.make()
    await node.start()
    reader, writer = node._reader, node._writer
    assert await _sub_connections(redis_admin, node)
    sub = node.subscribe(["conv:1"])

    await asyncio.wait_for(node.close(), 3)
    assert reader.done() and writer.done() and not node.connected
    assert sub.closed
    for _ in range(50):  # the server notices the closed socket a moment later
        if not await _sub_connections(redis_admin, node):
            break
        await asyncio.sleep(0.01)
    assert await _sub_connections(redis_admin, node) == []


@redis_only
async def test_presence_of_a_node_that_died_expires_and_is_announced(case, redis_admin):
    survivor = case.hub
    events = survivor.subscribe([PRESENCE_TOPIC])
    doomed = case.make()
    await doomed.hold_presence("agent", "7")
    assert await next_event(events) == (PRESENCE_TOPIC, {"type": "presence", "kind": "agent", "id": "7",
                                                         "state": "online"})
    zset = f"{doomed.prefix}presence:agent"
    assert 0 < await redis_admin.pttl(zset) <= 500  # even the index keys vanish if every node dies

    await asyncio.sleep(0.6)  # past the ttl: the heartbeat keeps it
    assert await survivor.get_presence("agent") == {"7": "online"}

    await stop_task(doomed._heartbeat_task)  # the node dies: no heartbeat, no goodbye
    await survivor.hold_presence("agent", "1")  # gives the survivor a heartbeat that sweeps "agent"
    assert (await next_event(events))[1]["id"] == "1"
    assert await next_event(events, timeout=3) == (
        PRESENCE_TOPIC, {"type": "presence", "kind": "agent", "id": "7", "state": "offline", "reason": "expired"})
    assert await survivor.get_presence("agent") == {"1": "online"}


async def test_without_redis_the_hub_still_serves_this_node():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    node = RedisHub(f"redis://127.0.0.1:{port}/0", node_id=f"lonely-{uuid.uuid4().hex[:6]}",
                    start_timeout=0.2, reconnect_min_seconds=0.02)
    try:
        await asyncio.wait_for(node.start(), 2)
        assert node.started and not node.connected
        sub = node.subscribe(["conv:1"])
        await asyncio.wait_for(node.publish("conv:1", {"n": 1}), 1)
        assert await take(sub, 1) == [("conv:1", {"n": 1})]
        for _ in range(100):
            if node.metrics["publish_errors"]:
                break
            await asyncio.sleep(0.01)
        assert node.metrics["publish_errors"] == 1  # counted, not raised
    finally:
        await asyncio.wait_for(node.close(), 5)


async def test_close_during_a_slow_start_stops_everything_the_start_began():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = RedisHub(f"redis://127.0.0.1:{port}/0", start_timeout=0.3)
    starting = asyncio.create_task(node.start())
    await asyncio.sleep(0.05)  # start() is waiting for a Redis that is not there
    await asyncio.wait_for(node.close(), 3)
    await asyncio.wait_for(starting, 1)
    assert node.closed and node._reader is None and node._writer is None and node._heartbeat_task is None
