"""Problem report and satisfaction in real browsers: from the order page a customer taps 「提交问题」, fills the
form with a screenshot (an empty form first shows inline errors), and the widget switches to the new ticket
with its queue card (off hours: when people are back and by when they reply); an agent sees the report in the
console, answers and resolves it, and the customer rates the service with five stars.

Screenshots of the report form, the queue card and the rating card at 360×740 and 1280×800 go to
test-artifacts/ and to /tmp/shots/ (for a person to look at)."""

from __future__ import annotations

import io
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from PIL import Image
from playwright.async_api import expect
from sqlalchemy import select

from tests.e2e.conftest import console_login
from tests.store.helpers import add_stock, make_order, make_product, notify_params
from tests.web.chat_helpers import make_agent
from zaima.core.ids import display_order_no
from zaima.core.signing import order_access_token
from zaima.models import Conversation, CsatRating, ProblemReport
from zaima.store import payments

pytestmark = pytest.mark.e2e

SHANGHAI = ZoneInfo("Asia/Shanghai")
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}
SHOTS = Path("/tmp/shots")
DESCRIPTION = "卡密在游戏里兑换时提示「无效的兑换码」，重试了三次还是一样。"


def late_evening(now: datetime) -> datetime:
    """The next 23:30 in Shanghai: after the default service hours (09:00–23:00), and later than the
    browser's own clock, so the report's default time is never 'in the future' for the server."""
    local = now.astimezone(SHANGHAI)
    evening = datetime.combine(local.date(), time(23, 30), SHANGHAI)
    return evening if evening > local else evening + timedelta(days=1)


def screenshot_file(path: Path) -> Path:
    image = Image.new("RGB", (720, 1280), (245, 245, 245))
    for y in range(560, 700):
        for x in range(60, 660):
            image.putpixel((x, y), (210, 60, 60))
    out = io.BytesIO()
    image.save(out, "PNG")
    path.write_bytes(out.getvalue())
    return path


