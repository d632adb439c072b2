"""The bot end to end in a real browser: a customer whose order is waiting for stock opens the chat
from the order page, is offered a refund, says 「那退款吧」 and is refunded; an agent sees the bot's
refund in the order's timeline in the console."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.conftest import make_settings
from tests.e2e.conftest import console_login, open_chat_from_order_page, widget_say
from tests.store.helpers import add_stock, make_order, make_product, notify_params
from tests.web.chat_helpers import make_agent
from zaima.store import payments

pytestmark = pytest.mark.e2e


@pytest.fixture
def settings(db_url, tmp_path):
    return make_settings(db_url, tmp_path, bot_enabled=True)


async def test_bot_refunds_an_order_waiting_for_stock(live_server, ctx, browser, artifacts):
    product = await make_product(ctx, sku="bot-e2e", price_fen=3000)  # no stock at all
    order = await make_order(ctx, product, contact="buyer@example.com")
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    await make_agent(ctx, "xiaomei", "xiaomei-pass-2026")
    base = live_server.url

    customer_ctx, customer, panel = await open_chat_from_order_page(browser, live_server, order)
    await widget_say(panel, "付款半天了 卡密呢??")
    bot = panel.locator("[data-testid=widget-message][data-sender=bot]")
    await expect(bot.last).to_contain_text("暂时缺货", timeout=15_000)
    await expect(bot.last).to_contain_text("退款")
    await widget_say(panel, "那退款吧")
    await expect(bot.last).to_contain_text("已为您办理退款", timeout=15_000)
    await expect(bot.last).to_contain_text("¥30.00")
    await customer.screenshot(path=str(artifacts / "phone-bot.png"))

    agent_ctx, agent = await console_login(browser, base, "xiaomei", "xiaomei-pass-2026")
    await agent.locator("[data-testid=inbox-item]").first.click()
    await expect(agent.locator("[data-testid=console-messages]")).to_contain_text("已为您办理退款")
    panel_order = agent.locator("[data-testid=order-panel]")
    await expect(panel_order.locator("[data-testid=order-status]")).to_have_text("已退款")
    await expect(panel_order).to_contain_text("已退款 · 机器人")
    await agent.screenshot(path=str(artifacts / "desktop-console-bot.png"))
    await customer_ctx.close()
    await agent_ctx.close()


async def test_bot_replaces_the_key_the_customer_names_and_the_console_marks_both(live_server, ctx, browser):
    product = await make_product(ctx, sku="bot-e2e-keys", price_fen=1000)
    await add_stock(ctx, product, ["E2E-KEY-AAAA-0001", "E2E-KEY-BBBB-0002", "E2E-KEY-CCCC-0003"])
    order = await make_order(ctx, product, quantity=2, contact="buyer@example.com")
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    await make_agent(ctx, "xiaomei", "xiaomei-pass-2026")

    customer_ctx, customer, panel = await open_chat_from_order_page(browser, live_server, order)
    await widget_say(panel, "第2张卡密兑换不了，提示无效")
    bot = panel.locator("[data-testid=widget-message][data-sender=bot]")
    await expect(bot.last).to_contain_text("已将第 2 张卡密（E2…02）作废", timeout=15_000)
    await expect(bot.last).to_contain_text("补发了新卡密（E2…03）")

    agent_ctx, agent = await console_login(browser, live_server.url, "xiaomei", "xiaomei-pass-2026")
    await agent.locator("[data-testid=inbox-item]").first.click()
    keys = agent.locator("[data-testid=order-panel] ul.keys li")
    await expect(keys).to_have_count(3)
    await expect(keys.nth(1)).to_contain_text("已作废（反馈异常）")
    await expect(keys.nth(2)).to_contain_text("补发")
    await expect(keys.nth(0)).not_to_contain_text("·")
    await customer_ctx.close()
    await agent_ctx.close()
