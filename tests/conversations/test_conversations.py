"""Conversations (= tickets): ticket numbers, opening, ownership, the status machine, assignment, labels,
priority and the agents' inbox."""

from __future__ import annotations

import pytest

from tests.conversations.helpers import change, load, make_agent, make_conversation, make_customer, post
from tests.store.helpers import make_order, make_product
from zaima.conversations import conversations as convs
from zaima.conversations.conversations import (
    ACTIVE_STATUSES,
    TRANSITIONS,
    ConversationClosed,
    ConversationNotFound,
    InvalidTransition,
    check_transition,
    parse_ticket_no,
)
from zaima.conversations.messages import mark_read
from zaima.conversations.senders import Sender
from zaima.core.errors import ValidationFailed
from zaima.db import unit_of_work
from zaima.models.conversations import CONVERSATION_STATUSES

# --- ticket numbers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("T-10001", 1), ("t10042", 42), ("10007", 7), ("Ｔ－１０００３", 3), (" T-10009 ", 9),
    ("T-10000", None), ("T-9999", None), ("X-10001", None), ("", None), (None, None), ("T-1000a", None),
])
def test_ticket_numbers_parse_as_people_type_them(text, expected):
    assert parse_ticket_no(text) == expected


async def test_a_conversation_is_found_by_its_ticket_number(ctx):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    assert conversation.ticket_no == f"T-{10000 + conversation.id}"
    async with unit_of_work(ctx.sessions) as session:
        found = await convs.get_by_ticket_no(session, conversation.ticket_no.lower())
        assert found.id == conversation.id
        with pytest.raises(ConversationNotFound):
            await convs.get_by_ticket_no(session, f"T-{10000 + conversation.id + 1}")


# --- opening and ownership ------------------------------------------------------------------------------------


async def test_opening_returns_the_latest_open_conversation_per_order(ctx, clock):
    customer = await make_customer(ctx)
    product = await make_product(ctx)
    order_a = await make_order(ctx, product)
    order_b = await make_order(ctx, product)

    async def open_(order=None):
        async with unit_of_work(ctx.sessions) as session:
            return await convs.open_conversation(session, clock, customer, order)

    plain = await open_()
    assert plain.created and plain.conversation.status == "bot" and plain.conversation.order_id is None
    assert [e.topic for e in plain.events] == ["inbox"]
    assert (await open_()).conversation.id == plain.conversation.id
    assert (await open_()).created is False
    with_a = await open_(order_a)
    assert with_a.created and with_a.conversation.order_id == order_a.id
    assert with_a.events[0].payload["item"]["order_no"] == order_a.order_no
    assert (await open_(order_a)).conversation.id == with_a.conversation.id
    with_b = await open_(order_b)
    assert len({plain.conversation.id, with_a.conversation.id, with_b.conversation.id}) == 3

    await change(ctx, with_a.conversation.id, lambda s, c: convs.set_status(s, clock, c, "resolved"))
    assert (await open_(order_a)).conversation.id == with_a.conversation.id  # resolved is not closed
    await change(ctx, with_a.conversation.id, lambda s, c: convs.set_status(s, clock, c, "closed"))
    again = await open_(order_a)
    assert again.created and again.conversation.id not in (with_a.conversation.id, with_b.conversation.id)


async def test_a_customer_cannot_get_another_customers_conversation(ctx):
    alice = await make_customer(ctx)
    mallory = await make_customer(ctx)
    conversation = await make_conversation(ctx, alice)
    async with unit_of_work(ctx.sessions) as session:
        assert (await convs.get_for_customer(session, alice.id, conversation.id)).id == conversation.id
        with pytest.raises(ConversationNotFound) as theirs:
            await convs.get_for_customer(session, mallory.id, conversation.id)
        with pytest.raises(ConversationNotFound) as missing:
            await convs.get_for_customer(session, mallory.id, conversation.id + 1000)
    # Someone else's conversation and a missing one are indistinguishable.
    assert theirs.value.to_dict() == missing.value.to_dict()
    assert theirs.value.status == 404


