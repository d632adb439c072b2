"""Off hours: the customer is told when people are back and by when they will hear from us, and is e-mailed
(through a real local SMTP server) when a person answers."""

from __future__ import annotations

from tests.service.helpers import conv, local, make_agent, set_hours, ticket
from tests.store.helpers import make_order, make_product
from zaima import jobs
from zaima.db import unit_of_work
from zaima.models import Conversation
from zaima.service import queue
from zaima.web.agent_socket import agent_reply

DAYTIME = {"timezone": "Asia/Shanghai", "weekly": {d: [["09:00", "18:00"]] for d in
                                                  ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}


async def test_off_hours_ticket_is_promised_a_time_and_mailed_when_an_agent_answers(mail_ctx, smtp_server, clock):
    ctx = mail_ctx
    await set_hours(ctx, DAYTIME)
    product = await make_product(ctx)
    order = await make_order(ctx, product, contact="night-owl@example.com")
    clock.set(local(2026, 11, 26, 22, 0))
    t = await ticket(ctx, order=order)

    async with unit_of_work(ctx.sessions) as session:
        conversation = await session.get(Conversation, t.id)
        view = await queue.queue_status(session, ctx, conversation)
        notice = await queue.handoff_notice(session, ctx, conversation)
    assert conversation.notify_email == "night-owl@example.com"
    assert view["open_now"] is False and view["expected_wait_seconds"] is None
    assert view["next_open_text"] == "明天 09:00" and view["next_open_text_en"] == "tomorrow 09:00"
    assert view["reply_by_text"] == "明天 09:30"  # 30 minutes of service time after opening
    assert "非服务时间" in notice and "明天 09:00" in notice and "明天 09:30" in notice and "ni***@example.com" in notice

    clock.set(local(2026, 11, 27, 9, 5))
    agent = await make_agent(ctx, "morning")
    await agent_reply(ctx, agent, t.id, "早上好，已为你补发新的卡密。", False, None)
    await agent_reply(ctx, agent, t.id, "还有问题随时说。", False, None)  # one notice, not one per message
    await jobs.run_until_idle(ctx)

    assert len(smtp_server.messages) == 1
    mail = smtp_server.messages[0]
    assert mail.rcpt_tos == ["night-owl@example.com"]
    assert t.ticket_no in mail.message["Subject"]
    body = mail.message.get_body(("plain",)).get_content()
    assert "早上好，已为你补发新的卡密。" in body and f"/orders/{order.order_no}?t=" in body
    assert (await conv(ctx, t.id)).notify_email is None


async def test_no_mail_promise_when_people_are_on_duty(mail_ctx, smtp_server, clock):
    ctx = mail_ctx
    await set_hours(ctx, DAYTIME)
    product = await make_product(ctx)
    order = await make_order(ctx, product, contact="day@example.com")
    agent = await make_agent(ctx, "day")
    await ctx.hub.hold_presence("agent", agent.username, "online", ttl_seconds=10 ** 7)
    clock.set(local(2026, 11, 26, 10, 0))
    t = await ticket(ctx, order=order)
    assert (await conv(ctx, t.id)).notify_email is None


async def test_a_phone_contact_is_not_mailed(mail_ctx, smtp_server, clock):
    ctx = mail_ctx
    await set_hours(ctx, DAYTIME)
    product = await make_product(ctx)
    order = await make_order(ctx, product, contact="13800138000")
    clock.set(local(2026, 11, 26, 23, 0))
    t = await ticket(ctx, order=order)
    assert (await conv(ctx, t.id)).notify_email is None


async def test_the_order_link_with_its_key_token_goes_only_to_the_orders_own_address(mail_ctx, smtp_server, clock):
    ctx = mail_ctx
    await set_hours(ctx, DAYTIME)
    product = await make_product(ctx)
    order = await make_order(ctx, product, contact="owner@example.com")
    clock.set(local(2026, 11, 26, 22, 0))
    t = await ticket(ctx, order=order)
    async with unit_of_work(ctx.sessions) as session:  # e.g. a problem report's typed follow-up address
        (await session.get(Conversation, t.id)).notify_email = "typed-by-someone@example.com"
    clock.set(local(2026, 11, 27, 9, 5))
    await agent_reply(ctx, await make_agent(ctx, "morning"), t.id, "已处理", False, None)
    await jobs.run_until_idle(ctx)
    [mail] = smtp_server.messages
    body = mail.message.get_body(("plain",)).get_content()
    assert mail.rcpt_tos == ["typed-by-someone@example.com"] and "?t=" not in body and "已处理" in body
