"""A human one tap away, end to end in real browsers: a customer asks 「转人工」 and sees their place (2)
and an expected wait; an agent comes online and the place moves live; the conversation is assigned
as soon as the agent has room; the agent replies; the customer rates the service 5 stars."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect
from sqlalchemy import select

from tests.conftest import make_settings
from tests.e2e.conftest import console_login, open_chat_from_order_page, widget_say
from tests.service.helpers import ALL_DAY, go_online, make_agent, service_pass, set_hours, ticket
from tests.store.helpers import make_order, make_product
from zaima.db import unit_of_work
from zaima.models import Conversation, CsatRating
from zaima.service import loop

pytestmark = pytest.mark.e2e


@pytest.fixture
def settings(db_url, tmp_path):
    return make_settings(db_url, tmp_path, bot_enabled=True, service_sweep_seconds=1.0)


@pytest.fixture
async def service_loop(ctx):
    """The service loop as in production (the live server runs without the app's lifespan): woken by
    hand-offs, resolves and presence changes, and every second."""
    stop = asyncio.Event()
    task = asyncio.create_task(loop.service_loop(ctx, stop))
    yield
    stop.set()
    ctx.kick_service()
    await task


async def test_queue_position_assignment_reply_and_five_stars(live_server, ctx, service_loop, browser, artifacts):
    await set_hours(ctx, ALL_DAY)  # whatever time the suite runs, the store is open
    product = await make_product(ctx, sku="queue-e2e")
    order = await make_order(ctx, product, contact="queue@example.com")
    # Another agent is on duty with one slot, busy with an earlier customer; one more customer waits.
    busy = await make_agent(ctx, "busy", capacity=1)
    await go_online(ctx, busy)
    earlier = await ticket(ctx)
    await service_pass(ctx)
    waiting = await ticket(ctx)
    async with unit_of_work(ctx.sessions) as session:
        assert (await session.get(Conversation, earlier.id)).assignee_id == busy.id
    helper = await make_agent(ctx, "xiaomei", capacity=1)

    customer_ctx, customer, panel = await open_chat_from_order_page(browser, live_server, order)
    await widget_say(panel, "转人工")
    card = panel.locator("[data-testid=widget-queue]")
    await expect(card).to_be_visible(timeout=15_000)
    position = panel.locator("[data-testid=widget-queue-position]")
    await expect(position).to_contain_text("第 2 位", timeout=10_000)
    await expect(panel.locator("[data-testid=widget-queue-wait]")).to_contain_text("预计等待约 16 分钟")
    await customer.screenshot(path=str(artifacts / "phone-queue.png"))

    # Leaving and coming back keeps the place.
    await customer.reload()
    await customer.locator("[data-testid=contact-support]").click()
    await expect(position).to_contain_text("第 2 位", timeout=10_000)

    # An agent logs in (online): they take the customer ahead, and our customer moves up, live.
    agent_ctx, agent = await console_login(browser, live_server.url, "xiaomei", "password-123")
    await expect(position).to_contain_text("下一位就是您", timeout=10_000)
    await expect(panel.locator("[data-testid=widget-queue-wait]")).not_to_contain_text("16 分钟")
    async with unit_of_work(ctx.sessions) as session:
        assert (await session.get(Conversation, waiting.id)).assignee_id == helper.id

    # The agent resolves that one: the slot frees and our customer is assigned to them at once.
    async def resolve(conversation_id):
        from zaima.service import tickets

        async def run(session):
            conversation = await session.get(Conversation, conversation_id)
            await tickets.change_status(session, ctx, conversation, "resolved")

        await ctx.transact(run)

    await resolve(waiting.id)
    await expect(card).to_be_hidden(timeout=10_000)
    await expect(panel.locator("[data-testid=widget-message][data-sender=system]").last).to_contain_text(
        "xiaomei", timeout=10_000)
    async with unit_of_work(ctx.sessions) as session:
        mine = await session.scalar(select(Conversation).where(Conversation.order_id == order.id))
    assert (mine.status, mine.assignee_id) == ("open", helper.id)

    # The agent finds it in the console and replies; the customer sees the reply.
    await agent.locator(f"[data-testid=inbox-item][data-id='{mine.id}']").click()
    await agent.locator("[data-testid=reply]").fill("您好，我是小美，马上帮您处理。")
    await agent.locator("[data-testid=send-reply]").click()
    await expect(panel.locator("[data-testid=widget-message][data-sender=agent]").last).to_contain_text(
        "马上帮您处理", timeout=10_000)

    # Resolved in the console: the customer is asked to rate, and gives 5 stars.
    await agent.locator("#conv-status").select_option("resolved")
    csat = panel.locator("[data-testid=widget-csat]")
    await expect(csat).to_be_visible(timeout=10_000)
    await csat.locator("[data-testid=widget-csat-star]").nth(4).click()
    await csat.locator("[data-testid=widget-csat-submit]").click()
    await expect(csat).to_contain_text("感谢", timeout=10_000)
    await customer.screenshot(path=str(artifacts / "phone-csat.png"))
    async with unit_of_work(ctx.sessions) as session:
        rating = await session.scalar(select(CsatRating).where(CsatRating.conversation_id == mine.id))
    assert (rating.rating, rating.agent_id) == (5, helper.id)
    await customer_ctx.close()
    await agent_ctx.close()
