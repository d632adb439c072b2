"""Queue order, routing by capacity and skill, the backlog in order, VIP and complaint lanes, agents leaving."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from tests.service.helpers import (
    ALL_DAY,
    conv,
    go_online,
    make_agent,
    service_pass,
    set_hours,
    set_status,
    ticket,
)
from tests.store.helpers import make_order, make_product
from zaima.db import unit_of_work
from zaima.models import Message, Order
from zaima.service import queue, routing
from zaima.web.agent_socket import agent_reply, release_conversations


async def _messages(ctx, conversation_id: int) -> list[Message]:
    from zaima.conversations.messages import list_messages

    async with unit_of_work(ctx.sessions) as session:
        return await list_messages(session, await conv(ctx, conversation_id), include_internal=True)


async def test_capacity_is_respected_and_the_backlog_goes_first_in_first_out(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    agent = await make_agent(ctx, "wang", capacity=2)
    waiting = []
    for _ in range(4):
        waiting.append(await ticket(ctx))
        clock.advance(seconds=10)
    await service_pass(ctx)  # nobody online: nothing assigned
    assert [(await conv(ctx, c.id)).status for c in waiting] == ["queued"] * 4

    await go_online(ctx, agent)
    await service_pass(ctx)
    states = [await conv(ctx, c.id) for c in waiting]
    assert [(c.status, c.assignee_id) for c in states] == [("open", agent.id), ("open", agent.id),
                                                           ("queued", None), ("queued", None)]
    # The customer is told who took the conversation.
    assert any(m.sender_kind == "system" and "wang" in m.body for m in await _messages(ctx, waiting[0].id))

    await service_pass(ctx)  # a second pass with the agent full assigns nothing more
    assert (await conv(ctx, waiting[2].id)).status == "queued"

    clock.advance(minutes=3)
    await set_status(ctx, waiting[1].id, "resolved")  # a slot frees: the oldest waiting takes it
    await service_pass(ctx)
    assert (await conv(ctx, waiting[2].id)).assignee_id == agent.id
    assert (await conv(ctx, waiting[3].id)).status == "queued"


async def test_pending_customer_frees_the_slot(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    agent = await make_agent(ctx, "li", capacity=1)
    await go_online(ctx, agent)
    first, second = await ticket(ctx), await ticket(ctx)
    await service_pass(ctx)
    assert (await conv(ctx, second.id)).status == "queued"
    await agent_reply(ctx, agent, first.id, "请提供一下截图", False, None)
    await set_status(ctx, first.id, "pending_customer")
    await service_pass(ctx)
    assert (await conv(ctx, second.id)).assignee_id == agent.id


async def test_a_complaint_overtakes_a_normal_ticket(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    normal = await ticket(ctx)
    clock.advance(minutes=5)
    complaint = await ticket(ctx, priority="high")
    async with unit_of_work(ctx.sessions) as session:
        snap = await queue.snapshot(session, set(), clock.now())
    assert snap.queued == [complaint.id, normal.id]

    agent = await make_agent(ctx, "zhao", capacity=1)
    await go_online(ctx, agent)
    await service_pass(ctx)
    assert (await conv(ctx, complaint.id)).assignee_id == agent.id
    assert (await conv(ctx, normal.id)).status == "queued"


async def test_a_vip_overtakes_a_normal_ticket(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    product = await make_product(ctx, price_fen=60_000)  # ¥600 spent: above the default ¥500 VIP line
    big = await make_order(ctx, product, contact="big@example.com")
    small_product = await make_product(ctx, sku="card-2", price_fen=1_000)
    small = await make_order(ctx, small_product, contact="small@example.com")
    async with unit_of_work(ctx.sessions) as session:
        await session.execute(update(Order).values(status="delivered", paid_at=clock.now()))
    normal = await ticket(ctx, order=small)
    clock.advance(minutes=5)
    vip = await ticket(ctx, order=big)
    assert (await conv(ctx, vip.id)).vip and not (await conv(ctx, normal.id)).vip
    agent = await make_agent(ctx, "qian", capacity=1)
    await go_online(ctx, agent)
    await service_pass(ctx)
    assert (await conv(ctx, vip.id)).assignee_id == agent.id
    assert (await conv(ctx, normal.id)).status == "queued"


async def test_least_loaded_first_then_fair(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    a = await make_agent(ctx, "a", capacity=5)
    b = await make_agent(ctx, "b", capacity=5)
    await go_online(ctx, a)
    await go_online(ctx, b)
    tickets_ = [await ticket(ctx) for _ in range(4)]
    await service_pass(ctx)
    owners = [(await conv(ctx, t.id)).assignee_id for t in tickets_]
    assert sorted(owners) == sorted([a.id, a.id, b.id, b.id])
    assert owners[0] != owners[1]  # alternating, not one agent filled first


async def test_skills_route_to_the_matching_agent_and_fall_back_after_a_wait(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    recharge_product = await make_product(ctx, sku="genshin", kind="recharge")
    order = await make_order(ctx, recharge_product, inputs={"uid": "123456789"})
    keys_only = await make_agent(ctx, "keys", capacity=5, skills=["card_key"])
    await go_online(ctx, keys_only)
    recharge = await ticket(ctx, order=order)
    assert (await conv(ctx, recharge.id)).skill == "recharge"
    await service_pass(ctx)
    assert (await conv(ctx, recharge.id)).status == "queued"  # nobody online handles recharges
    clock.advance(minutes=5)
    await service_pass(ctx)  # …but nobody waits forever for a skill
    assert (await conv(ctx, recharge.id)).assignee_id == keys_only.id


async def test_an_agent_going_away_returns_unanswered_conversations_to_the_front(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    agent = await make_agent(ctx, "sun", capacity=2)
    lease = await go_online(ctx, agent)
    answered, unanswered = await ticket(ctx), await ticket(ctx)
    await service_pass(ctx)
    await agent_reply(ctx, agent, answered.id, "已经为你补发", False, None)
    clock.advance(minutes=10)
    newcomer = await ticket(ctx)
    await lease.release()
    await release_conversations(ctx, agent.id)  # the agent chose "offline" in the console

    back = await conv(ctx, unanswered.id)
    assert (back.status, back.assignee_id, back.queue_front) == ("queued", None, True)
    assert (await conv(ctx, answered.id)).assignee_id == agent.id  # answered: stays with its agent
    async with unit_of_work(ctx.sessions) as session:
        snap = await queue.snapshot(session, set(), clock.now())
    assert snap.queued == [unanswered.id, newcomer.id]  # returned to the front, ahead of the newcomer


async def test_a_dropped_connection_releases_after_the_grace_period(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    agent = await make_agent(ctx, "zhou", capacity=2)
    lease = await go_online(ctx, agent)
    waiting = await ticket(ctx)
    await service_pass(ctx)
    await lease.release()  # the tab closed: no choice was made
    await service_pass(ctx)
    assert (await conv(ctx, waiting.id)).assignee_id == agent.id  # a reload must not cost the conversation
    clock.advance(seconds=routing.ABSENCE_GRACE.total_seconds() - 1)
    await service_pass(ctx)
    assert (await conv(ctx, waiting.id)).assignee_id == agent.id
    clock.advance(seconds=2)
    await service_pass(ctx)
    assert (await conv(ctx, waiting.id)).status == "queued"


async def test_position_and_expected_wait(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    first, second, third = await ticket(ctx), await ticket(ctx), await ticket(ctx)
    async with unit_of_work(ctx.sessions) as session:
        assert (await queue.queue_status(session, ctx, await session.get(type(first), first.id)))["position"] == 1
        view = await queue.queue_status(session, ctx, await session.get(type(second), second.id))
    assert view["position"] == 2 and view["waiting"] == 3
    assert view["expected_wait_seconds"] is None and view["agents_online"] == 0  # no honest number yet
    assert view["reply_by"] is not None  # …but a promise

    agent = await make_agent(ctx, "wu", capacity=1)
    await go_online(ctx, agent)
    await service_pass(ctx)  # `first` is assigned; `second` now waits for that slot
    async with unit_of_work(ctx.sessions) as session:
        view2 = await queue.queue_status(session, ctx, await session.get(type(second), second.id))
        view3 = await queue.queue_status(session, ctx, await session.get(type(third), third.id))
    assert view2["position"] == 1 and view3["position"] == 2
    handle = queue.DEFAULT_HANDLE.total_seconds()
    assert view2["expected_wait_seconds"] == handle
    assert view3["expected_wait_seconds"] == 2 * handle
    clock.advance(minutes=2)
    async with unit_of_work(ctx.sessions) as session:
        later = await queue.queue_status(session, ctx, await session.get(type(second), second.id))
    assert later["expected_wait_seconds"] == handle - 120  # the slot is two minutes closer to freeing


async def test_handling_time_is_learned_from_recent_tickets(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    agent = await make_agent(ctx, "zheng", capacity=5)
    await go_online(ctx, agent)
    done = [await ticket(ctx) for _ in range(3)]
    await service_pass(ctx)
    clock.advance(minutes=4)
    for t in done:
        await set_status(ctx, t.id, "resolved")
    async with unit_of_work(ctx.sessions) as session:
        assert await queue.mean_handling_time(session, clock.now()) == timedelta(minutes=4)


async def test_no_wait_is_promised_past_closing_time(ctx, clock):
    from tests.service.helpers import local

    await set_hours(ctx, {"timezone": "Asia/Shanghai", "weekly": {d: [["09:00", "18:00"]] for d in
                                                                 ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}})
    agent = await make_agent(ctx, "late", capacity=1)
    await go_online(ctx, agent)
    clock.set(local(2026, 11, 26, 17, 50))
    await ticket(ctx)
    await service_pass(ctx)  # the agent is busy with the first one
    second, third = await ticket(ctx), await ticket(ctx)
    async with unit_of_work(ctx.sessions) as session:
        near = await queue.queue_status(session, ctx, await session.get(type(second), second.id))
        far = await queue.queue_status(session, ctx, await session.get(type(third), third.id))
    assert near["expected_wait_seconds"] == queue.DEFAULT_HANDLE.total_seconds() and not near["closing_soon"]
    assert far["expected_wait_seconds"] is None and far["closing_soon"]  # 16 minutes would be after 18:00
    assert far["next_open_text"] == "明天 09:00"
    async with unit_of_work(ctx.sessions) as session:
        notice = await queue.handoff_notice(session, ctx, await session.get(type(third), third.id))
    assert "快结束" in notice and "明天 09:00" in notice and "马上" not in notice


async def test_admins_are_not_routed_to(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    owner = await make_agent(ctx, "owner", role="admin")
    await go_online(ctx, owner)
    waiting = await ticket(ctx)
    await service_pass(ctx)
    assert (await conv(ctx, waiting.id)).status == "queued"
    lead = await make_agent(ctx, "lead", role="supervisor")
    await go_online(ctx, lead)
    await service_pass(ctx)
    assert (await conv(ctx, waiting.id)).assignee_id == lead.id
