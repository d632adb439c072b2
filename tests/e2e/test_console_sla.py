"""SLA in the agent console, in a real browser: VIP badges, priority chips and countdowns that tick from the
due times; the 「排队」 view in queue order; the sweep's warnings and breaches as toasts for the assignee and the
supervisors; and 「接手」 on a breached ticket someone else holds."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.async_api import expect
from sqlalchemy import select, update

from tests.e2e.conftest import console_login
from tests.service.helpers import ALL_DAY, make_agent, set_hours, ticket
from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.conversations.conversations import get_conversation
from zaima.db import unit_of_work
from zaima.models import Conversation, StaffUser
from zaima.realtime.publish import publish_after_commit
from zaima.service import sla, tickets
from zaima.service.policy import save_vip
from zaima.store import payments

pytestmark = pytest.mark.e2e

PASSWORD = "password-123"  # tests.service.helpers.make_agent's
SHOTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


async def vip_ticket(ctx):
    """A buyer over the VIP threshold (¥10 spent) asks for a person about their paid order."""
    async with unit_of_work(ctx.sessions) as session:
        await save_vip(session, {"min_total_spent_fen": 1000, "min_orders_30d": 0})
    product = await make_product(ctx, sku="vip-e2e", price_fen=1250)
    await add_stock(ctx, product, ["VIP-E2E-KEY-0001"])
    order = await make_order(ctx, product, contact="vip@example.com")
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    return await ticket(ctx, order=order)


async def held_by(ctx, conversation, username: str | None, first_response_in: timedelta):
    """Give the ticket to `username` (None: leave it queued) and move its first-response due time."""

    async def run(session):
        conv = await get_conversation(session, conversation.id)
        if username is not None:
            staff = await session.scalar(select(StaffUser).where(StaffUser.username == username))
            await tickets.assign(session, ctx, conv, staff)
        conv.first_response_due_at = ctx.clock.now() + first_response_in
        return conv

    return await ctx.transact(run)


async def sweep(ctx) -> list[sla.Alert]:
    """The service loop's SLA check (without routing, so the queue stays put), its alerts published."""

    async def run(session):
        alerts = await sla.check(session, await sla.load_config(session), ctx.clock.now())
        publish_after_commit(session, ctx.hub, [alert.event() for alert in alerts])
        return alerts

    return await ctx.transact(run)


async def shoot(page, label: str, name: str, artifacts) -> None:
    """A screenshot at the desktop (1280×800) or phone (390×844) size, checked for horizontal overflow."""
    viewport = SHOTS[label]
    await page.set_viewport_size(viewport)
    await page.wait_for_timeout(200)
    assert await page.evaluate("document.documentElement.scrollWidth") <= viewport["width"], \
        f"{name} overflows horizontally at {viewport['width']} px"
    await page.screenshot(path=str(artifacts / f"{label}-console-{name}.png"))


def row(page, ticket_no: str, testid: str = "inbox-item"):
    return page.locator(f"[data-testid={testid}]", has_text=ticket_no)