async def test_the_customer_history_lists_only_their_conversations_newest_first(ctx, clock):
    alice = await make_customer(ctx)
    bob = await make_customer(ctx)
    first = await make_conversation(ctx, alice)
    await change(ctx, first.id, lambda s, c: convs.set_status(s, clock, c, "closed"))
    second = await make_conversation(ctx, alice)
    await make_conversation(ctx, bob)
    async with unit_of_work(ctx.sessions) as session:
        assert [c.id for c in await convs.list_for_customer(session, alice.id)] == [second.id, first.id]


# --- status machine -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", CONVERSATION_STATUSES)
@pytest.mark.parametrize("target", CONVERSATION_STATUSES)
def test_only_listed_transitions_are_allowed(source, target):
    if target in TRANSITIONS[source]:
        check_transition(source, target)
    else:
        with pytest.raises(InvalidTransition) as err:
            check_transition(source, target)
        assert err.value.message_zh == f"会话当前状态为「{source}」，不能变为「{target}」"


def test_the_transitions_that_matter():
    assert TRANSITIONS["closed"] == set()
    assert {"queued", "open"} <= TRANSITIONS["resolved"]  # reopen
    assert "queued" in TRANSITIONS["bot"]  # 转人工
    assert "bot" not in set().union(*TRANSITIONS.values())  # never back to the bot
    with pytest.raises(ValidationFailed):
        check_transition("open", "archived")


async def test_status_changes_record_resolution_and_reopen(ctx, clock):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    for status in ("queued", "open", "pending_customer"):
        events = await change(ctx, conversation.id, lambda s, c, st=status: convs.set_status(s, clock, c, st))
        public = [e for e in events if e.topic == f"conv:{conversation.id}"]
        assert public[0].payload["conversation"]["status"] == status
        assert {e.topic for e in events} == {f"conv:{conversation.id}", f"conv:{conversation.id}:staff", "inbox"}
    clock.advance(minutes=30)
    resolved_at = clock.now()
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "resolved"))
    fresh = await load(ctx, conversation.id)
    assert (fresh.status, fresh.resolved_at) == ("resolved", resolved_at)
    assert await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "resolved")) == []
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "open"))  # reopened by an agent
    assert (await load(ctx, conversation.id)).resolved_at is None
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "closed"))
    for status in ("open", "queued", "resolved"):
        with pytest.raises(InvalidTransition):
            await change(ctx, conversation.id, lambda s, c, st=status: convs.set_status(s, clock, c, st))
    assert (await load(ctx, conversation.id)).status == "closed"


async def test_a_status_change_decided_on_a_stale_read_is_retried_against_the_new_state(ctx, clock):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "queued"))
    calls = []

    async def resolve_after_someone_closed(session, c):
        calls.append(c.status)
        if len(calls) == 1:  # another agent closes it between our read and our write
            async with unit_of_work(ctx.sessions) as other:
                other_c = await convs.get_conversation(other, conversation.id)
                await convs.set_status(other, clock, other_c, "closed")
        return await convs.set_status(session, clock, c, "resolved")

    if ctx.settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("SQLite runs one writer at a time: the interleaving cannot happen there")
    with pytest.raises(InvalidTransition):
        await change(ctx, conversation.id, resolve_after_someone_closed)
    assert calls == ["queued", "closed"]  # the first write lost the optimistic lock; the retry saw 'closed'
    assert (await load(ctx, conversation.id)).status == "closed"


# --- assignment, labels, priority -----------------------------------------------------------------------------


