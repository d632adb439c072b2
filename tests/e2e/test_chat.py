"""The chat in two real browsers: a customer on the order page opens 「联系客服」, sends text and an image;
an agent in the console sees both live, opens the order panel and replies; the customer sees the
reply, reloads, and the history is still there."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from playwright.async_api import expect

from tests.e2e.conftest import console_login, open_chat_from_order_page, widget_say
from tests.store.helpers import add_stock, make_order, make_product, notify_params
from tests.web.chat_helpers import make_agent
from zaima.core.ids import display_order_no
from zaima.store import payments

pytestmark = pytest.mark.e2e


def screenshot_png(path):
    image = Image.new("RGB", (800, 600), (240, 240, 240))
    for x in range(100, 700):
        for y in range(250, 350):
            image.putpixel((x, y), (220, 50, 50))
    out = io.BytesIO()
    image.save(out, "PNG")
    path.write_bytes(out.getvalue())
    return path


async def test_customer_and_agent_chat_live_with_order_panel(live_server, ctx, browser, artifacts, tmp_path):
    product = await make_product(ctx, sku="chat-e2e", price_fen=1000, usage_instructions="在游戏商城兑换")
    await add_stock(ctx, product, ["CHAT-E2E-KEY-0001"])
    order = await make_order(ctx, product, contact="buyer@example.com")
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    await make_agent(ctx, "meimei", "meimei-pass-2026")
    base = live_server.url

    # The customer opens the chat from the order page.
    customer_ctx, customer, panel = await open_chat_from_order_page(browser, live_server, order)
    await expect(panel).to_be_visible()
    await expect(panel.locator("[data-testid=widget-order]")).to_contain_text(display_order_no(order.order_no))
    offline = panel.locator("[data-testid=widget-offline]")
    await expect(offline).to_be_visible()  # nobody on duty yet: the customer is told so
    await expect(offline).to_contain_text("当前没有客服在线")

    # The agent logs in and is on duty.
    agent_ctx, agent = await console_login(browser, base, "meimei", "meimei-pass-2026")
    await expect(agent.locator("#presence")).to_have_value("online")

    await expect(offline).to_be_hidden()  # the agent came online: the notice goes away live
    await widget_say(panel, "卡密显示无效，怎么办？")
    mine = panel.locator("[data-testid=widget-message][data-sender=customer]")
    await expect(mine.first).to_contain_text("卡密显示无效")
    await expect(mine.first.locator("[data-testid=widget-message-state]")).to_have_text("已送达")
    await panel.locator("input[type=file]").set_input_files(str(screenshot_png(tmp_path / "shot.png")))
    await expect(panel.locator("[data-testid=widget-image-thumb]")).to_be_visible()

    # The agent sees the new conversation live, with both messages and the order beside them.
    item = agent.locator("[data-testid=inbox-item]").first
    await expect(item).to_contain_text("[图片]", timeout=10_000)  # the last message's preview
    await expect(item.locator(".unread")).to_have_text("2")
    await item.click()
    messages = agent.locator("[data-testid=console-messages]")
    await expect(messages).to_contain_text("卡密显示无效")
    await expect(messages.locator("[data-testid=console-image]")).to_be_visible()
    order_panel = agent.locator("[data-testid=order-panel]")
    await expect(order_panel).to_contain_text(display_order_no(order.order_no))
    await expect(order_panel.locator("[data-testid=order-status]")).to_have_text("已发货")
    await expect(order_panel).not_to_contain_text("CHAT-E2E-KEY-0001")  # masked until revealed
    await agent.locator("[data-testid=reply]").fill("您好，已为您核实，马上补发。")
    await agent.locator("[data-testid=send-reply]").click()
    await expect(messages).to_contain_text("马上补发")
    # However long the conversation, the list scrolls inside the screen and the reply box stays in view.
    await messages.evaluate("""m => { for (let i = 0; i < 60; i++) {
        const d = document.createElement('div'); d.className = 'msg'; d.textContent = 'filler ' + i; m.appendChild(d); } }""")
    send = await agent.locator("[data-testid=send-reply]").bounding_box()
    viewport_height = agent.viewport_size["height"]
    assert send["y"] + send["height"] <= viewport_height, (send, viewport_height)
    await messages.evaluate("m => m.querySelectorAll('.msg').forEach((d, i) => { if (d.textContent.startsWith('filler')) d.remove(); })")

    # The customer sees the reply, with the agent's name.
    reply = panel.locator("[data-testid=widget-message][data-sender=agent]")
    await expect(reply).to_contain_text("马上补发")
    await expect(reply).to_contain_text("客服")
    await expect(mine.first.locator("[data-testid=widget-message-state]")).to_have_text("已读")
    await customer.screenshot(path=str(artifacts / "phone-widget.png"))
    await agent.screenshot(path=str(artifacts / "desktop-console.png"))

    # Reload: the history is still there.
    await customer.reload()
    await customer.locator("[data-testid=contact-support]").click()
    await expect(panel.locator("[data-testid=widget-message]")).to_have_count(3)
    await expect(panel).to_contain_text("马上补发")

    # English is one tap away.
    await panel.locator("[data-testid=widget-lang]").click()
    await expect(panel.locator(".title")).to_have_text("Customer support")
    await expect(panel.locator("[data-testid=widget-send]")).to_have_text("Send")
    await panel.locator("[data-testid=widget-lang]").click()
    await expect(panel.locator(".title")).to_have_text("在线客服")

    # Revealing the keys is audited on the order's timeline.
    agent.once("dialog", lambda dialog: dialog.accept())
    await agent.locator("[data-testid=reveal-keys]").click()
    await expect(agent.locator("[data-testid=revealed-key]")).to_contain_text("CHAT-E2E-KEY-0001")
    await customer_ctx.close()
    await agent_ctx.close()


async def test_the_chat_follows_the_phones_dark_mode_unless_the_store_pins_it(live_server, ctx, browser, artifacts):
    """At night on a phone in dark mode, the chat is dark like the store's pages, not a white panel."""
    product = await make_product(ctx, sku="chat-dark")
    order = await make_order(ctx, product)
    pinned = lambda html: html.replace('<script src="/widget.js"', '<script src="/widget.js" data-theme="light"')  # noqa: E731
    for scheme, html, dark in (("dark", None, True), ("light", None, False), ("dark", pinned, False)):
        context, page, panel = await open_chat_from_order_page(browser, live_server, order, page_html=html,
                                                               color_scheme=scheme)
        await expect(panel).to_be_visible()
        await widget_say(panel, "在吗？")
        bubble = panel.locator("[data-testid=widget-message][data-sender=customer]").first
        await expect(bubble).to_be_visible()
        colours = await panel.evaluate("""p => ['.list', '.compose', '[data-testid=widget-input]'].map(
            s => getComputedStyle(p.querySelector(s)).backgroundColor).concat([getComputedStyle(p).color])""")
        if dark:
            assert colours == ["rgb(15, 20, 26)", "rgb(24, 32, 42)", "rgb(15, 20, 26)", "rgb(230, 234, 239)"], colours
            await page.screenshot(path=str(artifacts / "phone-chat-dark.png"))
        else:
            assert colours == ["rgb(248, 249, 250)", "rgb(255, 255, 255)", "rgb(255, 255, 255)", "rgb(33, 37, 41)"], colours
        await context.close()