async def test_console_shows_sla_countdowns_vip_queue_alerts_and_take_over(live_server, ctx, browser, artifacts):
    await set_hours(ctx, ALL_DAY)  # open whenever the test runs
    await make_agent(ctx, "meimei", capacity=3)
    await make_agent(ctx, "ajie")
    await make_agent(ctx, "laowang", role="supervisor")
    vip = await vip_ticket(ctx)
    near = await held_by(ctx, await ticket(ctx), None, timedelta(seconds=90))
    mine = await held_by(ctx, await ticket(ctx), "meimei", timedelta(seconds=100))
    late = await held_by(ctx, await ticket(ctx, priority="high"), "ajie", timedelta(seconds=30))

    agent_ctx, agent = await console_login(browser, live_server.url, "meimei", PASSWORD)
    await expect(agent.locator("#online-count")).to_have_text("在线客服 1")  # its socket is ready

    # The inbox: a VIP badge on the VIP's ticket, a countdown on each running target.
    vip_row = row(agent, vip.ticket_no)
    await expect(vip_row.locator("[data-testid=vip-badge]")).to_have_text("VIP")
    await expect(row(agent, near.ticket_no).locator("[data-testid=vip-badge]")).to_have_count(0)
    vip_chip = vip_row.locator("[data-testid=sla-chip][data-metric=first_response]")
    await expect(vip_chip).to_have_attribute("data-state", "ok")  # 5 VIP minutes, nearly all left
    await expect(vip_chip).to_have_text(re.compile(r"^首次响应 0[45]:\d\d$"))
    near_chip = row(agent, near.ticket_no).locator("[data-testid=sla-chip][data-metric=first_response]")
    await expect(near_chip).to_have_text(re.compile(r"^首次响应 01:[0-2]\d$"))
    await expect(near_chip).to_have_attribute("data-state", "warn")  # 90 s of 30 min: under a fifth left
    before = await near_chip.inner_text()
    await expect(near_chip).not_to_have_text(before)  # it ticks without any server event
    resolution = row(agent, near.ticket_no).locator("[data-testid=sla-chip][data-metric=resolution]")
    await expect(resolution).to_have_text(re.compile(r"^解决 23小时5\d分$"))
    await expect(row(agent, late.ticket_no).locator("[data-testid=priority-chip]")).to_have_text("高")
    await agent.locator("[data-testid=inbox-item]", has_text=near.ticket_no).click()
    await expect(agent.locator("[data-testid=conv-flags] [data-testid=priority-chip]")).to_have_text("普通")
    await expect(agent.locator("[data-testid=conv-flags] [data-testid=sla-chip]").first).to_have_attribute(
        "data-state", "warn")
    await shoot(agent, "desktop", "sla", artifacts)
    await shoot(agent, "phone", "sla-conversation", artifacts)
    await agent.locator("#back").click()
    await shoot(agent, "phone", "sla-inbox", artifacts)

    # The queue: the VIP first although it came first anyway, then the ordinary ticket; the agents on duty.
    await agent.locator("[data-testid=view-queue]").click()
    items = agent.locator("[data-testid=queue-item]")
    await expect(items).to_have_count(2)
    await expect(items.nth(0)).to_contain_text(f"#1{vip.ticket_no}VIP")
    await expect(items.nth(0)).to_contain_text("卡密")  # the skill the ticket needs
    await expect(items.nth(1)).to_contain_text(f"#2{near.ticket_no}")
    await expect(items.nth(0).locator("[data-testid=queue-waited]")).to_have_text(re.compile(r"^已等 \d\d:\d\d$"))
    await expect(items.nth(0).locator("[data-testid=queue-expected]")).to_have_text("马上接入")  # 2 free slots
    await expect(agent.locator("[data-testid=queue-count]")).to_have_text("2")
    await expect(agent.locator("[data-testid=queue-summary]")).to_contain_text("排队 2 位 · 在线客服 1")
    await expect(agent.locator("[data-testid=queue-agent]")).to_contain_text("meimei")
    await expect(agent.locator("[data-testid=queue-agent]")).to_contain_text("1/3")
    await shoot(agent, "phone", "queue", artifacts)
    await shoot(agent, "desktop", "queue", artifacts)

    # Choosing 「离开」 says what happens to the conversations.
    await agent.locator("#presence").select_option("away")
    await expect(agent.locator("[data-testid=toast]")).to_contain_text("尚未回复的会话已退回排队")
    await expect(agent.locator("[data-testid=presence-hint]")).to_be_visible()
    await shoot(agent, "phone", "away", artifacts)
    await shoot(agent, "desktop", "away", artifacts)
    await agent.locator("#presence").select_option("online")
    await expect(agent.locator("[data-testid=presence-hint]")).to_be_hidden()
    await held_by(ctx, mine, "meimei", timedelta(seconds=100))  # going away gave it back: take it again

    # The sweep warns: the assignee hears about their ticket, the supervisor about the unassigned one.
    boss_ctx, boss = await console_login(browser, live_server.url, "laowang", PASSWORD)
    await expect(boss.locator("#online-count")).to_have_text("在线客服 2")  # its socket is ready
    alerts = await sweep(ctx)
    assert {(a.ticket_no, a.kind) for a in alerts} == {(near.ticket_no, "warning"), (mine.ticket_no, "warning"),
                                                        (late.ticket_no, "warning")}
    await expect(agent.locator("[data-testid=toast]")).to_have_text(f"工单 {mine.ticket_no} 首次响应即将超时")
    await expect(boss.locator("[data-testid=toast]")).to_have_text(f"工单 {near.ticket_no} 首次响应即将超时")

    # Time runs out for three targets (moved, not waited for: the frozen clock also keeps the agents' presence).
    async with unit_of_work(ctx.sessions) as session:
        await session.execute(update(Conversation).where(Conversation.id.in_([near.id, mine.id, late.id]))
                              .values(first_response_due_at=ctx.clock.now() - timedelta(seconds=1)))
    alerts = await sweep(ctx)
    assert sorted(a.ticket_no for a in alerts if a.kind == "breach") == sorted(
        [near.ticket_no, mine.ticket_no, late.ticket_no])
    await expect(boss.locator("[data-testid=toast]")).to_have_text(f"工单 {late.ticket_no} 首次响应已超时")
    await expect(agent.locator("[data-testid=toast]")).to_have_text(f"工单 {mine.ticket_no} 首次响应已超时")
    late_chip = row(boss, late.ticket_no).locator("[data-testid=sla-chip][data-metric=first_response]")
    await expect(late_chip).to_have_text("首次响应 已超时")
    await expect(late_chip).to_have_attribute("data-state", "late")
    await expect(row(boss, late.ticket_no).locator("[data-testid=priority-chip]")).to_have_text("紧急")
    await boss_ctx.close()

    # Any agent may take over a breached ticket that someone else holds.
    await agent.locator("[data-testid=view-all]").click()
    await row(agent, late.ticket_no).click()
    await expect(agent.locator("[data-testid=conv-title]")).to_contain_text(late.ticket_no)
    take_over = agent.locator("[data-testid=take-over]")
    await expect(take_over).to_be_visible()
    await expect(agent.locator("[data-testid=conv-flags] [data-metric=first_response]")).to_have_text("首次响应 已超时")
    await shoot(agent, "desktop", "breach", artifacts)
    await shoot(agent, "phone", "breach", artifacts)
    await agent.set_viewport_size(SHOTS["desktop"])
    await take_over.click()
    await expect(take_over).to_be_hidden()
    await expect(agent.locator("[data-testid=conv-assignee] option:checked")).to_contain_text("meimei")
    async with unit_of_work(ctx.sessions) as session:
        assignee = (await get_conversation(session, late.id)).assignee_id
        assert (await session.get(StaffUser, assignee)).username == "meimei"
    await agent_ctx.close()
