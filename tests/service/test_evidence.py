"""The evidence bundle of a ticket: everything a dispute needs (transcript with internal notes flagged,
attachments, payment, delivery, timeline, bot actions), never a card key in plaintext, staff only, and
every export written to the order's timeline."""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import datetime

from PIL import Image

from tests.conversations.helpers import make_agent, make_conversation, make_customer, post
from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.conversations import identity
from zaima.conversations.attachments import store_image
from zaima.conversations.conversations import get_conversation
from zaima.conversations.events import check_attachment_key
from zaima.conversations.messages import post_message
from zaima.conversations.senders import Sender
from zaima.core.signing import order_access_token
from zaima.db import unit_of_work
from zaima.models import BotAction, Order
from zaima.service.evidence import build_bundle
from zaima.store import payments, timeline
from zaima.store.views import mask

KEY = "EVIDENCE-KEY-7Q3X9DMP2"
PAIR_ACCOUNT, PAIR_PASSWORD = "ACCT-evidence-user", "Pa55w0rd-secret"
PAIR = f"{PAIR_ACCOUNT}----{PAIR_PASSWORD}"
AGENT = ("agent1", "password-123")  # tests.conversations.helpers.make_agent's password


def png(size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


def secrets_of(ctx, order_no: str) -> list[str]:
    """What must never appear in a bundle: the keys, each half of a pair, the order page's access token."""
    return [KEY, PAIR, PAIR_ACCOUNT, PAIR_PASSWORD, order_access_token(ctx.settings.secret_key, order_no)]


async def delivered_ticket(ctx):
    """A paid, delivered two-key order and its ticket: the customer pastes a key and uploads a screenshot, the
    bot links the order page and re-shows the keys, an agent replies and writes an internal note."""
    product = await make_product(ctx, sku="ev-card", price_fen=1250)
    await add_stock(ctx, product, [KEY, PAIR.replace("----", ",")])
    order = await make_order(ctx, product, quantity=2, contact="buyer@example.com")
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    async with unit_of_work(ctx.sessions) as session:
        customer = await identity.customer_for_order(session, ctx.clock, order)
    conversation = await make_conversation(ctx, customer, order)
    agent = await make_agent(ctx, AGENT[0])
    customer_sender = Sender.customer(customer)

    await post(ctx, conversation.id, customer_sender, f"卡密 {KEY} 提示已被使用，另一个密码 {PAIR_PASSWORD} 也不对")

    async def upload(session):
        fresh = await get_conversation(session, conversation.id)
        attachment = await store_image(session, ctx.settings, ctx.clock, fresh, customer_sender, png(), "截图.png")
        await post_message(session, ctx.clock, ctx.settings, fresh, customer_sender, "截图", attachment=attachment)
        return attachment

    attachment = await ctx.transact(upload)
    token = order_access_token(ctx.settings.secret_key, order.order_no)
    link = f"{ctx.settings.base_url}/orders/{order.order_no}?t={token}"
    await post(ctx, conversation.id, Sender.bot(), f"您的卡密已重新提供，请打开订单页面查看：{link}")
    async with unit_of_work(ctx.sessions) as session:
        session.add(BotAction(conversation_id=conversation.id, order_id=order.id, action="resend",
                              idempotency_key=f"resend:{order.id}:test", result={"shown": 2},
                              created_at=ctx.clock.now()))
    await post(ctx, conversation.id, Sender.agent(agent), "您好，我们正在核实这两个卡密。")
    await post(ctx, conversation.id, Sender.agent(agent), "内部：客户已第三次反馈，疑似准备拒付", internal=True)
    return order, customer, conversation, attachment


async def bundle_for(ctx, conversation_id: int) -> dict:
    async with unit_of_work(ctx.sessions) as session:
        conversation = await get_conversation(session, conversation_id)
        return await build_bundle(session, conversation, generated_by="小王 (agent1)", now=ctx.clock.now(), ctx=ctx)


def assert_no_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, secret


async def test_bundle_holds_the_whole_case_and_no_plaintext_key(ctx):
    order, customer, conversation, attachment = await delivered_ticket(ctx)
    bundle = await bundle_for(ctx, conversation.id)
    text = json.dumps(bundle, ensure_ascii=False)  # JSON-serialisable as it is
    assert_no_secret(text, secrets_of(ctx, order.order_no))

    ticket = bundle["ticket"]
    assert ticket["ticket_no"] == conversation.ticket_no and ticket["channel"] == "web"
    assert ticket["first_human_reply_at"] is not None and ticket["created_at"].endswith("+00:00")
    assert bundle["customer"] == {**bundle["customer"], "kind": "order", "contact": "buyer@example.com"}

    facts = bundle["order"]
    assert facts["order_no"] == order.order_no and facts["status"] == "delivered" and facts["quantity"] == 2
    assert (facts["unit_price"], facts["amount"], facts["currency"]) == ("12.50", "25.00", "CNY")
    assert facts["product"]["kind"] == "card_key" and facts["paid_at"] and facts["delivered_at"]
    assert facts["keys"]["count"] == 2
    assert sorted(k["masked"] for k in facts["keys"]["items"]) == sorted([mask(KEY), mask(PAIR)])

    [payment] = bundle["payments"]
    assert payment["amount"] == "25.00" and payment["trade_no"] == "T2026000001" and payment["received_via"] == "notify"
    assert [n["verdict"] for n in bundle["payment_notifications"]] == ["accepted"]
    attempts = [(a["method"], a["result"], a["quantity"]) for a in bundle["delivery_attempts"]]
    assert attempts == [("stock", "delivered", 2)]
    kinds = [e["kind"] for e in bundle["timeline"]]
    assert kinds[0] == "created" and "paid" in kinds and "delivered" in kinds
    assert all(datetime.fromisoformat(e["at"]).utcoffset().total_seconds() == 0 for e in bundle["timeline"])

    [shot] = bundle["attachments"]
    assert shot["id"] == attachment.id and shot["name"] == "截图.png" and shot["content_type"] == "image/png"
    assert shot["sha256"] == hashlib.sha256(png()).hexdigest() and shot["byte_size"] == len(png())
    assert (shot["width"], shot["height"]) == (64, 48)
    base, key = shot["url"].rsplit("/", 1)
    assert base == f"{ctx.settings.base_url}/chat/attachments/{attachment.id}" and check_attachment_key(attachment, key)

    transcript = bundle["transcript"]
    assert [m["seq"] for m in transcript] == list(range(1, len(transcript) + 1))
    [note] = [m for m in transcript if m["internal"]]
    assert note["sender_kind"] == "agent" and "疑似准备拒付" in note["body"]
    assert all(not m["internal"] for m in transcript if m is not note)
    pasted = transcript[0]
    assert pasted["sender_kind"] == "customer" and mask(KEY) in pasted["body"] and mask(PAIR_PASSWORD) in pasted["body"]
    assert [m["attachment_id"] for m in transcript if m["attachment_id"]] == [attachment.id]
    bot_link = next(m for m in transcript if m["sender_kind"] == "bot")
    assert f"/orders/{order.order_no}?t=[已隐去" in bot_link["body"]

    [action] = bundle["bot_actions"]
    assert action["action"] == "resend" and action["order_no"] == order.order_no and action["result"] == {"shown": 2}
    assert bundle["generated_by"] == "小王 (agent1)" and bundle["generated_at"] == ctx.clock.now().isoformat()


async def test_bundle_of_a_ticket_without_order(ctx):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    await post(ctx, conversation.id, Sender.customer(customer), "在吗？")
    bundle = await bundle_for(ctx, conversation.id)
    assert bundle["order"] is None and bundle["payments"] == [] and bundle["timeline"] == []
    assert [m["body"] for m in bundle["transcript"]] == ["在吗？"] and bundle["customer"]["kind"] == "device"


# --- routes ---------------------------------------------------------------------------------------------------


async def log_in(client) -> None:
    r = await client.post("/console/login", data={"username": AGENT[0], "password": AGENT[1]})
    assert r.status_code == 303, r.text


async def test_routes_need_a_staff_session(client, ctx):
    order, customer, conversation, _ = await delivered_ticket(ctx)
    json_url = f"/console/api/conversations/{conversation.id}/evidence.json"
    page_url = f"/console/conversations/{conversation.id}/evidence"
    assert (await client.get(json_url)).status_code == 401
    r = await client.get(page_url, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"

    token = identity.issue_customer_token(ctx.settings, ctx.clock, customer)
    assert (await client.get(json_url, headers={"Authorization": f"Bearer {token}"})).status_code == 401
    client.cookies.set("zaima_staff", token)  # a customer token is no staff session
    assert (await client.get(json_url)).status_code == 401
    assert (await client.get(page_url, follow_redirects=False)).status_code == 303
    client.cookies.clear()

    async with unit_of_work(ctx.sessions) as session:
        events = await timeline.events_for(session, order.id)
    assert "evidence_exported" not in [e.kind for e in events]  # refused requests exported nothing


async def test_json_download_and_page_are_audited_and_hold_no_plaintext_key(client, ctx):
    order, _, conversation, attachment = await delivered_ticket(ctx)
    await log_in(client)
    ticket_no = conversation.ticket_no
    assert ticket_no == "T-10001"  # the first ticket of a fresh database

    r = await client.get(f"/console/api/conversations/{conversation.id}/evidence.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.headers["content-disposition"] == 'attachment; filename="T-10001-evidence.json"'
    assert r.headers["cache-control"] == "no-store"
    assert_no_secret(r.text, secrets_of(ctx, order.order_no))
    bundle = r.json()
    assert bundle["ticket"]["ticket_no"] == ticket_no and bundle["generated_by"].endswith("(agent1)")
    assert any(m["internal"] for m in bundle["transcript"])

    r = await client.get(f"/console/conversations/{conversation.id}/evidence")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "<title>工单 T-10001 证据包</title>" in html and 'data-testid="evidence-ticket-no">T-10001<' in html
    assert_no_secret(html, secrets_of(ctx, order.order_no))
    assert mask(KEY) in html and "内部备注 · 客户不可见" in html and "疑似准备拒付" in html
    assert "¥25.00" in html and "T2026000001" in html and attachment.sha256 in html
    # Sections in the agreed order.
    ids = ["ticket", "customer", "order", "payments", "deliveries", "supplier", "timeline", "attachments",
           "transcript", "bot-actions"]
    positions = [html.index(f'<section id="{i}"') for i in ids]
    assert positions == sorted(positions)
    # The print stylesheet runs under a per-response nonce; the page stays private and un-cached.
    nonce = re.search(r'<style nonce="([^"]+)">', html).group(1)
    assert f"style-src 'self' 'nonce-{nonce}'" in r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store" and "@media print" in html
    thumb = re.search(r'<img src="([^"]+)"', html).group(1)
    assert (await client.get(thumb)).status_code == 200  # the screenshot shows on the page

    async with unit_of_work(ctx.sessions) as session:
        exports = [e for e in await timeline.events_for(session, order.id) if e.kind == "evidence_exported"]
        fresh = await session.get(Order, order.id)
    assert [(e.actor_kind, e.actor_id, e.conversation_id, e.data["format"], e.data["ticket_no"]) for e in exports] == [
        ("agent", "agent1", conversation.id, "json", ticket_no),
        ("agent", "agent1", conversation.id, "html", ticket_no),
    ]
    assert fresh.status == "delivered"  # an export changes nothing else
    # The next bundle shows the earlier exports, so a bundle documents who handed evidence out before.
    later = (await client.get(f"/console/api/conversations/{conversation.id}/evidence.json")).json()
    assert [e["kind"] for e in later["timeline"]].count("evidence_exported") == 2


async def test_unknown_ticket_is_404_and_ticket_without_order_exports_without_timeline(client, ctx):
    await make_agent(ctx, AGENT[0])
    await log_in(client)
    assert (await client.get("/console/api/conversations/999/evidence.json")).status_code == 404
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    r = await client.get(f"/console/api/conversations/{conversation.id}/evidence.json")
    assert r.status_code == 200 and r.json()["order"] is None
    r = await client.get(f"/console/conversations/{conversation.id}/evidence")
    assert r.status_code == 200 and "这个工单没有关联订单" in r.text


async def test_page_in_english(client, ctx):
    _, _, conversation, _ = await delivered_ticket(ctx)
    await log_in(client)
    r = await client.get(f"/console/conversations/{conversation.id}/evidence?lang=en")
    assert r.status_code == 200 and "Ticket T-10001 evidence bundle" in r.text and "Internal note" in r.text
