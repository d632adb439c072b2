"""SLA due times in service hours (lunch break, overnight, holidays, 调休), pause, warnings, breaches, hits."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from tests.service.helpers import (
    ALL_DAY,
    conv,
    local,
    make_agent,
    service_pass,
    set_hours,
    set_status,
    ticket,
)
from zaima.db import unit_of_work
from zaima.models import SlaEvent
from zaima.service import sla
from zaima.web.agent_socket import agent_reply
from zaima.web.console import check_may_assign

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")


def hours(periods, days=("mon", "tue", "wed", "thu", "fri", "sat", "sun"), **extra) -> dict:
    return {"timezone": "Asia/Shanghai", "weekly": {d: periods for d in days}, **extra}


async def _events(ctx, conversation_id: int) -> list[tuple[str, str]]:
    async with unit_of_work(ctx.sessions) as session:
        rows = await session.scalars(select(SlaEvent).where(SlaEvent.conversation_id == conversation_id)
                                     .order_by(SlaEvent.id))
        return [(e.metric, e.kind) for e in rows]


async def test_first_response_due_skips_the_lunch_break(ctx, clock):
    await set_hours(ctx, hours([["09:00", "12:00"], ["13:30", "18:00"]]))
    clock.set(local(2026, 11, 26, 11, 50))  # normal priority: 30 minutes to first response
    t = await ticket(ctx)
    assert (await conv(ctx, t.id)).first_response_due_at == local(2026, 11, 26, 13, 50)


async def test_first_response_due_runs_overnight_past_midnight(ctx, clock):
    await set_hours(ctx, hours([["18:00", "02:00"]]))
    clock.set(local(2026, 11, 26, 1, 50))  # 10 minutes left tonight, the other 20 tomorrow evening
    t = await ticket(ctx)
    assert (await conv(ctx, t.id)).first_response_due_at == local(2026, 11, 26, 18, 20)
    clock.set(local(2026, 11, 26, 23, 45))  # a period past midnight counts as one stretch
    t2 = await ticket(ctx)
    assert (await conv(ctx, t2.id)).first_response_due_at == local(2026, 11, 27, 0, 15)


async def test_first_response_due_skips_the_national_day_holiday(ctx, clock):
    holidays = [f"2026-10-0{d}" for d in range(1, 8)]
    await set_hours(ctx, hours([["09:00", "23:00"]], holidays=holidays))
    clock.set(local(2026, 9, 30, 22, 50))
    t = await ticket(ctx)
    assert (await conv(ctx, t.id)).first_response_due_at == local(2026, 10, 8, 9, 20)


async def test_a_tiaoxiu_working_saturday_counts(ctx, clock):
    await set_hours(ctx, hours([["09:00", "18:00"]], days=WEEKDAYS, workdays={"2026-10-10": "mon"}))
    clock.set(local(2026, 10, 9, 17, 50))  # Friday; Saturday the 10th is worked like a Monday
    t = await ticket(ctx)
    assert (await conv(ctx, t.id)).first_response_due_at == local(2026, 10, 10, 9, 20)
    clock.set(local(2026, 10, 16, 17, 50))  # the next Friday: no 调休, so Monday
    t2 = await ticket(ctx)
    assert (await conv(ctx, t2.id)).first_response_due_at == local(2026, 10, 19, 9, 20)


async def test_around_the_clock_sla_ignores_service_hours(ctx, clock):
    await set_hours(ctx, hours([["09:00", "18:00"]]))
    async with unit_of_work(ctx.sessions) as session:
        from zaima.service.policy import save_sla

        await save_sla(session, {"business_hours": False})
    clock.set(local(2026, 11, 26, 23, 0))
    t = await ticket(ctx)
    assert (await conv(ctx, t.id)).first_response_due_at == local(2026, 11, 26, 23, 30)


async def test_resolution_pauses_while_pending_customer(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    agent = await make_agent(ctx, "wang")
    clock.set(local(2026, 11, 26, 10, 0))
    t = await ticket(ctx)
    due = (await conv(ctx, t.id)).resolution_due_at
    assert due == local(2026, 11, 27, 10, 0)  # normal: 24 h
    await agent_reply(ctx, agent, t.id, "请发一下截图", False, None)
    await set_status(ctx, t.id, "pending_customer")
    clock.advance(hours=5)
    await service_pass(ctx)
    assert (await conv(ctx, t.id)).sla_paused_at is not None
    await set_status(ctx, t.id, "open")  # the customer answered after 5 hours
    resumed = await conv(ctx, t.id)
    assert resumed.resolution_due_at == due + timedelta(hours=5) and resumed.sla_paused_at is None


async def test_warning_at_80_percent_then_breach_escalates(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    agent = await make_agent(ctx, "li")
    clock.set(local(2026, 11, 26, 10, 0))
    t = await ticket(ctx)  # first response due 10:30

    async def check():
        async with unit_of_work(ctx.sessions) as session:
            return await sla.check(session, await sla.load_config(session), clock.now())

    clock.set(local(2026, 11, 26, 10, 23))
    assert await check() == []  # 77 %: nothing yet
    clock.set(local(2026, 11, 26, 10, 24))
    alerts = await check()
    assert [(a.metric, a.kind) for a in alerts] == [("first_response", "warning")]
    assert await check() == []  # warned once
    clock.set(local(2026, 11, 26, 10, 30))
    assert await check() == []  # due is due, not late
    clock.set(local(2026, 11, 26, 10, 30, 1))
    alerts = await check()
    assert [(a.metric, a.kind) for a in alerts] == [("first_response", "breach")]
    breached = await conv(ctx, t.id)
    assert breached.priority == "high" and breached.sla_breached == ["first_response"]
    check_may_assign(agent, 999, agent.id, breached=True)  # any agent may now take it over
    assert await check() == []

    await agent_reply(ctx, agent, t.id, "抱歉久等了", False, None)
    assert await _events(ctx, t.id) == [("first_response", "warning"), ("first_response", "breach"),
                                        ("first_response", "met")]
    async with unit_of_work(ctx.sessions) as session:
        met = await session.scalar(select(SlaEvent).where(SlaEvent.kind == "met"))
    assert met.late is True


async def test_service_pass_announces_breaches_to_the_console(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    clock.set(local(2026, 11, 26, 10, 0))
    subscription = ctx.hub.subscribe(["inbox"])
    t = await ticket(ctx)
    clock.set(local(2026, 11, 26, 10, 31))
    await service_pass(ctx)
    seen = []
    while True:
        try:
            _, event = await asyncio.wait_for(subscription.get(), 0.2)
        except TimeoutError:
            break
        seen.append(event)
    sla_events = [(e["kind"], e["ticket_no"]) for e in seen if e.get("type") == "sla"]
    assert sla_events == [("breach", f"T-{10000 + t.id}")]  # past due at once: no separate warning
    rows = [e["item"] for e in seen if e.get("type") == "inbox" and e["conversation_id"] == t.id]
    assert rows and rows[-1]["priority"] == "high"  # consoles learn the raised priority
    subscription.close()


async def test_next_response_target_runs_from_the_customers_message(ctx, clock):
    from zaima.conversations.senders import Sender
    from zaima.models import Customer

    await set_hours(ctx, ALL_DAY)
    agent = await make_agent(ctx, "zhao")
    clock.set(local(2026, 11, 26, 10, 0))
    t = await ticket(ctx)
    await agent_reply(ctx, agent, t.id, "你好", False, None)
    clock.advance(minutes=3)
    async with unit_of_work(ctx.sessions) as session:
        customer = await session.get(Customer, t.customer_id)

    async def customer_says(session):
        from zaima.conversations.conversations import get_conversation
        from zaima.conversations.messages import post_message
        from zaima.service import tickets

        c = await get_conversation(session, t.id)
        posted = await post_message(session, ctx.clock, ctx.settings, c, Sender.customer(customer), "还没到账")
        await tickets.after_post(session, ctx, c, posted)

    await ctx.transact(customer_says)
    assert (await conv(ctx, t.id)).next_response_due_at == local(2026, 11, 26, 10, 33)
    clock.advance(minutes=2)
    await agent_reply(ctx, agent, t.id, "正在查", False, None)
    assert (await conv(ctx, t.id)).next_response_due_at is None
    assert ("next_response", "met") in await _events(ctx, t.id)


async def test_resolving_meets_the_resolution_target_and_reopening_restarts_it(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    agent = await make_agent(ctx, "qian")
    clock.set(local(2026, 11, 26, 10, 0))
    t = await ticket(ctx)
    await agent_reply(ctx, agent, t.id, "已处理", False, None)
    clock.advance(hours=1)
    resolved = await set_status(ctx, t.id, "resolved")
    assert resolved.resolution_due_at is None
    assert ("resolution", "met") in await _events(ctx, t.id)
    clock.advance(hours=1)
    reopened = await set_status(ctx, t.id, "open")
    assert reopened.resolution_due_at == local(2026, 11, 26, 12, 0) + timedelta(hours=24)


async def test_a_breached_ticket_still_waiting_moves_up_a_lane(ctx, clock):
    from zaima.service import queue

    await set_hours(ctx, ALL_DAY)
    clock.set(local(2026, 11, 26, 10, 0))
    late = await ticket(ctx)  # first response due 10:30
    clock.set(local(2026, 11, 26, 10, 20))
    fresh = await ticket(ctx, priority="high")  # a complaint overtakes it
    async with unit_of_work(ctx.sessions) as session:
        assert (await queue.snapshot(session, set(), clock.now())).queued == [fresh.id, late.id]
    clock.set(local(2026, 11, 26, 10, 31))
    await service_pass(ctx)  # breached: up to the complaint lane, where it has waited longest
    async with unit_of_work(ctx.sessions) as session:
        assert (await queue.snapshot(session, set(), clock.now())).queued == [late.id, fresh.id]
    assert (await conv(ctx, late.id)).priority == "high"


async def test_back_to_the_queue_from_pending_customer_unpauses_the_resolution_target(ctx, clock):
    await set_hours(ctx, ALL_DAY)
    agent = await make_agent(ctx, "sun")
    clock.set(local(2026, 11, 26, 10, 0))
    t = await ticket(ctx)
    await agent_reply(ctx, agent, t.id, "请补充截图", False, None)
    await set_status(ctx, t.id, "pending_customer")
    clock.advance(hours=2)
    back = await set_status(ctx, t.id, "queued")
    assert back.sla_paused_at is None and back.assignee_id is None
    assert back.resolution_due_at == local(2026, 11, 27, 12, 0)  # moved by the two paused hours
    clock.set(local(2026, 11, 27, 12, 1))
    await service_pass(ctx)
    assert "resolution" in (await conv(ctx, t.id)).sla_breached  # and it is checked again


async def test_a_resolved_ticket_sent_back_to_the_queue_loses_its_old_owner(ctx, clock):
    from tests.service.helpers import go_online

    await set_hours(ctx, ALL_DAY)
    first, second = await make_agent(ctx, "first", capacity=1), await make_agent(ctx, "second", capacity=1)
    t = await ticket(ctx)
    await agent_reply(ctx, first, t.id, "好的", False, None)
    await set_status(ctx, t.id, "resolved")
    queued = await set_status(ctx, t.id, "queued")
    assert (queued.status, queued.assignee_id) == ("queued", None)
    await go_online(ctx, second)
    await service_pass(ctx)
    assert (await conv(ctx, t.id)).assignee_id == second.id


async def test_open_needs_an_owner(ctx, clock):
    import pytest

    from zaima.core.errors import Conflict

    await set_hours(ctx, ALL_DAY)
    t = await ticket(ctx)
    with pytest.raises(Conflict):
        await set_status(ctx, t.id, "open")
