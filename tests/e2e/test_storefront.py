"""The storefront in a real browser: buy, pay at the (demo) 易支付 cashier, receive the key; guest lookup."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect
from sqlalchemy import select

from tests.e2e.conftest import PHONE, screenshot_both
from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.core.ids import display_order_no
from zaima.core.signing import order_access_token
from zaima.db import unit_of_work
from zaima.models import CardKey, Order
from zaima.store import orders, payments, stock

pytestmark = pytest.mark.e2e

USAGE = "1. 打开游戏商城；\n2. 选择「卡密兑换」并粘贴卡密。"


async def sold_keys(ctx, order_no: str) -> list[str]:
    async with unit_of_work(ctx.sessions) as session:
        order = await session.scalar(select(Order).where(Order.order_no == order_no))
        keys = await session.scalars(select(CardKey).where(CardKey.order_id == order.id, CardKey.status == "sold")
                                     .order_by(CardKey.id))
        return [stock.reveal(ctx.box, k) for k in keys]


async def test_buy_pay_at_cashier_and_see_the_delivered_key(live_server, ctx, browser, artifacts):
    product = await make_product(ctx, sku="e2e-card", price_fen=600, description="付款后自动发货。",
                                 usage_instructions=USAGE)
    await add_stock(ctx, product, ["E2E-AAAA-0001", "E2E-BBBB-0002", "E2E-CCCC-0003"])
    base = live_server.url

    context = await browser.new_context(viewport=PHONE, locale="zh-CN")
    page = await context.new_page()
    await page.goto(base + "/")
    card = page.get_by_role("link", name=re.compile("测试商品 e2e-card"))
    await expect(card).to_contain_text("有货 3")
    await expect(card).to_contain_text("¥6.00")
    await card.click()
    await page.wait_for_url(re.compile(r"/p/e2e-card$"))

    await page.fill("#contact", "buyer@example.com")
    await page.fill("#query_password", "8888")
    await page.locator("label.pay-wxpay").click()
    await page.get_by_role("button", name="增加").click()
    await expect(page.locator("[data-total]")).to_have_text("¥12.00")
    await page.get_by_role("button", name="立即购买").click()

    await page.wait_for_url(re.compile(r"/pay/[0-9A-Z]{12}$"))
    order_no = page.url.rsplit("/", 1)[1]
    await expect(page.locator(".amount.huge")).to_have_text("¥12.00")
    await expect(page.locator("[data-left]")).to_have_text(re.compile(r"^1[45]:\d\d$"))
    await expect(page.get_by_role("button", name="我已付款")).to_be_visible()
    await expect(page.locator(".pay-card .hint")).to_contain_text("卡密显示在订单页上")
    await page.get_by_role("link", name="前往支付").click()

    await page.wait_for_url(re.compile(r"/demo-gateway/submit\.php"))
    await expect(page.locator("body")).to_contain_text("微信支付")
    await page.get_by_role("button", name=re.compile("确认支付")).click()

    await page.wait_for_url(re.compile(rf"/orders/{order_no}$"))
    await expect(page.locator(".status-text")).to_have_text("已发货", timeout=20_000)
    shown = await page.locator("[data-key]").all_inner_texts()
    sold = await sold_keys(ctx, order_no)
    assert len(sold) == 2
    assert sorted(shown) == sorted(sold)
    await expect(page.locator(".instructions")).to_contain_text("选择「卡密兑换」")
    await expect(page.locator(".order-no").first).to_have_text(display_order_no(order_no))

    contact = page.get_by_role("link", name="联系客服").and_(page.locator("[data-testid=contact-support]"))
    await expect(contact).to_be_visible()
    assert await contact.get_attribute("href") == f"/support?order={order_no}"
    await contact.click()  # opens the chat widget with this order attached (the link is the no-script fallback)
    panel = page.locator("[data-testid=widget-panel]")
    await expect(panel).to_be_visible()
    await expect(panel.locator("[data-testid=widget-order]")).to_contain_text(display_order_no(order_no))
    await context.close()

    token = order_access_token(live_server.settings.secret_key, order_no)
    await screenshot_both(browser, base + "/", "home", artifacts)
    await screenshot_both(browser, base + "/p/e2e-card", "product", artifacts)
    await screenshot_both(browser, f"{base}/orders/{order_no}?t={token}", "order", artifacts)


async def test_lookup_wrong_contact_is_refused_and_right_contact_opens_the_order(live_server, ctx, browser,
                                                                                 artifacts):
    product = await make_product(ctx, sku="e2e-lookup")
    await add_stock(ctx, product, ["LOOKUP-KEY-9999"])
    order = await make_order(ctx, product, contact="13800138000", query_password="pass-1234")
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    [secret] = await sold_keys(ctx, order.order_no)
    base = live_server.url

    await screenshot_both(browser, f"{base}/lookup?order_no={order.order_no}", "lookup", artifacts)

    context = await browser.new_context(viewport=PHONE, locale="zh-CN")
    page = await context.new_page()
    # Not the owner yet: the order page sends the visitor to the lookup form, order number filled in.
    await page.goto(f"{base}/orders/{order.order_no}")
    await page.wait_for_url(re.compile(r"/lookup\?order_no="))
    await expect(page.locator("#order_no")).to_have_value(display_order_no(order.order_no))

    await page.fill("#order_no", display_order_no(order.order_no).lower())
    await page.fill("#contact", "13900000000")
    await page.get_by_role("button", name="查询订单").click()
    await expect(page.get_by_role("alert")).to_have_text(orders.LookupFailed.message_zh)
    assert secret not in await page.content()

    # The password tab gives the very same answer for a wrong password.
    await page.locator("label[for=by-password]").click()
    await page.fill("#query_password", "wrong-pass")
    await page.get_by_role("button", name="查询订单").click()
    await expect(page.get_by_role("alert")).to_have_text(orders.LookupFailed.message_zh)
    assert secret not in await page.content()

    await page.locator("label[for=by-contact]").click()
    await page.fill("#contact", "138 0013 8000")
    await page.get_by_role("button", name="查询订单").click()
    await page.wait_for_url(re.compile(rf"/orders/{order.order_no}$"))
    await expect(page.locator(".status-text")).to_have_text("已发货")
    await expect(page.locator("[data-key]")).to_have_text(secret)
    await context.close()


async def test_lost_notify_is_recovered_by_i_have_paid(live_server, ctx, browser):
    """The gateway took the money but its notify never came: 「我已付款」 asks the gateway and delivers."""
    product = await make_product(ctx, sku="e2e-lost")
    await add_stock(ctx, product, ["LOST-NOTIFY-KEY-1"])
    base = live_server.url

    context = await browser.new_context(viewport=PHONE, locale="zh-CN")
    page = await context.new_page()
    await page.goto(f"{base}/p/e2e-lost")
    await page.fill("#contact", "13800138000")
    await page.get_by_role("button", name="立即购买").click()
    await page.wait_for_url(re.compile(r"/pay/[0-9A-Z]{12}$"))
    order_no = page.url.rsplit("/", 1)[1]
    await page.get_by_role("link", name="前往支付").click()
    await page.get_by_role("button", name="模拟：支付成功但回调丢失").click()

    # Back on the order page the payment is not known yet, and the page says so without alarm.
    await page.wait_for_url(re.compile(rf"/orders/{order_no}$"))
    await expect(page.locator(".status-text")).to_have_text("待付款")
    await expect(page.locator(".next-step")).to_contain_text("不要重复付款")
    # 「我已付款」 is right here on the order page (it used to be only on the pay page: a customer who landed
    # here saw 「去支付」 alone, and might have paid twice).
    await page.get_by_role("button", name="我已付款").click()

    await expect(page.locator(".status-text")).to_have_text("已发货")
    await expect(page.locator("[data-key]")).to_have_text("LOST-NOTIFY-KEY-1")
    await expect(page.locator(".timeline")).to_contain_text("主动查询支付平台，确认已付款")
    await context.close()
