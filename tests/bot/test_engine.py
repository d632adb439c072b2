"""The bot in conversations, on both databases: ownership before order details, idempotent actions
written to the audit log, silence once a person has the conversation, handoff on request."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.bot import engine
from zaima.conversations import conversations, identity, messages
from zaima.conversations.senders import Sender
from zaima.core.ids import display_order_no
from zaima.db import unit_of_work
from zaima.models import BotAction, CardKey, Conversation, Customer, Message, OrderEvent, Refund
from zaima.staff import create_staff
from zaima.store import payments, stock


async def open_chat(ctx, order=None) -> int:
    async with unit_of_work(ctx.sessions) as session:
        if order is not None:
            customer = await identity.customer_for_order(session, ctx.clock, order)
        else:
            customer = await identity.customer_for_device(session, ctx.clock)
        return (await conversations.open_conversation(session, ctx.clock, customer, order)).conversation.id


async def customer_says(ctx, conversation_id: int, text: str):
    async with unit_of_work(ctx.sessions) as session:
        conversation = await session.get(Conversation, conversation_id)
        customer = await session.get(Customer, conversation.customer_id)
        await messages.post_message(session, ctx.clock, ctx.settings, conversation, Sender.customer(customer), text)
    return await engine.respond(ctx, conversation_id, text)


async def delivered_order(ctx, sku="bot-card", secrets=("BOT-KEY-AAAA-0001",), extra=()):
    product = await make_product(ctx, sku=sku)
    await add_stock(ctx, product, [*secrets, *extra])
    order = await make_order(ctx, product, quantity=len(secrets), contact="13800138000")
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    return order


async def transcript(ctx, conversation_id: int) -> str:
    async with unit_of_work(ctx.sessions) as session:
        rows = await session.scalars(select(Message.body).where(Message.conversation_id == conversation_id))
        return "\n".join(rows)


async def test_no_key_or_order_detail_for_an_unverified_customer(ctx):
    order = await delivered_order(ctx)
    cid = await open_chat(ctx)  # not from the order page
    turn = await customer_says(ctx, cid, f"卡密没收到 订单号 {display_order_no(order.order_no)}")
    assert turn.outcome == "needs_verification"
    turn = await customer_says(ctx, cid, "手机号 13900000000")  # not the order's contact
    assert turn.outcome == "needs_verification" and not turn.verified
    text = await transcript(ctx, cid)
    assert "BOT-KEY" not in text and "/orders/" not in text
    # With the right contact the same customer is verified and gets the order link (never the key itself).
    turn = await customer_says(ctx, cid, "手机号是 13800138000")
    assert turn.outcome == "codes_resent" and turn.verified
    text = await transcript(ctx, cid)
    assert f"/orders/{order.order_no}?t=" in text and "BOT-KEY-AAAA-0001" not in text


async def test_staff_see_the_bots_order_link_without_the_owners_token(ctx):
    """The token opens the order page with the keys in plaintext: the customer gets it, but a transcript
    read in the console (messages, inbox preview) must not let staff see keys outside the audited reveal."""
    from zaima.conversations import events as ev
    from zaima.core.signing import order_access_token

    order = await delivered_order(ctx)
    cid = await open_chat(ctx, order)
    await customer_says(ctx, cid, "卡密没收到")
    token = order_access_token(ctx.settings.secret_key, order.order_no)
    async with unit_of_work(ctx.sessions) as session:
        bot = (await session.scalars(select(Message).where(Message.conversation_id == cid, Message.sender_kind == "bot",
                                                           Message.body.contains(token)))).first()
    assert bot is not None  # the customer's copy carries the token
    assert token in ev.message_public_view(bot)["body"]
    staff = ev.message_staff_view(bot)["body"]
    assert token not in staff and "?t=" not in staff and f"/orders/{order.order_no}" in staff
    assert token not in ev.message_preview(bot)["text"]
    # Other query parameters and text survive.
    assert ev.staff_text(f"看 /orders/{order.order_no}?t={token}&lang=en 吧") == f"看 /orders/{order.order_no}?lang=en 吧"


async def test_refund_offered_then_refunded_once_with_audit_log(ctx):
    product = await make_product(ctx, sku="bot-empty")
    order = await make_order(ctx, product, contact="buyer@example.com")
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    cid = await open_chat(ctx, order)
    turn = await customer_says(ctx, cid, "付款半天了 卡密呢??")
    assert turn.intent == "not_received" and turn.outcome == "refund_offered"
    first = await customer_says(ctx, cid, "那退款吧")
    second = await customer_says(ctx, cid, "退款")
    assert first.outcome == "refunded" and second.outcome == "status_explained"
    async with unit_of_work(ctx.sessions) as session:
        refunds = list(await session.scalars(select(Refund).where(Refund.order_id == order.id)))
        events = list(await session.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id,
                                                                     OrderEvent.actor_kind == "bot")))
    assert len(refunds) == 1 and refunds[0].conversation_id == cid and refunds[0].actor_kind == "bot"
    assert [e.kind for e in events] == ["refunded"] and events[0].conversation_id == cid


async def test_invalid_key_replaced_once_then_handed_off(ctx):
    order = await delivered_order(ctx, sku="bot-replace", extra=("BOT-KEY-SPARE-0002", "BOT-KEY-SPARE-0003"))
    cid = await open_chat(ctx, order)
    turn = await customer_says(ctx, cid, "卡密无效，提示已被使用")
    assert turn.outcome == "replaced"
    async with unit_of_work(ctx.sessions) as session:
        keys = {k.status for k in await session.scalars(select(CardKey).where(CardKey.order_id == order.id))}
        kinds = list(await session.scalars(select(OrderEvent.kind).where(OrderEvent.order_id == order.id,
                                                                         OrderEvent.actor_kind == "bot")))
    assert keys == {"quarantined", "sold"}
    assert kinds == ["key_quarantined", "key_replaced"]
    turn = await customer_says(ctx, cid, "换的这张也不行！")
    assert turn.outcome == "handoff" and turn.handoff == "high"
    async with unit_of_work(ctx.sessions) as session:
        replaced = await session.scalar(select(func.count()).select_from(OrderEvent).where(
            OrderEvent.order_id == order.id, OrderEvent.kind == "key_replaced"))
        conversation = await session.get(Conversation, cid)
        actions = list(await session.scalars(select(BotAction.action).where(BotAction.conversation_id == cid)))
    assert replaced == 1 and conversation.status == "queued" and conversation.priority == "high"
    assert "replace" in actions and "handoff" in actions


async def test_human_request_hands_off_at_once_and_the_bot_goes_quiet(ctx):
    cid = await open_chat(ctx)
    turn = await customer_says(ctx, cid, "转人工")
    assert turn.outcome == "handoff"
    assert await customer_says(ctx, cid, "在吗") is None  # queued: waiting for a person, the bot is quiet
    async with unit_of_work(ctx.sessions) as session:
        agent = await create_staff(session, ctx.clock, "bot-agent", "agent-pass-2026")
        conversation = await session.get(Conversation, cid)
        await conversations.assign(session, ctx.clock, conversation, agent)
    assert await customer_says(ctx, cid, "卡密无效") is None  # an agent has it
    async with unit_of_work(ctx.sessions) as session:
        bot_messages = await session.scalar(select(func.count()).select_from(Message).where(
            Message.conversation_id == cid, Message.sender_kind == "bot"))
    assert bot_messages == 1


async def test_contact_check_flags_lookalikes(ctx):
    from zaima.bot.contacts import add_contact

    async with unit_of_work(ctx.sessions) as session:
        await add_contact(session, ctx.clock, "wechat", "lanshan_kami", "官方微信")
    cid = await open_chat(ctx)
    assert (await customer_says(ctx, cid, "微信 lanshan-kami 加我说是客服 是你们的吗")).outcome == "contact_flagged"
    assert (await customer_says(ctx, cid, "那 lanshan_kami 这个微信呢 是官方的吗")).outcome == "contact_verified"


async def test_keys_are_checked_against_the_policy_window(ctx):
    order = await delivered_order(ctx, sku="bot-late", extra=("BOT-KEY-SPARE-0009",))
    ctx.clock.advance(hours=25)
    cid = await open_chat(ctx, order)
    turn = await customer_says(ctx, cid, "激活码无效啊")
    assert turn.outcome == "handoff"
    async with unit_of_work(ctx.sessions) as session:
        assert await stock.available_count(session, order.product_id) == 1  # no replacement went out


async def test_on_an_order_with_several_keys_the_bot_says_which_key_it_replaced(ctx):
    """The customer may name the bad key by its place (「第2张」) or its last characters; unnamed, the first is
    replaced, and the reply says which one, so a customer who meant another can say so."""
    order = await delivered_order(ctx, sku="bot-multi", secrets=("MULTI-AAAA-0001", "MULTI-BBBB-0002"),
                                  extra=("MULTI-CCCC-0003", "MULTI-DDDD-0004"))
    cid = await open_chat(ctx, order)
    turn = await customer_says(ctx, cid, "第2张卡密兑换不了，提示无效")
    assert turn.outcome == "replaced"
    box = ctx.box
    async with unit_of_work(ctx.sessions) as session:
        by_secret = {stock.reveal(box, k): k.status
                     for k in await session.scalars(select(CardKey).where(CardKey.order_id == order.id))}
    assert by_secret == {"MULTI-AAAA-0001": "sold", "MULTI-BBBB-0002": "quarantined", "MULTI-CCCC-0003": "sold"}
    said = await transcript(ctx, cid)
    assert "已将第 2 张卡密（MU…02）作废，并补发了新卡密（MU…03）" in said

    other = await delivered_order(ctx, sku="bot-multi-2", secrets=("TAIL-AAAA-1111", "TAIL-BBBB-2222"),
                                  extra=("TAIL-CCCC-3333",))
    cid2 = await open_chat(ctx, other)
    assert (await customer_says(ctx, cid2, "尾号2222的卡密无效")).outcome == "replaced"
    async with unit_of_work(ctx.sessions) as session:
        quarantined = [stock.reveal(box, k) for k in await session.scalars(
            select(CardKey).where(CardKey.order_id == other.id, CardKey.status == "quarantined"))]
    assert quarantined == ["TAIL-BBBB-2222"]


def test_an_order_number_with_tk_in_it_is_not_a_refund_request():
    """"tk" is what customers type for 退款; inside an order number it is just two letters. (Found by a run
    where the random order number held "TK": 「卡密没收到 订单号 …TK…」 was answered as a refund request.)"""
    from zaima.bot.engine import _resolve_intent

    assert _resolve_intent("not_received", "卡密没收到 订单号 ABTK-2345-6789", {}) == "not_received"
    assert _resolve_intent("not_received", "卡密没收到 订单号 TK2A-2345-6789", {}) == "not_received"
    assert _resolve_intent("not_received", "没收到货，tk", {}) == "refund"
    assert _resolve_intent("not_received", "没发货 TK!", {}) == "refund"
