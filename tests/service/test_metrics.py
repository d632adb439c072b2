"""The service metrics follow docs/metrics.md: first response from hand-off (bot time excluded), resolution
from creation, both also in service hours; satisfaction; SLA attainment."""

from __future__ import annotations

from tests.conversations.helpers import make_conversation, make_customer
from tests.service.helpers import conv, local, make_agent, set_hours, set_status, ticket
from zaima.db import unit_of_work
from zaima.service import csat, queue
from zaima.service.calendar import load_calendar
from zaima.service.metrics import service_metrics
from zaima.web.agent_socket import agent_reply

LUNCH = {"timezone": "Asia/Shanghai", "weekly": {d: [["09:00", "12:00"], ["13:30", "18:00"]] for d in
                                                ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}


async def test_metrics_over_a_day(ctx, clock):
    await set_hours(ctx, LUNCH)
    agent = await make_agent(ctx, "wang")
    clock.set(local(2026, 11, 26, 11, 40))  # the conversation starts with the bot …
    slow = await make_conversation(ctx, await make_customer(ctx))
    clock.advance(minutes=10)  # … which hands off at 11:50: the bot's ten minutes do not count

    async def hand_off(session):
        await queue.hand_off(session, ctx, await session.get(type(slow), slow.id))

    await ctx.transact(hand_off)
    clock.set(local(2026, 11, 26, 13, 35))  # answered after lunch: 105 min on the wall, 15 in service hours
    await agent_reply(ctx, agent, slow.id, "抱歉久等，马上处理", False, None)
    clock.set(local(2026, 11, 26, 14, 0))
    quick = await ticket(ctx)
    clock.advance(seconds=40)
    await agent_reply(ctx, agent, quick.id, "你好", False, None)
    clock.set(local(2026, 11, 26, 14, 30))
    await set_status(ctx, quick.id, "resolved")

    async def rate(session):
        conversation = await conv(ctx, quick.id)
        fresh = await session.get(type(conversation), conversation.id)
        await csat.submit_rating(session, ctx.clock, fresh, fresh.csat_round, 5, "很快")

    await ctx.transact(rate)

    async with unit_of_work(ctx.sessions) as session:
        result = await service_metrics(session, await load_calendar(session), local(2026, 11, 26),
                                       local(2026, 11, 27))
    assert result["handed_off"] == 2
    first = result["first_response"]
    assert first["count"] == 2
    assert first["median_seconds"] == (105 * 60 + 40) / 2
    assert first["median_business_seconds"] == (15 * 60 + 40) / 2
    assert first["within_60s_share"] == 0.5
    quick_created = (await conv(ctx, quick.id)).created_at
    assert result["resolution"]["count"] == 1
    assert result["resolution"]["median_seconds"] == (local(2026, 11, 26, 14, 30) - quick_created).total_seconds()
    assert result["resolution_rate"] == 0.5
    assert result["csat"] == {"count": 1, "average": 5.0, "satisfied_share": 1.0,
                              "by_agent": {str(agent.id): {"count": 1, "average": 5.0}}}
    # `slow` was answered 15 service minutes after hand-off (target 30): both first responses on time.
    assert result["sla_attainment"]["first_response"] == 1.0
    assert result["sla_attainment"]["resolution"] == 1.0
    assert result["sla_attainment"]["next_response"] is None
