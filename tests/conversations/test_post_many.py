"""post_many, the chat's group commit: several conversations' messages in one transaction, each with the
same outcome it would have had alone (seq, resend, closed, empty text, reopening, inbox row), and one
draft's error leaving the others stored."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.conversations.helpers import change, load, make_agent, make_conversation, make_customer, post
from zaima.conversations import conversations as convs
from zaima.conversations.conversations import ConversationClosed
from zaima.conversations.messages import ConversationBusy, Draft, Posted, post_many
from zaima.conversations.senders import Sender
from zaima.core.errors import ValidationFailed
from zaima.db import unit_of_work
from zaima.models import Conversation, Message


async def _post_many(ctx, drafts):
    async def run(session):
        return await post_many(session, ctx.clock, ctx.settings, drafts)

    return await ctx.transact(run)


async def _stored(ctx, conversation_id: int) -> list[tuple[int, str, str | None]]:
    async with unit_of_work(ctx.sessions) as session:
        rows = await session.scalars(select(Message).where(Message.conversation_id == conversation_id)
                                     .order_by(Message.seq))
        return [(m.seq, m.body, m.client_msg_id) for m in rows]


async def _customers_with_conversations(ctx, n: int):
    pairs = []
    for _ in range(n):
        customer = await make_customer(ctx)
        pairs.append((customer, await make_conversation(ctx, customer)))
    return pairs


async def test_each_conversation_gets_its_next_seq_and_the_events_a_single_post_would_send(ctx):
    pairs = await _customers_with_conversations(ctx, 3)
    first_customer, first = pairs[0]
    await post(ctx, first.id, Sender.customer(first_customer), "早先的一条")

    loaded, results = await _post_many(ctx, [Draft(c.id, Sender.customer(cu), f"你好 {i}", f"m-{i}")
                                             for i, (cu, c) in enumerate(pairs)])

    assert all(isinstance(r, Posted) and not r.duplicate for r in results)
    assert [r.message.seq for r in results] == [2, 1, 1]
    for i, (result, (_, conversation)) in enumerate(zip(results, pairs, strict=True)):
        assert result.message.id is not None
        assert result.status_before == "bot"
        topics = [e.topic for e in result.events]
        assert topics == [f"conv:{conversation.id}", f"conv:{conversation.id}:staff", "inbox"]
        public = result.events[0].payload["message"]
        assert (public["seq"], public["body"], public["client_msg_id"]) == (result.message.seq, f"你好 {i}", f"m-{i}")
        item = result.events[2].payload["item"]
        assert item["last_message"]["text"] == f"你好 {i}"
        assert item["unread"] == (2 if i == 0 else 1)  # the customer's messages after the agents' marker
        assert loaded[conversation.id].last_seq == result.message.seq
    assert await _stored(ctx, first.id) == [(1, "早先的一条", None), (2, "你好 0", "m-0")]
    ids = [r.message.id for r in results]
    async with unit_of_work(ctx.sessions) as session:
        by_id = {m.id: m for m in await session.scalars(select(Message).where(Message.id.in_(ids)))}
    assert [(by_id[i].conversation_id, by_id[i].body) for i in ids] == [(c.id, f"你好 {n}")
                                                                        for n, (_, c) in enumerate(pairs)]


async def test_one_bad_draft_is_reported_and_the_others_are_stored(ctx):
    pairs = await _customers_with_conversations(ctx, 4)
    (c0, v0), (c1, v1), (c2, v2), (c3, v3) = pairs
    await change(ctx, v2.id, lambda s, c: convs.set_status(s, ctx.clock, c, "closed"))
    await post(ctx, v3.id, Sender.customer(c3), "第一次", client_msg_id="same-id")

    _, results = await _post_many(ctx, [
        Draft(v0.id, Sender.customer(c0), "   ", "a"),  # empty
        Draft(v1.id, Sender.customer(c1), "有效的消息", "b"),
        Draft(v2.id, Sender.customer(c2), "关了还能写吗", "c"),  # closed
        Draft(v3.id, Sender.customer(c3), "重发", "same-id"),  # a resend
    ])

    assert isinstance(results[0], ValidationFailed)
    assert isinstance(results[1], Posted) and results[1].message.seq == 1
    assert isinstance(results[2], ConversationClosed)
    assert isinstance(results[3], Posted) and results[3].duplicate and results[3].events == []
    assert results[3].message.body == "第一次"
    assert await _stored(ctx, v0.id) == []
    assert await _stored(ctx, v1.id) == [(1, "有效的消息", "b")]
    assert await _stored(ctx, v2.id) == []
    assert await _stored(ctx, v3.id) == [(1, "第一次", "same-id")]


async def test_a_customer_message_reopens_a_resolved_ticket_with_the_conversation_events(ctx):
    agent = await make_agent(ctx)
    (customer, conversation), (other_customer, other) = await _customers_with_conversations(ctx, 2)
    await change(ctx, conversation.id, lambda s, c: convs.assign(s, ctx.clock, c, agent))
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, ctx.clock, c, "resolved"))

    loaded, results = await _post_many(ctx, [Draft(conversation.id, Sender.customer(customer), "又坏了", "r1"),
                                             Draft(other.id, Sender.customer(other_customer), "在吗", "r2")])

    reopened = results[0]
    assert reopened.status_before == "resolved" and loaded[conversation.id].status == "open"
    assert (await load(ctx, conversation.id)).status == "open"
    conversation_frames = [e for e in reopened.events if e.payload["type"] == "conversation"]
    assert {e.topic for e in conversation_frames} == {f"conv:{conversation.id}", f"conv:{conversation.id}:staff"}
    assert all(e.payload["conversation"]["status"] == "open" for e in conversation_frames)
    assert [e.topic for e in results[1].events][-1] == "inbox"


async def test_a_conversation_twice_in_one_batch_is_refused(ctx):
    (customer, conversation), = await _customers_with_conversations(ctx, 1)
    sender = Sender.customer(customer)
    with pytest.raises(ValueError):
        await _post_many(ctx, [Draft(conversation.id, sender, "一", "x1"), Draft(conversation.id, sender, "二", "x2")])
    assert await _stored(ctx, conversation.id) == []


async def test_a_conversation_another_transaction_holds_is_left_for_a_single_post(ctx, db_url):
    """PostgreSQL: the batch skips a conversation locked elsewhere (the writer posts it on its own, where
    waiting only delays that one customer) instead of making every message of the batch wait."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: nothing else can hold a conversation meanwhile")
    (c0, held), (c1, free) = await _customers_with_conversations(ctx, 2)
    async with unit_of_work(ctx.sessions) as holder:
        await holder.execute(select(Conversation.id).where(Conversation.id == held.id).with_for_update())
        _, results = await _post_many(ctx, [Draft(held.id, Sender.customer(c0), "被锁住", "h1"),
                                            Draft(free.id, Sender.customer(c1), "没锁", "f1")])
    assert isinstance(results[0], ConversationBusy)
    assert isinstance(results[1], Posted) and results[1].message.seq == 1
    assert await _stored(ctx, held.id) == [] and await _stored(ctx, free.id) == [(1, "没锁", "f1")]