async def snap(page, name: str, artifacts: Path) -> None:
    """The same state at phone and desktop size (the page is a phone; it is put back afterwards)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        await page.set_viewport_size(viewport)
        await page.wait_for_timeout(150)
        assert await page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        for directory in (SHOTS, artifacts):
            await page.screenshot(path=str(directory / f"{label}-{name}.png"))
    await page.set_viewport_size(PHONE)


async def test_report_from_the_order_page_becomes_a_ticket_and_is_rated(live_server, ctx, clock, browser,
                                                                          artifacts, tmp_path):
    clock.set(late_evening(clock.now()))  # off hours: the queue card says when people are back
    product = await make_product(ctx, sku="svc-e2e", price_fen=1500)
    await add_stock(ctx, product, ["SVC-E2E-KEY-0001"])
    order = await make_order(ctx, product, contact="buyer@example.com")
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    await make_agent(ctx, "meimei", "meimei-pass-2026")
    base = live_server.url

    context = await browser.new_context(viewport=PHONE, locale="zh-CN")
    page = await context.new_page()
    token = order_access_token(live_server.settings.secret_key, order.order_no)
    await page.goto(f"{base}/orders/{order.order_no}?t={token}")
    await page.locator("[data-testid=report-problem]").click()
    panel = page.locator("[data-testid=widget-panel]")
    form = panel.locator("[data-testid=widget-report-form]")
    await expect(form).to_be_visible()
    await expect(form.locator("[data-testid=widget-report-order]")).to_contain_text(display_order_no(order.order_no))

    # Sent empty: every missing field says what is wrong, next to the field, and nothing is created.
    await form.locator("[data-testid=widget-report-submit]").click()
    type_error = form.locator(".fld[data-field=problem_type] .ferr")
    await expect(type_error).to_have_text("请选择问题类型")
    await expect(form.locator(".fld[data-field=wants] .ferr")).to_have_text("请选择希望的处理方式")
    await expect(form.locator(".fld[data-field=description] .ferr")).to_contain_text("请用至少 10 个字描述问题")

    await form.get_by_text("卡密无效").click()
    await expect(type_error).to_be_hidden()  # corrected: the error goes at once
    await form.get_by_text("补发").click()
    await form.locator("[data-testid=widget-report-description]").fill(DESCRIPTION)
    await page.locator("[data-testid=widget-report-files]").set_input_files(
        str(screenshot_file(tmp_path / "invalid-key.png")))
    await expect(form.locator("[data-testid=widget-report-preview]")).to_have_count(1)
    await expect(form.locator(".ferr:visible")).to_have_count(0)
    await form.evaluate("el => { el.scrollTop = 0; }")
    await snap(page, "report-form", artifacts)
    await panel.locator("[data-testid=widget-lang]").click()  # English is one tap away here too
    await expect(form.locator("[data-testid=widget-report-submit]")).to_have_text("Submit")
    await expect(form.get_by_text("Invalid key")).to_be_visible()
    await snap(page, "report-form-en", artifacts)
    await panel.locator("[data-testid=widget-lang]").click()
    await form.locator("[data-testid=widget-report-submit]").scroll_into_view_if_needed()
    await snap(page, "report-form-bottom", artifacts)

    await form.locator("[data-testid=widget-report-submit]").click()
    await expect(form).to_be_hidden()
    async with ctx.sessions() as session:
        report = await session.scalar(select(ProblemReport))
        ticket = await session.get(Conversation, report.conversation_id)
    assert ticket.status == "queued" and ticket.priority == "high" and ticket.order_id == order.id

    # The widget now shows the new ticket: its number, the report as the first message, the screenshot, and
    # an honest queue card (off hours: back tomorrow 09:00, with the ticket number and the reply time).
    await expect(panel.locator(".sub")).to_contain_text(ticket.ticket_no)
    first = panel.locator("[data-testid=widget-message][data-sender=customer]").first
    await expect(first).to_contain_text("【问题反馈】")
    await expect(first).to_contain_text("问题类型：卡密无效")
    await expect(first).to_contain_text(DESCRIPTION)
    await expect(panel.locator("[data-testid=widget-image-thumb]")).to_be_visible()
    queue_card = panel.locator("[data-testid=widget-queue]")
    await expect(queue_card).to_contain_text("排队中：下一位就是您")
    notice = queue_card.locator("[data-testid=widget-queue-notice]")
    await expect(notice).to_contain_text("现在是非服务时间，人工客服将于 明天 09:00 上线")
    await expect(notice).to_contain_text(f"工单号 {ticket.ticket_no}，我们会在 明天 ")
    await snap(page, "queue-card", artifacts)
    await panel.locator("[data-testid=widget-lang]").click()
    await expect(notice).to_contain_text("We are outside service hours; agents are back tomorrow 09:00.")
    await panel.locator("[data-testid=widget-lang]").click()

    # The agent sees the new ticket with the whole report, answers (taking it) and resolves it.
    agent_ctx, agent = await console_login(browser, base, "meimei", "meimei-pass-2026")
    item = agent.locator("[data-testid=inbox-item]", has_text=ticket.ticket_no)
    await expect(item).to_be_visible(timeout=10_000)
    await item.click()
    messages = agent.locator("[data-testid=console-messages]")
    await expect(messages).to_contain_text("【问题反馈】")
    await expect(messages).to_contain_text("希望处理：补发")
    await expect(messages).to_contain_text(DESCRIPTION)
    await expect(messages.locator("[data-testid=console-image]")).to_be_visible()
    await agent.locator("[data-testid=reply]").fill("已核实，新卡密已补发到订单页面。")
    await agent.locator("[data-testid=send-reply]").click()
    await expect(queue_card).to_be_hidden()  # a person has it: no more queue
    await agent.locator("[data-testid=conv-status]").select_option("resolved")

    # The customer is asked for stars, picks five, leaves a word, and is thanked.
    card = panel.locator("[data-testid=widget-csat]")
    await expect(card).to_be_visible(timeout=10_000)
    await expect(card).to_contain_text("请为本次服务打分")
    stars = card.locator("[data-testid=widget-csat-star]")
    await expect(stars).to_have_count(5)
    box = await stars.first.bounding_box()
    assert box["width"] >= 44 and box["height"] >= 44  # thumb-sized targets on a phone
    await stars.nth(4).click()
    await card.locator("[data-testid=widget-csat-comment]").fill("很快就补发了，谢谢！")
    await snap(page, "csat-card", artifacts)
    await card.locator("[data-testid=widget-csat-submit]").click()
    await expect(card).to_contain_text("感谢您的评价")
    await snap(page, "csat-thanks", artifacts)
    async with ctx.sessions() as session:
        rating = await session.scalar(select(CsatRating))
    assert (rating.conversation_id, rating.round, rating.rating, rating.comment) == \
        (ticket.id, 1, 5, "很快就补发了，谢谢！")
    await context.close()
    await agent_ctx.close()
