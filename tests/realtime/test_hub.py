"""The hub contract, on both backends: topic filtering and order, bounded queues that close a slow
subscriber instead of slowing anyone else, presence with expiry, and a clean shutdown."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from zaima.realtime import HUB_CLOSED, OVERFLOW, PRESENCE_TOPIC, RESYNC_TOPIC, SubscriptionClosed

from .conftest import TTL, next_event, take


async def test_subscriber_receives_only_its_topics_in_publish_order(case):
    sub = case.hub.subscribe(["conv:1", "inbox"])
    other = case.hub.subscribe(["conv:1:staff"])
    for topic, n in [("conv:2", 1), ("conv:1", 2), ("inbox", 3), ("conv:1:staff", 4), ("conv:1", 5)]:
        await case.peer.publish(topic, {"n": n, "text": "在吗"})

    assert await take(sub, 3) == [("conv:1", {"n": 2, "text": "在吗"}), ("inbox", {"n": 3, "text": "在吗"}),
                                  ("conv:1", {"n": 5, "text": "在吗"})]
    assert await next_event(other) == ("conv:1:staff", {"n": 4, "text": "在吗"})
    # The last event published has arrived, so nothing else is on its way.
    assert sub.qsize() == 0 and other.qsize() == 0


async def test_many_events_keep_their_order(case):
    sub = case.hub.subscribe(["conv:9"], maxsize=1000)
    for n in range(500):
        await case.peer.publish("conv:9", {"seq": n})
    assert [event["seq"] for _, event in await take(sub, 500)] == list(range(500))


async def test_topics_can_be_added_and_removed(case):
    sub = case.hub.subscribe()
    assert sub.topics == frozenset()
    sub.add("conv:1")
    await case.peer.publish("conv:1", {"n": 1})
    assert await next_event(sub) == ("conv:1", {"n": 1})

    sub.remove("conv:1")
    sub.add("conv:2")
    assert sub.topics == {"conv:2"}
    await case.peer.publish("conv:1", {"n": 2})
    await case.peer.publish("conv:2", {"n": 3})
    assert await next_event(sub) == ("conv:2", {"n": 3})
    assert sub.qsize() == 0
    assert case.hub.subscriber_count("conv:1") == 0 and case.hub.subscriber_count("conv:2") == 1


async def test_an_event_queued_before_its_topic_was_removed_is_skipped(case):
    sub = case.hub.subscribe(["conv:1", "conv:2"])
    await case.hub.publish("conv:1", {"n": 1})  # delivered locally at once, on both backends
    await case.hub.publish("conv:2", {"n": 2})
    assert sub.qsize() == 2
    sub.remove("conv:1")
    assert await next_event(sub) == ("conv:2", {"n": 2})


async def test_a_slow_subscriber_overflows_and_is_closed_while_a_fast_one_gets_everything(case):
    fast = case.hub.subscribe(["conv:1"], maxsize=100)
    slow = case.hub.subscribe(["conv:1"], maxsize=3)
    for n in range(50):  # nobody reads while publishing: publish must not wait for anyone
        await asyncio.wait_for(case.peer.publish("conv:1", {"seq": n}), 1)

    assert [event["seq"] for _, event in await take(fast, 50)] == list(range(50))
    assert slow.overflowed and slow.closed and slow.close_reason == OVERFLOW
    assert slow.qsize() == 0  # its backlog was freed, not kept
    assert [item async for item in slow] == []  # the consumer's loop ends: time to resume from the DB
    with pytest.raises(SubscriptionClosed) as closed:
        await slow.get()
    assert closed.value.reason == OVERFLOW
    assert case.hub.metrics["dropped_overflow"] == 1
    assert case.hub.subscriber_count("conv:1") == 1
    assert not fast.closed


async def test_overflow_ends_the_loop_of_a_consumer_that_fell_behind(case):
    sub = case.hub.subscribe(["conv:1"], maxsize=1)
    received = []
    stuck = asyncio.Event()

    async def consume():
        async for item in sub:
            received.append(item)
            await stuck.wait()  # a slow socket write
        return sub.close_reason

    task = asyncio.create_task(consume())
    await case.hub.publish("conv:1", {"n": 1})
    while not received:
        await asyncio.sleep(0)
    await case.hub.publish("conv:1", {"n": 2})  # queued
    await case.hub.publish("conv:1", {"n": 3})  # queue full: the subscription is closed
    stuck.set()
    assert await asyncio.wait_for(task, 1) == OVERFLOW
    assert received == [("conv:1", {"n": 1})]


async def test_closing_a_subscription_wakes_its_consumer(case):
    sub = case.hub.subscribe(["conv:1"])
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0.01)
    sub.close()
    with pytest.raises(SubscriptionClosed):
        await asyncio.wait_for(waiter, 1)
    assert case.hub.subscriber_count() == 0
    await case.hub.publish("conv:1", {"n": 1})  # nobody left to deliver to; no error


async def test_a_cancelled_get_loses_nothing(case):
    sub = case.hub.subscribe(["conv:1"])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sub.get(), 0.01)
    await case.peer.publish("conv:1", {"n": 1})
    assert await next_event(sub) == ("conv:1", {"n": 1})


async def test_events_are_json_and_hub_topics_are_reserved(case):
    with pytest.raises(TypeError):
        await case.hub.publish("conv:1", {"at": datetime.now(UTC)})
    with pytest.raises(ValueError):
        await case.hub.publish(RESYNC_TOPIC, {})
    with pytest.raises(ValueError):
        await case.hub.publish("", {})
    with pytest.raises(TypeError):
        case.hub.subscribe("conv:1")  # a single string is not a list of topics


async def test_presence_is_shared_and_changes_are_published(case):
    events = case.hub.subscribe([PRESENCE_TOPIC])
    await case.hub.set_presence("agent", "7", "online", ttl_seconds=10)
    assert await case.peer.get_presence("agent") == {"7": "online"}
    assert await next_event(events) == (PRESENCE_TOPIC, {"type": "presence", "kind": "agent", "id": "7",
                                                         "state": "online"})

    await case.hub.set_presence("agent", "7", "online", ttl_seconds=10)  # a heartbeat: no event
    await case.peer.set_presence("agent", "8", "away", ttl_seconds=10)
    assert await next_event(events) == (PRESENCE_TOPIC, {"type": "presence", "kind": "agent", "id": "8",
                                                         "state": "away"})
    assert await case.hub.get_presence("agent") == {"7": "online", "8": "away"}
    assert await case.hub.get_presence("customer") == {}

    await case.hub.set_presence("agent", "7", "offline", ttl_seconds=10)
    assert (await next_event(events))[1] == {"type": "presence", "kind": "agent", "id": "7", "state": "offline"}
    await case.peer.clear_presence("agent", "8")
    assert (await next_event(events))[1]["state"] == "offline"
    await case.hub.clear_presence("agent", "8")  # already gone: no second event
    assert await case.peer.get_presence("agent") == {}
    await case.hub.publish(PRESENCE_TOPIC, {"type": "sentinel"})
    assert (await next_event(events))[1] == {"type": "sentinel"}


async def test_presence_expires_on_its_own_and_the_expiry_is_announced_once(case):
    events = case.hub.subscribe([PRESENCE_TOPIC])
    await case.hub.set_presence("agent", "7", "online", ttl_seconds=TTL)
    await case.hub.set_presence("agent", "8", "online", ttl_seconds=30)
    assert (await next_event(events))[1]["id"] == "7"
    assert (await next_event(events))[1]["id"] == "8"

    await case.elapse(TTL + 0.1)
    # Both nodes sweep; exactly one of them removes (and announces) the expired entry.
    assert await case.peer.get_presence("agent") == {"8": "online"}
    assert await case.hub.get_presence("agent") == {"8": "online"}
    assert await next_event(events) == (PRESENCE_TOPIC, {"type": "presence", "kind": "agent", "id": "7",
                                                         "state": "offline", "reason": "expired"})
    for node in {case.hub, case.peer}:
        await node.publish(PRESENCE_TOPIC, {"type": "sentinel"})
    for _ in {case.hub, case.peer}:
        assert (await next_event(events))[1] == {"type": "sentinel"}
    assert events.qsize() == 0

    # Coming back after expiry is a change again.
    await case.peer.set_presence("agent", "7", "online", ttl_seconds=TTL)
    assert (await next_event(events))[1] == {"type": "presence", "kind": "agent", "id": "7", "state": "online"}


async def test_a_lease_is_kept_alive_by_the_heartbeat_and_cleared_by_its_last_release(case):
    events = case.hub.subscribe([PRESENCE_TOPIC])
    first = await case.hub.hold_presence("agent", "7")  # default ttl: TTL
    for _ in range(4):  # well past the ttl
        await case.elapse(TTL / 3)
        await case.hub.heartbeat()
    assert await case.peer.get_presence("agent") == {"7": "online"}

    second = await case.hub.hold_presence("agent", "7", "away")  # a second tab
    assert await case.peer.get_presence("agent") == {"7": "away"}
    await second.release()
    assert await case.peer.get_presence("agent") == {"7": "online"}
    await first.update("away")
    assert await case.peer.get_presence("agent") == {"7": "away"}
    await first.release()
    assert await case.peer.get_presence("agent") == {}
    states = [event["state"] for _, event in await take(events, 5)]
    assert states == ["online", "away", "online", "away", "offline"]
    with pytest.raises(ValueError):
        await case.hub.hold_presence("agent", "7", ttl_seconds=case.hub.heartbeat_seconds)


async def test_close_ends_subscriptions_and_clears_this_nodes_presence(case):
    node = case.make()
    await node.start()
    sub = node.subscribe(["conv:1"])
    waiter = asyncio.create_task(sub.get())
    # Another node where the backend has one; the in-process hub is its own observer.
    observer = case.hub if case.backend == "redis" else node
    watcher = case.hub.subscribe([PRESENCE_TOPIC]) if case.backend == "redis" else None
    await node.hold_presence("agent", "42")
    assert await observer.get_presence("agent") == {"42": "online"}

    await node.close()
    with pytest.raises(SubscriptionClosed) as closed:
        await asyncio.wait_for(waiter, 1)
    assert closed.value.reason == HUB_CLOSED
    assert node.closed and node._heartbeat_task is None
    late = node.subscribe(["conv:1"])
    assert late.closed and late.close_reason == HUB_CLOSED
    await node.publish("conv:1", {"n": 1})  # after close: ignored, no error
    if case.backend == "memory":
        assert await node.get_presence("agent") == {}
    else:  # the goodbye was flushed to the other nodes before the connections closed
        assert await observer.get_presence("agent") == {}
        assert [event["state"] for _, event in await take(watcher, 2)] == ["online", "offline"]
    await node.close()  # idempotent
