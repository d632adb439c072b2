"""Messages: sequence numbers without gaps under concurrency, resends stored once, resume after a seq,
internal notes kept from customers, text rules, read markers that only move forward, and reopening."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm.attributes import set_committed_value

from tests.conversations.helpers import change, load, make_agent, make_conversation, make_customer, post
from zaima.conversations import conversations as convs
from zaima.conversations.conversations import ConversationClosed
from zaima.conversations.events import message_public_view
from zaima.conversations.messages import list_messages, mark_read, post_message
from zaima.conversations.senders import Sender
from zaima.core.errors import Forbidden, ValidationFailed
from zaima.db import unit_of_work
from zaima.models import Message


async def _messages(ctx, conversation_id: int, **kwargs) -> list[Message]:
    async with unit_of_work(ctx.sessions) as session:
        conversation = await convs.get_conversation(session, conversation_id)
        return await list_messages(session, conversation, **kwargs)


async def _count(ctx, conversation_id: int) -> int:
    async with unit_of_work(ctx.sessions) as session:
        return await session.scalar(select(func.count()).select_from(Message)
                                    .where(Message.conversation_id == conversation_id))


# --- sequence numbers -----------------------------------------------------------------------------------------


async def test_twenty_concurrent_posters_get_seqs_one_to_twenty_without_gaps(ctx):
    customer = await make_customer(ctx)
    agent = await make_agent(ctx)
    conversation = await make_conversation(ctx, customer)
    senders = [Sender.customer(customer) if i % 2 else Sender.agent(agent) for i in range(20)]

    results = await asyncio.gather(*(post(ctx, conversation.id, sender, f"消息 {i}")
                                     for i, sender in enumerate(senders)))

    assert sorted(r.message.seq for r in results) == list(range(1, 21))
    assert not any(r.duplicate for r in results)
    stored = await _messages(ctx, conversation.id)
    assert [m.seq for m in stored] == list(range(1, 21))
    assert sorted(m.body for m in stored) == sorted(f"消息 {i}" for i in range(20))
    assert (await load(ctx, conversation.id)).last_seq == 20


async def test_a_rolled_back_post_gives_its_seq_back(ctx):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    await post(ctx, conversation.id, Sender.customer(customer), "一")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with unit_of_work(ctx.sessions) as session:
            fresh = await convs.get_conversation(session, conversation.id)
            posted = await post_message(session, ctx.clock, ctx.settings, fresh, Sender.customer(customer), "二")
            assert posted.message.seq == 2
            raise Boom()

    again = await post(ctx, conversation.id, Sender.customer(customer), "二")
    assert again.message.seq == 2
    assert [m.seq for m in await _messages(ctx, conversation.id)] == [1, 2]


# --- idempotency ----------------------------------------------------------------------------------------------


async def test_a_resent_client_msg_id_returns_the_stored_message(ctx):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    first = await post(ctx, conversation.id, Sender.customer(customer), "卡密无效", client_msg_id="c-1")
    again = await post(ctx, conversation.id, Sender.customer(customer), "卡密无效", client_msg_id="c-1")

    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.message.id == first.message.id and again.message.seq == 1
    assert first.events and again.events == []
    assert await _count(ctx, conversation.id) == 1
    nxt = await post(ctx, conversation.id, Sender.customer(customer), "还在吗", client_msg_id="c-2")
    assert nxt.message.seq == 2  # the resend used no number


async def test_concurrent_resends_are_stored_once_and_leave_no_gap(ctx):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)

    results = await asyncio.gather(*(post(ctx, conversation.id, Sender.customer(customer), "在吗",
                                          client_msg_id="same-id") for _ in range(10)))

    assert sum(not r.duplicate for r in results) == 1
    assert {r.message.id for r in results} == {results[0].message.id}
    assert await _count(ctx, conversation.id) == 1
    assert (await load(ctx, conversation.id)).last_seq == 1
    later = await post(ctx, conversation.id, Sender.customer(customer), "你好")
    assert later.message.seq == 2


async def test_the_same_client_msg_id_in_another_conversation_is_another_message(ctx):
    customer = await make_customer(ctx)
    agent = await make_agent(ctx)
    one = await make_conversation(ctx, customer)
    other_customer = await make_customer(ctx)
    two = await make_conversation(ctx, other_customer)
    a = await post(ctx, one.id, Sender.agent(agent), "您好", client_msg_id="x")
    b = await post(ctx, two.id, Sender.agent(agent), "您好", client_msg_id="x")
    assert not b.duplicate and a.message.id != b.message.id


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, "中文"])
async def test_malformed_client_msg_ids_are_refused(ctx, bad):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    with pytest.raises(ValidationFailed):
        await post(ctx, conversation.id, Sender.customer(customer), "hi", client_msg_id=bad)


# --- resume after a seq ---------------------------------------------------------------------------------------


async def test_after_seq_returns_exactly_the_missing_messages(ctx):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    for i in range(1, 8):
        await post(ctx, conversation.id, Sender.customer(customer), f"m{i}")

    assert [m.seq for m in await _messages(ctx, conversation.id, after_seq=4)] == [5, 6, 7]
    assert [m.body for m in await _messages(ctx, conversation.id, after_seq=4)] == ["m5", "m6", "m7"]
    assert await _messages(ctx, conversation.id, after_seq=7) == []
    assert [m.seq for m in await _messages(ctx, conversation.id, after_seq=2, limit=3)] == [3, 4, 5]
    with pytest.raises(ValidationFailed):
        await _messages(ctx, conversation.id, after_seq=-1)


# --- internal notes -------------------------------------------------------------------------------------------


async def test_internal_notes_are_kept_from_the_customer_listing_and_public_events(ctx):
    customer = await make_customer(ctx)
    agent = await make_agent(ctx)
    conversation = await make_conversation(ctx, customer)
    await post(ctx, conversation.id, Sender.customer(customer), "充值没到账")
    note = await post(ctx, conversation.id, Sender.agent(agent), "供应商已确认，10 分钟内到账", internal=True)
    reply = await post(ctx, conversation.id, Sender.agent(agent), "已为您核实，请稍等", client_msg_id=f"agent-{agent.id}-1")

    assert note.message.internal and note.message.seq == 2
    assert [e.topic for e in note.events] == [f"conv:{conversation.id}:staff"]
    assert note.events[0].payload["message"]["internal"] is True

    customer_view = await _messages(ctx, conversation.id)
    assert [m.seq for m in customer_view] == [1, 3]
    assert "供应商" not in " ".join(m.body for m in customer_view)
    assert [m.seq for m in await _messages(ctx, conversation.id, include_internal=True)] == [1, 2, 3]

    public = [e for e in reply.events if e.topic == f"conv:{conversation.id}"]
    staff = [e for e in reply.events if e.topic == f"conv:{conversation.id}:staff"]
    assert len(public) == 1 and len(staff) == 1
    assert "sender_id" not in public[0].payload["message"] and "internal" not in public[0].payload["message"]
    assert public[0].payload["message"]["sender_name"] == "小王"
    assert staff[0].payload["message"]["sender_id"] == str(agent.id)
    assert public[0].payload["message"]["client_msg_id"] is None  # may carry the console's own ids
    assert staff[0].payload["message"]["client_msg_id"] == f"agent-{agent.id}-1"
    with pytest.raises(ValueError):
        message_public_view(note.message)


@pytest.mark.parametrize("sender_kind", ["customer", "bot", "system"])
async def test_only_agents_write_internal_notes(ctx, sender_kind):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    sender = {"customer": Sender.customer(customer), "bot": Sender.bot(), "system": Sender.system()}[sender_kind]
    with pytest.raises(Forbidden):
        await post(ctx, conversation.id, sender, "悄悄话", internal=True)
    assert await _count(ctx, conversation.id) == 0


# --- text -----------------------------------------------------------------------------------------------------


async def test_text_is_stripped_and_keeps_newlines_and_tabs(ctx):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    posted = await post(ctx, conversation.id, Sender.customer(customer), "  第一行\r\n\t第二行  \n")
    assert posted.message.body == "第一行\n\t第二行"


async def test_a_message_over_the_limit_is_refused_with_the_limit_in_the_message(ctx):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    limit = ctx.settings.message_max_chars
    assert (await post(ctx, conversation.id, Sender.customer(customer), "好" * limit)).message.seq == 1
    with pytest.raises(ValidationFailed) as err:
        await post(ctx, conversation.id, Sender.customer(customer), "好" * (limit + 1))
    assert err.value.message_zh == f"消息不能超过 {limit} 个字（当前 {limit + 1} 个）"
    assert str(limit) in err.value.message_en


@pytest.mark.parametrize("body", ["", "   \n\t ", None])
async def test_an_empty_message_without_attachment_is_refused(ctx, body):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    with pytest.raises(ValidationFailed) as err:
        await post(ctx, conversation.id, Sender.customer(customer), body)
    assert err.value.message_zh == "消息不能为空"


@pytest.mark.parametrize("body", ["a\x00b", "bell\x07", "esc\x1b[31m", "trailing\x1f", "nel\x85"])
async def test_control_characters_are_refused(ctx, body):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    with pytest.raises(ValidationFailed) as err:
        await post(ctx, conversation.id, Sender.customer(customer), body)
    assert "控制字符" in err.value.message_zh
    assert await _count(ctx, conversation.id) == 0


# --- conversation bookkeeping ---------------------------------------------------------------------------------


async def test_first_human_reply_is_the_first_public_agent_message(ctx, clock):
    customer = await make_customer(ctx)
    agent = await make_agent(ctx)
    conversation = await make_conversation(ctx, customer)
    await post(ctx, conversation.id, Sender.customer(customer), "在吗")
    await post(ctx, conversation.id, Sender.bot(), "您好，我是智能客服")
    clock.advance(minutes=1)
    await post(ctx, conversation.id, Sender.agent(agent), "内部：先查订单", internal=True)
    assert (await load(ctx, conversation.id)).first_human_reply_at is None
    clock.advance(minutes=1)
    first_reply_at = clock.now()
    await post(ctx, conversation.id, Sender.agent(agent), "您好，我来帮您")
    clock.advance(minutes=5)
    await post(ctx, conversation.id, Sender.agent(agent), "已处理")
    fresh = await load(ctx, conversation.id)
    assert fresh.first_human_reply_at == first_reply_at
    assert fresh.last_message_at == clock.now()


async def test_an_internal_note_does_not_move_the_last_message_time(ctx, clock):
    customer = await make_customer(ctx)
    agent = await make_agent(ctx)
    conversation = await make_conversation(ctx, customer)
    await post(ctx, conversation.id, Sender.customer(customer), "在吗")
    public_at = clock.now()
    clock.advance(minutes=3)
    await post(ctx, conversation.id, Sender.agent(agent), "备注", internal=True)
    fresh = await load(ctx, conversation.id)
    assert fresh.last_message_at == public_at and fresh.updated_at == clock.now()


# --- read markers ---------------------------------------------------------------------------------------------


async def test_read_markers_only_move_forward_and_stop_at_the_last_message(ctx):
    customer = await make_customer(ctx)
    agent = await make_agent(ctx)
    conversation = await make_conversation(ctx, customer)
    for i in range(4):
        await post(ctx, conversation.id, Sender.customer(customer), f"m{i}")
    assert (await load(ctx, conversation.id)).customer_read_seq == 4  # the writer has read their own

    async def read(reader, seq):
        return await change(ctx, conversation.id, lambda s, c: mark_read(s, c, reader, seq))

    marker = await read("agent", 2)
    assert marker.seq == 2
    assert [e.payload for e in marker.events if e.topic == f"conv:{conversation.id}"] == [
        {"type": "read", "conversation_id": conversation.id, "reader": "agent", "seq": 2}]
    assert any(e.topic == "inbox" and e.payload["item"]["unread"] == 2 for e in marker.events)
    backwards = await read("agent", 1)
    assert (backwards.seq, backwards.events) == (2, [])
    assert (await read("agent", 99)).seq == 4  # capped
    assert (await read("agent", 99)).events == []
    fresh = await load(ctx, conversation.id)
    assert (fresh.agent_read_seq, fresh.customer_read_seq) == (4, 4)
    await post(ctx, conversation.id, Sender.agent(agent), "您好")
    assert (await load(ctx, conversation.id)).agent_read_seq == 5


# --- reopening and closing ------------------------------------------------------------------------------------


async def test_a_customer_message_reopens_a_resolved_conversation_to_the_queue(ctx, clock):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "queued"))
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "resolved"))
    assert (await load(ctx, conversation.id)).resolved_at is not None

    posted = await post(ctx, conversation.id, Sender.customer(customer), "还是不行")

    fresh = await load(ctx, conversation.id)
    assert (fresh.status, fresh.resolved_at) == ("queued", None)
    public = [e.payload for e in posted.events
              if e.topic == f"conv:{conversation.id}" and e.payload["type"] == "conversation"]
    assert [p["conversation"]["status"] for p in public] == ["queued"]
    assert "assignee_id" not in public[0]["conversation"] and "labels" not in public[0]["conversation"]


@pytest.mark.parametrize("waiting", ["resolved", "pending_customer"])
async def test_a_customer_message_reopens_an_assigned_conversation_to_open(ctx, clock, waiting):
    customer = await make_customer(ctx)
    agent = await make_agent(ctx)
    conversation = await make_conversation(ctx, customer)
    await change(ctx, conversation.id, lambda s, c: convs.assign(s, clock, c, agent))
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, waiting))

    await post(ctx, conversation.id, Sender.customer(customer), "我回来了")
    assert (await load(ctx, conversation.id)).status == "open"


async def test_an_agent_message_does_not_reopen(ctx, clock):
    customer = await make_customer(ctx)
    agent = await make_agent(ctx)
    conversation = await make_conversation(ctx, customer)
    await change(ctx, conversation.id, lambda s, c: convs.assign(s, clock, c, agent))
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "pending_customer"))
    await post(ctx, conversation.id, Sender.agent(agent), "请提供截图")
    assert (await load(ctx, conversation.id)).status == "pending_customer"


async def test_closed_is_final_and_the_next_customer_message_starts_a_new_conversation(ctx, clock):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    await post(ctx, conversation.id, Sender.customer(customer), "第一次")
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "closed"))

    with pytest.raises(ConversationClosed) as err:
        await post(ctx, conversation.id, Sender.customer(customer), "又有问题")
    assert err.value.message_zh == "该会话已关闭，请发起新的咨询"
    fresh = await make_conversation(ctx, customer)
    assert fresh.id != conversation.id and fresh.status == "bot"
    assert (await post(ctx, fresh.id, Sender.customer(customer), "又有问题")).message.seq == 1


async def test_a_conversation_closed_after_it_was_read_still_refuses_the_message(ctx, clock):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "closed"))
    with pytest.raises(ConversationClosed):
        async with unit_of_work(ctx.sessions) as session:
            stale = await convs.get_conversation(session, conversation.id)
            set_committed_value(stale, "status", "open")  # as loaded just before another agent closed it
            await post_message(session, clock, ctx.settings, stale, Sender.customer(customer), "迟到的消息")
    assert await _count(ctx, conversation.id) == 0


async def test_message_events_carry_seq_and_go_to_inbox(ctx, clock):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    clock.advance(seconds=timedelta(minutes=1).total_seconds())
    posted = await post(ctx, conversation.id, Sender.customer(customer), "第一条消息的预览")
    topics = [e.topic for e in posted.events]
    assert topics == [f"conv:{conversation.id}", f"conv:{conversation.id}:staff", "inbox"]
    assert posted.events[0].payload["message"]["seq"] == 1
    item = posted.events[2].payload["item"]
    assert item["last_message"]["text"] == "第一条消息的预览" and item["unread"] == 1
    assert item["ticket_no"] == f"T-{10000 + conversation.id}"


async def test_an_agents_read_receipt_racing_a_customer_message_still_counts_it_unread(ctx):
    """The customer's message holds the conversation when the agent's receipt (up to seq 3) arrives: the
    receipt waits for it, then counts it (PostgreSQL would otherwise count from a snapshot without it)."""
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    for i in range(3):
        await post(ctx, conversation.id, Sender.customer(customer), f"m{i}")
    posted = asyncio.Event()

    async def customer_writes():
        async with unit_of_work(ctx.sessions) as session:
            c = await convs.get_conversation(session, conversation.id)
            await post_message(session, ctx.clock, ctx.settings, c, Sender.customer(customer), "又一条")
            posted.set()
            await asyncio.sleep(0.3)  # still uncommitted while the agent's receipt comes in

    async def agent_reads():
        await posted.wait()
        await change(ctx, conversation.id, lambda s, c: mark_read(s, c, "agent", 3))

    await asyncio.gather(customer_writes(), agent_reads())
    fresh = await load(ctx, conversation.id)
    assert (fresh.agent_read_seq, fresh.last_seq, fresh.agent_unread) == (3, 4, 1)