async def test_assigning_opens_a_queued_conversation_and_unassigning_queues_it(ctx, clock):
    customer = await make_customer(ctx)
    agent = await make_agent(ctx)
    conversation = await make_conversation(ctx, customer)
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "queued"))

    events = await change(ctx, conversation.id, lambda s, c: convs.assign(s, clock, c, agent))
    fresh = await load(ctx, conversation.id)
    assert (fresh.status, fresh.assignee_id) == ("open", agent.id)
    public = [e.payload["conversation"] for e in events if e.topic == f"conv:{conversation.id}"]
    staff = [e.payload["conversation"] for e in events if e.topic == f"conv:{conversation.id}:staff"]
    assert public[0]["status"] == "open" and "assignee_id" not in public[0]
    assert staff[0]["assignee_id"] == agent.id
    assert await change(ctx, conversation.id, lambda s, c: convs.assign(s, clock, c, agent)) == []

    await change(ctx, conversation.id, lambda s, c: convs.assign(s, clock, c, None))
    fresh = await load(ctx, conversation.id)
    assert (fresh.status, fresh.assignee_id) == ("queued", None)


async def test_assigning_a_resolved_conversation_changes_only_staff_fields(ctx, clock):
    customer = await make_customer(ctx)
    agent = await make_agent(ctx)
    conversation = await make_conversation(ctx, customer)
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "resolved"))
    events = await change(ctx, conversation.id, lambda s, c: convs.assign(s, clock, c, agent))
    assert (await load(ctx, conversation.id)).status == "resolved"
    assert f"conv:{conversation.id}" not in {e.topic for e in events}


async def test_a_closed_conversation_cannot_be_assigned(ctx, clock):
    customer = await make_customer(ctx)
    agent = await make_agent(ctx)
    conversation = await make_conversation(ctx, customer)
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "closed"))
    with pytest.raises(ConversationClosed):
        await change(ctx, conversation.id, lambda s, c: convs.assign(s, clock, c, agent))


async def test_labels_are_normalised_deduplicated_and_staff_only(ctx, clock):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    events = await change(ctx, conversation.id,
                          lambda s, c: convs.add_labels(s, clock, c, ["VIP", " 退款 ", "vip", "Ｒｅｆｕｎｄ"]))
    assert (await load(ctx, conversation.id)).labels == ["vip", "退款", "refund"]
    assert {e.topic for e in events} == {f"conv:{conversation.id}:staff", "inbox"}
    assert await change(ctx, conversation.id, lambda s, c: convs.add_labels(s, clock, c, ["vip"])) == []
    await change(ctx, conversation.id, lambda s, c: convs.remove_labels(s, clock, c, ["VIP", "unknown"]))
    assert (await load(ctx, conversation.id)).labels == ["退款", "refund"]
    with pytest.raises(ValidationFailed):
        await change(ctx, conversation.id, lambda s, c: convs.add_labels(s, clock, c, ["x" * 33]))
    with pytest.raises(ValidationFailed):
        await change(ctx, conversation.id, lambda s, c: convs.add_labels(s, clock, c, [f"l{i}" for i in range(19)]))
    assert (await load(ctx, conversation.id)).labels == ["退款", "refund"]


async def test_priority_is_validated_and_staff_only(ctx, clock):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    events = await change(ctx, conversation.id, lambda s, c: convs.set_priority(s, clock, c, "urgent"))
    assert (await load(ctx, conversation.id)).priority == "urgent"
    assert f"conv:{conversation.id}" not in {e.topic for e in events}
    assert [e.payload["conversation"]["priority"] for e in events if e.topic.endswith(":staff")] == ["urgent"]
    with pytest.raises(ValidationFailed):
        await change(ctx, conversation.id, lambda s, c: convs.set_priority(s, clock, c, "asap"))


# --- inbox ----------------------------------------------------------------------------------------------------


