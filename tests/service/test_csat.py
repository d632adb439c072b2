"""Satisfaction (CSAT): a resolve asks for 1–5 stars in the chat (and by e-mail with a signed link), each
round is rated once and the first answer stands, a reopened ticket is asked again, and nobody can read or
rate someone else's ticket."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from sqlalchemy import func, select

from tests.store.helpers import add_stock, make_order, make_product, notify_params
from tests.web.chat_helpers import make_agent
from zaima import jobs
from zaima.app import create_app
from zaima.conversations import conversations, identity, messages
from zaima.conversations.senders import Sender
from zaima.db import unit_of_work
from zaima.models import Conversation, CsatRating, Customer, Job, MailOptOut, Message, StaffUser
from zaima.service import csat, tickets
from zaima.store import payments


async def paid_order(ctx, sku="csat-1", contact="buyer@example.com"):
    product = await make_product(ctx, sku=sku, price_fen=1000)
    await add_stock(ctx, product, [f"{sku.upper()}-KEY-0001"])
    order = await make_order(ctx, product, contact=contact)
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    return order


async def start_chat(http, ctx, order=None) -> dict:
    body = {"order_context": identity.issue_order_context(ctx.settings, ctx.clock, order)} if order else {}
    r = await http.post("/api/v1/chat/session", json=body)
    assert r.status_code == 200, r.text
    chat = r.json()
    chat["headers"] = {"Authorization": f"Bearer {chat['customer_token']}"}
    chat["id"] = chat["conversation"]["id"]
    return chat


async def take_and_resolve(ctx, conversation_id: int, agent_id: int | None = None) -> list:
    """An agent takes the ticket (if given) and resolves it, as the console does."""
    async with unit_of_work(ctx.sessions) as session:
        conversation = await session.get(Conversation, conversation_id)
        if agent_id is not None and conversation.assignee_id is None:
            await tickets.assign(session, ctx, conversation, await session.get(StaffUser, agent_id))
        return await tickets.change_status(session, ctx, conversation, "resolved")


async def customer_writes(ctx, conversation_id: int, text: str = "还是不行") -> str:
    async with unit_of_work(ctx.sessions) as session:
        conversation = await session.get(Conversation, conversation_id)
        customer = await session.get(Customer, conversation.customer_id)
        posted = await messages.post_message(session, ctx.clock, ctx.settings, conversation,
                                             Sender.customer(customer), text)
        await tickets.after_post(session, ctx, conversation, posted)
        return conversation.status


async def last_message(ctx, conversation_id: int) -> Message:
    async with ctx.sessions() as session:
        return await session.scalar(select(Message).where(Message.conversation_id == conversation_id)
                                    .order_by(Message.seq.desc()).limit(1))


async def rate(http, chat, round_, rating, comment=None, conversation_id=None):
    return await http.post(f"/api/v1/chat/conversations/{conversation_id or chat['id']}/csat",
                           json={"round": round_, "rating": rating, "comment": comment}, headers=chat["headers"])


async def test_resolve_asks_for_stars_in_the_chat_and_the_first_answer_stands(client, ctx):
    agent = await make_agent(ctx, "meimei")
    chat = await start_chat(client, ctx)
    state = (await client.get(f"/api/v1/chat/conversations/{chat['id']}/csat", headers=chat["headers"])).json()
    assert state["round"] == 0 and not state["rated"] and not state["can_rate"]
    r = await rate(client, chat, 1, 5)
    assert r.status_code == 409 and r.json()["error"]["code"] == "csat_not_open"  # nothing resolved yet

    events = await take_and_resolve(ctx, chat["id"], agent.id)
    invitation = await last_message(ctx, chat["id"])
    assert invitation.sender_kind == "system" and invitation.body == csat.INVITATION
    assert "请为本次服务打分（1–5 星）" in invitation.body
    assert any(e.payload.get("type") == "message" and e.payload["message"]["seq"] == invitation.seq
               for e in events if e.topic == f"conv:{chat['id']}")
    state = (await client.get(f"/api/v1/chat/conversations/{chat['id']}/csat", headers=chat["headers"])).json()
    assert state == {"conversation_id": chat["id"], "ticket_no": f"T-{10000 + chat['id']}", "round": 1,
                     "rated": False, "rating": None, "comment": None, "can_rate": True}

    r = await rate(client, chat, 1, 4, "  回复很快，谢谢  ")
    assert r.status_code == 200, r.text
    assert r.json() == {**state, "rated": True, "rating": 4, "comment": "回复很快，谢谢", "can_rate": False,
                             "duplicate": False}
    again = await rate(client, chat, 1, 1, "改成差评")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["rating"] == 4 and again.json()["comment"] == "回复很快，谢谢"
    async with ctx.sessions() as session:
        [stored] = list(await session.scalars(select(CsatRating)))
    assert (stored.conversation_id, stored.round, stored.rating, stored.agent_id, stored.channel) == \
        (chat["id"], 1, 4, agent.id, "web")


async def test_invalid_ratings_are_refused_with_clear_messages(client, ctx):
    chat = await start_chat(client, ctx)
    await take_and_resolve(ctx, chat["id"])
    cases = [
        ({"round": 1, "rating": 0}, 422, "请选择 1–5 星的评分"),
        ({"round": 1, "rating": 6}, 422, "请选择 1–5 星的评分"),
        ({"round": 1, "rating": "5"}, 422, "请选择 1–5 星的评分"),
        ({"round": 1, "rating": True}, 422, "请选择 1–5 星的评分"),
        ({"round": 1, "rating": None}, 422, "请选择 1–5 星的评分"),
        ({"round": 1, "rating": 5, "comment": "好" * 501}, 422, "评价内容不能超过 500 字（当前 501 字）"),
        ({"round": 1, "rating": 5, "comment": 42}, 422, "评价内容必须是文本"),
        ({"round": 0, "rating": 5}, 422, "评价轮次无效"),
        ({"round": "1", "rating": 5}, 422, "评价轮次无效"),
        ({"round": 2, "rating": 5}, 409, "该工单当前没有待评价的服务（处理完毕后才能评价）"),
    ]
    for body, status, message in cases:
        r = await client.post(f"/api/v1/chat/conversations/{chat['id']}/csat", json=body, headers=chat["headers"])
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["message"] == message, body
    async with ctx.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(CsatRating)) == 0
    r = await rate(client, chat, 1, 5, "好" * 500)
    assert r.status_code == 200 and r.json()["rated"]


async def test_reopened_ticket_is_asked_again_for_the_new_round(client, ctx):
    agent = await make_agent(ctx, "meimei")
    chat = await start_chat(client, ctx)
    await take_and_resolve(ctx, chat["id"], agent.id)
    assert (await rate(client, chat, 1, 2, "没解决")).status_code == 200

    assert await customer_writes(ctx, chat["id"]) == "open"  # reopened: back to the agent
    state = (await client.get(f"/api/v1/chat/conversations/{chat['id']}/csat", headers=chat["headers"])).json()
    assert state["round"] == 1 and state["rated"] and not state["can_rate"]

    await take_and_resolve(ctx, chat["id"])
    async with ctx.sessions() as session:
        bodies = list(await session.scalars(select(Message.body).where(Message.conversation_id == chat["id"])
                                            .order_by(Message.seq)))
    assert bodies == [csat.INVITATION, "还是不行", csat.INVITATION]  # asked again after the reopen
    state = (await client.get(f"/api/v1/chat/conversations/{chat['id']}/csat", headers=chat["headers"])).json()
    assert state["round"] == 2 and not state["rated"] and state["can_rate"]
    # Round 1 keeps its own answer; round 2 gets its own.
    old = await rate(client, chat, 1, 5)
    assert old.status_code == 200 and old.json()["duplicate"] and old.json()["round"] == 2
    assert (await rate(client, chat, 2, 5, "这次好了")).json()["rating"] == 5
    async with ctx.sessions() as session:
        rows = list(await session.scalars(select(CsatRating).order_by(CsatRating.round)))
    assert [(r.round, r.rating) for r in rows] == [(1, 2), (2, 5)]


async def test_a_round_left_unrated_expires_when_the_ticket_is_resolved_again(client, ctx):
    chat = await start_chat(client, ctx)
    await take_and_resolve(ctx, chat["id"])
    await customer_writes(ctx, chat["id"])
    r = await rate(client, chat, 1, 5)  # reopened: round 1 can no longer be rated
    assert r.status_code == 409 and r.json()["error"]["code"] == "csat_not_open"
    await take_and_resolve(ctx, chat["id"])
    r = await rate(client, chat, 1, 5)
    assert r.status_code == 409 and r.json()["error"]["code"] == "csat_round_expired"
    assert "请为最新一次服务评价" in r.json()["error"]["message"]


async def test_a_customer_cannot_read_or_rate_someone_elses_ticket(client, ctx):
    mine = await start_chat(client, ctx)
    theirs = await start_chat(client, ctx)
    await take_and_resolve(ctx, theirs["id"])
    missing = await client.get("/api/v1/chat/conversations/999999/csat", headers=mine["headers"])
    assert missing.status_code == 404
    other = await client.get(f"/api/v1/chat/conversations/{theirs['id']}/csat", headers=mine["headers"])
    assert other.status_code == 404 and other.json() == missing.json()
    assert other.json()["error"]["message"] == "未找到该会话"
    r = await rate(client, mine, 1, 1, conversation_id=theirs["id"])
    assert r.status_code == 404 and r.json() == missing.json()
    r = await client.get(f"/api/v1/chat/conversations/{theirs['id']}/csat")
    assert r.status_code == 401
    async with ctx.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(CsatRating)) == 0


async def test_concurrent_double_submit_stores_one_rating(ctx):
    async with unit_of_work(ctx.sessions) as session:
        customer = await identity.customer_for_device(session, ctx.clock)
        conversation_id = (await conversations.open_conversation(session, ctx.clock, customer)).conversation.id
    await take_and_resolve(ctx, conversation_id)

    async def submit(stars):
        async def run(session):
            conversation = await session.get(Conversation, conversation_id)
            return (await csat.submit_rating(session, ctx.clock, conversation, 1, stars)).rating.rating

        return await ctx.transact(run)

    results = await asyncio.gather(submit(5), submit(3))
    assert results[0] == results[1]
    async with ctx.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(CsatRating)) == 1


@pytest.fixture
async def mail_client(mail_ctx):
    app = create_app(mail_ctx.settings, ctx=mail_ctx, migrate=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://zaima.test") as http:
        yield http


async def test_email_survey_link_opens_a_page_that_stores_the_stars(mail_ctx, mail_client, smtp_server):
    ctx, http = mail_ctx, mail_client
    order = await paid_order(ctx)
    chat = await start_chat(http, ctx, order)
    await take_and_resolve(ctx, chat["id"])
    await take_and_resolve(ctx, chat["id"])  # a repeat resolve is a no-op: still one survey per round
    await jobs.run_until_idle(ctx)
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["buyer@example.com"]
    assert f"工单 T-{10000 + chat['id']}" in received.message["Subject"]
    text = received.message.get_body(("plain",)).get_content()
    link = re.search(r"(http://\S+/rate/(\S+))", text)
    assert link, text
    path = "/rate/" + link.group(2)

    page = await http.get(path + "?rating=4")  # the 4-star link in the mail: preselects, stores nothing
    assert page.status_code == 200 and "请为本次服务打分" in page.text
    assert 'value="4" id="star-4" checked' in page.text
    async with ctx.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(CsatRating)) == 0

    bad = await http.post(path, data={"rating": "9"})
    assert bad.status_code == 422 and "请选择 1–5 星的评分" in bad.text
    done = await http.post(path, data={"rating": "4", "comment": "处理得很耐心"})
    assert done.status_code == 200 and "感谢您的评价" in done.text and "处理得很耐心" in done.text
    again = await http.post(path, data={"rating": "1"})
    assert "感谢您的评价" in again.text
    async with ctx.sessions() as session:
        [stored] = list(await session.scalars(select(CsatRating)))
    assert (stored.rating, stored.channel, stored.comment) == (4, "email", "处理得很耐心")

    # The widget sees the e-mailed answer too.
    state = (await http.get(f"/api/v1/chat/conversations/{chat['id']}/csat", headers=chat["headers"])).json()
    assert state["rated"] and state["rating"] == 4

    broken = await http.get(path[:-3] + "xyz")
    assert broken.status_code == 404 and "评价链接无效或已过期" in broken.text
    ctx.clock.advance(days=csat.LINK_DAYS + 1)
    expired = await http.get(path)
    assert expired.status_code == 404 and "评价链接无效或已过期" in expired.text


async def test_survey_mail_goes_to_an_email_contact_only(mail_ctx, mail_client):
    ctx, http = mail_ctx, mail_client
    order = await paid_order(ctx, contact="13800138000")
    chat = await start_chat(http, ctx, order)
    await take_and_resolve(ctx, chat["id"])
    async with ctx.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Job).where(Job.kind == "mail.send")) == 0
        conversation = await session.get(Conversation, chat["id"])
        assert conversation.csat_round == 1
    # An address the ticket promised to notify counts (the form's contact, or the off-hours e-mail).
    await customer_writes(ctx, chat["id"])
    async with unit_of_work(ctx.sessions) as session:
        conversation = await session.get(Conversation, chat["id"])
        conversation.notify_email = "li@example.com"
    await take_and_resolve(ctx, chat["id"])
    async with ctx.sessions() as session:
        [job] = list(await session.scalars(select(Job).where(Job.kind == "mail.send")))
    assert job.payload["to"] == "li@example.com" and "/rate/" in job.payload["text"]
    assert job.payload["dedupe_key"] == f"csat:{chat['id']}:2"


async def test_survey_mail_can_be_unsubscribed_by_link_or_one_click(mail_ctx, mail_client, smtp_server):
    """The survey is mail the customer did not ask for: it carries an unsubscribe link and the RFC 8058
    one-click header, and an address that used either gets no more surveys (the chat still asks)."""
    ctx, http = mail_ctx, mail_client
    order = await paid_order(ctx, contact="Buyer@Example.com")
    chat = await start_chat(http, ctx, order)
    await take_and_resolve(ctx, chat["id"])
    await jobs.run_until_idle(ctx)
    [received] = smtp_server.messages
    header = received.message["List-Unsubscribe"]
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # On the wire as the plain <URL> a mail client looks for (RFC 2369: no encoded words, no folding in it).
    assert f"List-Unsubscribe: {header}\r\n".encode() in received.raw, received.raw[:800]
    link = re.fullmatch(r"<http://\S+(/mail/unsubscribe/\S+)>", header)
    assert link, header
    path = link.group(1)
    text = received.message.get_body(("plain",)).get_content()
    html_body = received.message.get_body(("html",)).get_content()
    assert re.search(r"退订 / Unsubscribe from rating requests: http://\S+" + re.escape(path), text), text
    assert path in html_body and "退订" in html_body
    assert "buyer" not in header.lower()  # the link names a digest, not the address

    page = await http.get(path)  # a mail scanner opening the link changes nothing
    assert page.status_code == 200 and "退订服务评价邀请邮件" in page.text and "确认退订" in page.text
    async with ctx.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(MailOptOut)) == 0

    broken = await http.post(path[:-3] + "xyz")
    assert broken.status_code == 404 and "退订链接无效" in broken.text
    # The mail client's one-click request (RFC 8058), twice: one opt-out.
    for _ in range(2):
        done = await http.post(path, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200 and "已退订" in done.text
    assert "已退订" in (await http.get(path)).text
    async with ctx.sessions() as session:
        [stored] = list(await session.scalars(select(MailOptOut)))
    assert (stored.kind, stored.via) == ("survey", "one_click") and "buyer" not in stored.address_digest

    # Reopened and resolved again: the chat asks for the new round, no survey mail goes out (the address is
    # matched whatever its case).
    await customer_writes(ctx, chat["id"])
    await take_and_resolve(ctx, chat["id"])
    await jobs.run_until_idle(ctx)
    assert len(smtp_server.messages) == 1
    assert "请为本次服务打分" in (await last_message(ctx, chat["id"])).body
    async with ctx.sessions() as session:
        assert (await session.get(Conversation, chat["id"])).csat_round == 2

    # Another address still gets its survey; the page's button opts it out too.
    other = await paid_order(ctx, sku="csat-2", contact="other@example.com")
    chat2 = await start_chat(http, ctx, other)
    await take_and_resolve(ctx, chat2["id"])
    await jobs.run_until_idle(ctx)
    assert [m.rcpt_tos for m in smtp_server.messages] == [["buyer@example.com"], ["other@example.com"]]
    path2 = re.search(r"(/mail/unsubscribe/[^>\s]+)", smtp_server.messages[1].message["List-Unsubscribe"]).group(1)
    assert path2 != path
    assert "已退订" in (await http.post(path2)).text
    async with ctx.sessions() as session:
        assert sorted(o.via for o in await session.scalars(select(MailOptOut))) == ["one_click", "page"]