async def test_inbox_filters_order_previews_and_unread_counts(ctx, clock):
    wang = await make_agent(ctx, "wang", "小王")
    li = await make_agent(ctx, "li", "小李")
    product = await make_product(ctx)
    order = await make_order(ctx, product)
    customers = [await make_customer(ctx) for _ in range(4)]
    c_wang = await make_conversation(ctx, customers[0], order)
    c_li = await make_conversation(ctx, customers[1])
    c_queued = await make_conversation(ctx, customers[2])
    c_closed = await make_conversation(ctx, customers[3])
    await change(ctx, c_wang.id, lambda s, c: convs.assign(s, clock, c, wang))
    await change(ctx, c_li.id, lambda s, c: convs.assign(s, clock, c, li))
    await change(ctx, c_queued.id, lambda s, c: convs.set_status(s, clock, c, "queued"))
    await change(ctx, c_closed.id, lambda s, c: convs.set_status(s, clock, c, "closed"))

    # Activity, oldest to newest: li's, queued, wang's.
    clock.advance(minutes=1)
    await post(ctx, c_li.id, Sender.customer(customers[1]), "怎么用")
    clock.advance(minutes=1)
    await post(ctx, c_queued.id, Sender.customer(customers[2]), "转人工")
    clock.advance(minutes=1)
    await post(ctx, c_wang.id, Sender.agent(wang), "内部：先查供应商", internal=True)  # seq 1
    await post(ctx, c_wang.id, Sender.customer(customers[0]), "卡密提示已使用")  # seq 2
    await post(ctx, c_wang.id, Sender.customer(customers[0]), "请尽快处理，谢谢" * 20)  # seq 3
    clock.advance(minutes=1)
    await post(ctx, c_li.id, Sender.agent(li), "内部：不算活动", internal=True)  # notes do not reorder the inbox

    async def inbox(**kwargs):
        async with unit_of_work(ctx.sessions) as session:
            return await convs.list_inbox(session, **kwargs)

    everything = await inbox()
    assert [i.conversation.id for i in everything] == [c_wang.id, c_queued.id, c_li.id, c_closed.id]
    assert [i.conversation.id for i in await inbox(status=ACTIVE_STATUSES)] == [c_wang.id, c_queued.id, c_li.id]
    assert [i.conversation.id for i in await inbox(view="mine", staff_id=wang.id)] == [c_wang.id]
    assert [i.conversation.id for i in await inbox(view="mine", staff_id=li.id)] == [c_li.id]
    assert [i.conversation.id for i in await inbox(view="unassigned")] == [c_queued.id, c_closed.id]
    assert [i.conversation.id for i in await inbox(view="unassigned", status="queued")] == [c_queued.id]
    assert [i.conversation.id for i in await inbox(status=["open"])] == [c_wang.id, c_li.id]
    assert [i.conversation.id for i in await inbox(limit=2, offset=1)] == [c_queued.id, c_li.id]

    top = everything[0].to_dict()
    assert top["order_no"] == order.order_no and top["assignee_id"] == wang.id
    assert top["unread"] == 2  # the customer's two messages after the agents' marker (seq 1, the note)
    assert top["last_message"]["seq"] == 3
    assert top["last_message"]["text"].startswith("请尽快处理") and len(top["last_message"]["text"]) == 80
    assert top["customer"]["display_name"] == customers[0].display_name
    assert everything[1].unread == 1
    assert everything[3].to_dict()["last_message"] is None and everything[3].unread == 0

    # An internal note is never the preview, and an agent writing anything has read the conversation.
    await post(ctx, c_wang.id, Sender.agent(li), "内部：已联系供应商", internal=True)  # seq 4
    mine = (await inbox(view="mine", staff_id=wang.id))[0]
    assert (mine.last_message.seq, mine.unread) == (3, 0)
    await post(ctx, c_queued.id, Sender.customer(customers[2]), "有人吗")
    await change(ctx, c_queued.id, lambda s, c: mark_read(s, c, "agent", 1))
    assert (await inbox(view="unassigned", status="queued"))[0].unread == 1

    # A visitor who opened the chat and wrote nothing is left out until their first message.
    silent = await make_conversation(ctx, customers[0])
    assert silent.id not in [i.conversation.id for i in await inbox()]
    await post(ctx, silent.id, Sender.customer(customers[0]), "你好")
    assert (await inbox())[0].conversation.id == silent.id

    with pytest.raises(ValidationFailed):
        await inbox(view="mine")
    with pytest.raises(ValidationFailed):
        await inbox(view="everyone")
    with pytest.raises(ValidationFailed):
        await inbox(status="archived")
