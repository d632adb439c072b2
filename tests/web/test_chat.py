"""Chat over real HTTP and WebSocket connections (a live uvicorn server, both databases): the customer
session, sending with acks, duplicates, resume by sequence, bad frames, authorization between
customers and between customers and agents, internal notes, CSRF, uploads."""

from __future__ import annotations

import asyncio
import io
import json
import time

import httpx
import pytest
import websockets
from PIL import Image
from sqlalchemy import select

from tests.conversations.helpers import make_conversation, make_customer
from tests.store.helpers import add_stock, make_order, make_product, notify_params
from tests.web.chat_helpers import (
    agent_login,
    customer_session,
    customer_socket,
    make_agent,
    say,
    ws_url,
)
from zaima.conversations.identity import issue_order_context, widget_identity_signature
from zaima.conversations.messages import Draft
from zaima.conversations.senders import Sender
from zaima.db import unit_of_work
from zaima.models import Message
from zaima.service import tickets
from zaima.store import payments
from zaima.web.message_writer import MessageWriter


def png_bytes(size=(640, 480), color=(200, 80, 20)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


async def closed_with(url: str, frames: list[dict]) -> int:
    """Connect, send `frames`, and return the close code the server answers with."""
    async with websockets.connect(url) as ws:
        for frame in frames:
            await ws.send(json.dumps(frame))
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await ws.recv()
        return info.value.rcvd.code


async def test_send_ack_duplicate_and_resume(live_server, ctx):
    base = live_server.url
    session = await customer_session(base)
    cid = session["conversation"]["id"]
    assert session["conversation"]["ticket_no"] == f"T-{10000 + cid}"
    customer = await customer_socket(base, session)

    first = await say(customer, cid, "卡密显示无效", msg_id="m-1")
    assert first["seq"] == 1 and first["duplicate"] is False
    again = await say(customer, cid, "卡密显示无效", msg_id="m-1")  # a resend after a lost ack
    assert again["duplicate"] is True and again["seq"] == 1
    second = await say(customer, cid, "订单号 K7Q3", msg_id="m-2")
    assert second["seq"] == 2
    await customer.close()

    # The agent answers while the customer is away.
    await make_agent(ctx)
    agent = await agent_login(base)
    agent_ws = await agent.socket()
    await agent_ws.send({"type": "subscribe", "conversation_id": cid, "last_seq": 0})
    history = [await agent_ws.expect("message") for _ in range(2)]
    assert [f["message"]["body"] for f in history] == ["卡密显示无效", "订单号 K7Q3"]
    for text in ("您好", "已为您补发"):
        await say(agent_ws, cid, text)

    # Reconnecting with the last seq it holds, the customer receives exactly what it missed.
    customer = await customer_socket(base, session, last_seq=2)
    missed = [await customer.expect("message") for _ in range(2)]
    assert [(f["message"]["seq"], f["message"]["body"]) for f in missed] == [(3, "您好"), (4, "已为您补发")]
    assert all(f["message"]["sender_kind"] == "agent" for f in missed)
    assert [f for f in await customer.quiet() if f["type"] == "message"] == []

    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.get(f"/api/v1/chat/conversations/{cid}/messages",
                           headers={"Authorization": f"Bearer {session['customer_token']}"})
    assert [m["seq"] for m in r.json()["messages"]] == [1, 2, 3, 4]  # "m-1" stored once
    await customer.close()
    await agent_ws.close()
    await agent.http.aclose()


async def test_live_exchange_internal_notes_and_read_receipts(live_server, ctx):
    base = live_server.url
    await make_agent(ctx)
    agent = await agent_login(base)
    agent_ws = await agent.socket()
    session = await customer_session(base)
    assert session["agents_online"] == 1  # the agent's socket put them on duty
    cid = session["conversation"]["id"]
    customer = await customer_socket(base, session)

    opened = await agent_ws.expect("inbox")  # the new conversation appeared in the inbox
    assert opened["item"]["id"] == cid and opened["item"]["last_message"] is None
    await say(customer, cid, "在吗？")
    inbox = await agent_ws.expect("inbox")
    assert inbox["item"]["id"] == cid and inbox["item"]["last_message"]["text"] == "在吗？"
    assert inbox["item"]["unread"] == 1
    await agent_ws.send({"type": "subscribe", "conversation_id": cid, "last_seq": 0})
    await agent_ws.expect("message")

    note = await say(agent_ws, cid, "客户上次也说过，先查支付记录", internal=True)
    assert note["message"]["internal"] is True
    reply = await say(agent_ws, cid, "在的，请稍等")
    got = await customer.expect("message", where=lambda f: f["message"]["sender_kind"] == "agent")
    assert got["message"]["body"] == "在的，请稍等" and got["message"]["seq"] == reply["seq"]
    # The note never reached the customer, over the socket or HTTP.
    frames = await customer.quiet()
    assert "先查支付记录" not in json.dumps(frames, ensure_ascii=False)
    async with httpx.AsyncClient(base_url=base) as http:
        listing = (await http.get(f"/api/v1/chat/conversations/{cid}/messages",
                                  headers={"Authorization": f"Bearer {session['customer_token']}"})).json()
    assert "先查支付记录" not in json.dumps(listing, ensure_ascii=False)
    assert all("internal" not in m for m in listing["messages"])

    # Replying took the conversation over: assigned to the agent and open.
    detail = (await agent.http.get(f"/console/api/conversations/{cid}")).json()
    assert detail["conversation"]["status"] == "open" and detail["conversation"]["assignee_id"] is not None

    await customer.send({"type": "read", "conversation_id": cid, "seq": reply["seq"]})
    receipt = await agent_ws.expect("read", reader="customer")
    assert receipt["seq"] == reply["seq"]
    await customer.send({"type": "typing", "conversation_id": cid, "state": True})
    typing = await agent_ws.expect("typing")
    assert typing["sender_kind"] == "customer" and typing["state"] is True
    for client in (customer, agent_ws):
        await client.close()
    await agent.http.aclose()


async def test_bad_frames_get_error_frames_and_the_socket_stays_open(live_server):
    base = live_server.url
    session = await customer_session(base)
    cid = session["conversation"]["id"]
    customer = await customer_socket(base, session)
    await customer.send("{not json")
    assert (await customer.expect("error"))["code"] == "bad_json"
    await customer.send("[1, 2]")
    assert (await customer.expect("error"))["code"] == "bad_json"
    await customer.send({"type": "dance"})
    error = await customer.expect("error")
    assert error["code"] == "unknown_type" and error["message"]  # zh-CN text for the user
    await customer.send({"type": "send", "conversation_id": cid, "client_msg_id": "x1", "text": "字" * 4001})
    error = await customer.expect("error")
    assert error["code"] == "too_long" and error["ref"] == "x1" and "4000" in error["message"]
    await customer.send({"type": "send", "conversation_id": cid, "client_msg_id": "x2", "text": "   "})
    error = await customer.expect("error")
    assert error["ref"] == "x2" and "不能为空" in error["message"]
    await customer.send({"type": "send", "conversation_id": cid, "text": "no id"})
    assert (await customer.expect("error"))["code"] == "invalid"
    await customer.send({"type": "send", "conversation_id": cid + 999, "client_msg_id": "x3", "text": "hi"})
    assert (await customer.expect("error"))["code"] == "not_found"
    await customer.send({"type": "ping"})
    await customer.expect("pong")
    assert (await say(customer, cid, "还能正常发"))["seq"] == 1  # nothing above stored anything
    await customer.close()


async def test_tokens_are_not_interchangeable_and_conversations_are_private(live_server, ctx):
    base = live_server.url
    alice = await customer_session(base)
    bob = await customer_session(base)
    alice_socket = await customer_socket(base, alice)
    await say(alice_socket, alice["conversation"]["id"], "我的订单卡密是 SECRET-123")
    await alice_socket.close()

    # Bob cannot read Alice's conversation, over HTTP or the socket.
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.get(f"/api/v1/chat/conversations/{alice['conversation']['id']}/messages",
                           headers={"Authorization": f"Bearer {bob['customer_token']}"})
    assert r.status_code == 404 and "SECRET" not in r.text
    code = await closed_with(ws_url(base, "/ws/customer"), [
        {"type": "auth", "token": bob["customer_token"], "conversation_id": alice["conversation"]["id"],
         "last_seq": 0}])
    assert code == 4001

    # An agent's ticket is not a customer token, and a customer token is not an agent ticket.
    await make_agent(ctx)
    agent = await agent_login(base)
    ticket = (await agent.post("/console/api/ws-ticket")).json()["ticket"]
    assert await closed_with(ws_url(base, "/ws/customer"), [
        {"type": "auth", "token": ticket, "conversation_id": alice["conversation"]["id"], "last_seq": 0}]) == 4001
    assert await closed_with(ws_url(base, "/ws/agent"), [{"type": "auth", "ticket": alice["customer_token"]}]) == 4001
    assert await closed_with(ws_url(base, "/ws/agent"), [{"type": "hello"}]) == 4001
    # And a customer token opens no console page or API.
    async with httpx.AsyncClient(base_url=base, cookies={"zaima_staff": alice["customer_token"]}) as forged:
        assert (await forged.get("/console/api/conversations")).status_code == 401
    await agent.http.aclose()


async def test_console_requires_csrf_on_state_changes(live_server, ctx):
    base = live_server.url
    await make_agent(ctx)
    agent = await agent_login(base)
    session = await customer_session(base)
    cid = session["conversation"]["id"]
    r = await agent.post(f"/console/api/conversations/{cid}/status", {"status": "queued"}, csrf=False)
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = await agent.http.post(f"/console/api/conversations/{cid}/status", json={"status": "queued"},
                              headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    assert (await agent.post("/console/api/ws-ticket", csrf=False)).status_code == 403
    detail = (await agent.http.get(f"/console/api/conversations/{cid}")).json()
    assert detail["conversation"]["status"] == "bot"  # nothing changed
    r = await agent.post(f"/console/api/conversations/{cid}/status", {"status": "queued"})
    assert r.status_code == 200 and r.json()["conversation"]["status"] == "queued"
    r = await agent.post(f"/console/api/conversations/{cid}/status", {"status": "bot"})
    assert r.status_code == 409  # queued → bot is not a transition
    await agent.http.aclose()
    async with httpx.AsyncClient(base_url=base) as anonymous:
        assert (await anonymous.get("/console/api/conversations")).status_code == 401
        assert (await anonymous.get("/console", follow_redirects=False)).headers["location"] == "/console/login"


async def test_image_upload_checks_type_and_size(live_server, ctx):
    base = live_server.url
    session = await customer_session(base)
    cid = session["conversation"]["id"]
    auth = {"Authorization": f"Bearer {session['customer_token']}"}
    url = f"/api/v1/chat/conversations/{cid}/attachments"
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post(url, headers=auth, files={"file": ("shot.png", b"%PDF-1.4 not an image", "image/png")})
        assert r.status_code == 415 and "PNG" in r.json()["error"]["message"]
        big = b"\x89PNG\r\n\x1a\n" + b"0" * (5 * 1024 * 1024)
        r = await http.post(url, headers=auth, files={"file": ("big.png", big, "image/png")})
        assert r.status_code == 413 and "5 MB" in r.json()["error"]["message"]
        r = await http.post(url, headers=auth, files={"file": ("ok.png", png_bytes(), "image/png")},
                            data={"client_msg_id": "img-1"})
        assert r.status_code == 200, r.text
        message = r.json()["message"]
        assert message["seq"] == 1 and message["attachment"]["content_type"] == "image/png"
        thumb = await http.get(message["attachment"]["thumb_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"].startswith("image/")
        assert max(Image.open(io.BytesIO(thumb.content)).size) <= 320
        full = await http.get(message["attachment"]["url"])
        assert full.content == png_bytes()
        forged = message["attachment"]["url"].rsplit("/", 1)[0] + "/0123456789abcdef0123456789abcdef"
        assert (await http.get(forged)).status_code == 404
        # Someone else's token cannot upload into this conversation.
        other = await customer_session(base)
        r = await http.post(url, headers={"Authorization": f"Bearer {other['customer_token']}"},
                            files={"file": ("ok.png", png_bytes(), "image/png")})
        assert r.status_code == 404
        listing = (await http.get(f"/api/v1/chat/conversations/{cid}/messages", headers=auth)).json()
        assert [m["seq"] for m in listing["messages"]] == [1]  # the refused uploads left nothing behind


async def test_order_context_and_signed_identity(live_server, ctx, settings):
    base = live_server.url
    product = await make_product(ctx, sku="chat-card")
    await add_stock(ctx, product, ["CHAT-KEY-1"])
    order = await make_order(ctx, product, contact="13800138000")
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"

    context = issue_order_context(settings, ctx.clock, order)
    session = await customer_session(base, order_context=context)
    assert session["conversation"]["order_no"] == order.order_no
    assert session["customer"]["name"] == "138****8000"
    # The same device comes back (reload): same conversation, history kept.
    customer = await customer_socket(base, session)
    await say(customer, session["conversation"]["id"], "卡密无效")
    await customer.close()
    again = await customer_session(base, customer_token=session["customer_token"], order_context=context)
    assert again["conversation"]["id"] == session["conversation"]["id"]
    assert [m["body"] for m in again["messages"]] == ["卡密无效"]

    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post("/api/v1/chat/session", json={"order_context": context + "x"})
        assert r.status_code == 401
        now = int(time.time())
        r = await http.post("/api/v1/chat/session", json={"identity": {"user_id": "u1", "ts": now, "sig": "00"}})
        assert r.status_code in (401, 403, 422) and r.json()["error"]["message"]


async def test_widget_script_and_cors(live_server):
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        js = await http.get("/widget.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "联系客服" in js.text
        pre = await http.options("/api/v1/chat/session", headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "*"
        r = await http.post("/api/v1/chat/session", json={}, headers={"Origin": "https://shop.example"})
        assert r.headers["access-control-allow-origin"] == "*"
        # The console and the admin API are not opened to other origins.
        r = await http.get("/api/v1/products", headers={"Origin": "https://shop.example"})
        assert "access-control-allow-origin" not in r.headers


@pytest.fixture
def settings(db_url, tmp_path):
    from tests.conftest import make_settings

    return make_settings(db_url, tmp_path, widget_identity_secret="host-site-secret")


async def test_widget_identity_window(live_server, ctx):
    base = live_server.url
    now = int(ctx.clock.now().timestamp())
    good = {"user_id": "u-1001", "ts": now, "sig": widget_identity_signature("host-site-secret", "u-1001", now),
            "name": "张三"}
    session = await customer_session(base, identity=good)
    assert session["customer"]["name"] == "张三"
    old = now - 301
    stale = {"user_id": "u-1001", "ts": old, "sig": widget_identity_signature("host-site-secret", "u-1001", old)}
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post("/api/v1/chat/session", json={"identity": stale})
        assert r.status_code == 401 and r.json()["error"]["code"] != "ok"
        forged = {"user_id": "u-1002", "ts": now, "sig": good["sig"]}  # someone else's id, replayed signature
        r = await http.post("/api/v1/chat/session", json={"identity": forged})
        assert r.status_code == 401


async def test_only_supervisors_reassign_other_agents_conversations(live_server, ctx):
    base = live_server.url
    first = await make_agent(ctx, "agent1")
    second = await make_agent(ctx, "agent2")
    await make_agent(ctx, "boss1", role="supervisor")
    cid = (await customer_session(base))["conversation"]["id"]
    one, two, boss = [await agent_login(base, name) for name in ("agent1", "agent2", "boss1")]
    r = await one.post(f"/console/api/conversations/{cid}/assign", {"assignee_id": first.id})
    assert r.status_code == 200 and r.json()["conversation"]["assignee_id"] == first.id
    r = await two.post(f"/console/api/conversations/{cid}/assign", {"assignee_id": second.id})
    assert r.status_code == 403 and "主管" in r.json()["error"]["message"]
    r = await two.post(f"/console/api/conversations/{cid}/status", {"status": "queued"})  # no back door
    assert r.status_code == 403 and "主管" in r.json()["error"]["message"]
    r = await boss.post(f"/console/api/conversations/{cid}/assign", {"assignee_id": second.id})
    assert r.status_code == 200 and r.json()["conversation"]["assignee_id"] == second.id
    r = await two.post(f"/console/api/conversations/{cid}/assign", {"assignee_id": None})
    assert r.status_code == 200 and r.json()["conversation"]["assignee_id"] is None
    for agent in (one, two, boss):
        await agent.http.aclose()


async def test_a_flood_is_rate_limited_with_a_reference_and_pings_still_answered(live_server):
    # A low rate, so that even a slow (loaded) server receives the flood faster than it allows.
    live_server.ctx.settings.customer_frames_per_second = 2.0
    base = live_server.url
    session = await customer_session(base)
    cid = session["conversation"]["id"]
    customer = await customer_socket(base, session)
    for i in range(20):
        await customer.send({"type": "send", "conversation_id": cid, "client_msg_id": f"f-{i}", "text": f"刷屏 {i}"})
    await customer.send({"type": "ping"})
    await customer.expect("pong", timeout=15)
    acked, limited = set(), []
    for _ in range(200):  # every send is answered: an ack or a rate_limited error naming it
        if len(acked) + len(limited) == 20:
            break
        for frame in await customer.quiet(0.2):
            if frame["type"] == "ack":
                acked.add(frame["client_msg_id"])
            elif frame["type"] == "error" and frame["code"] == "rate_limited":
                limited.append(frame)
    assert limited and all(f["ref"].startswith("f-") for f in limited)  # the client knows what to resend
    assert acked and acked.isdisjoint(f["ref"] for f in limited)
    assert len(acked) + len(limited) == 20
    await customer.close()


async def test_session_needs_no_body(live_server):
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        r = await http.post("/api/v1/chat/session")
    assert r.status_code == 200 and r.json()["customer_token"]


async def test_an_image_reopening_a_resolved_ticket_puts_it_back_in_the_queue_with_targets(live_server, ctx):
    from tests.service.helpers import set_status
    from zaima.db import unit_of_work
    from zaima.models import Conversation
    from zaima.service import queue

    base = live_server.url
    session = await customer_session(base)
    cid = session["conversation"]["id"]

    async def hand_off(db):
        await queue.hand_off(db, ctx, await db.get(Conversation, cid))

    await ctx.transact(hand_off)
    await set_status(ctx, cid, "resolved")
    auth = {"Authorization": f"Bearer {session['customer_token']}"}
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post(f"/api/v1/chat/conversations/{cid}/attachments", headers=auth,
                            files={"file": ("again.png", png_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    async with unit_of_work(ctx.sessions) as db:
        reopened = await db.get(Conversation, cid)
    assert reopened.status == "queued" and reopened.queued_at is not None
    assert reopened.resolution_due_at is not None  # the ticket's targets run again


async def test_many_customers_at_once_are_each_acked_in_order_and_stored_once(live_server, ctx):
    """Customer messages are written in shared transactions (zaima.web.message_writer); each socket still
    gets its own acks in order, two tabs of one conversation never share a seq, and the agent watching
    sees every message exactly once."""
    base = live_server.url
    sessions = [await customer_session(base) for _ in range(12)]
    sockets = [await customer_socket(base, s) for s in sessions]
    first = sessions[0]["conversation"]["id"]
    second_tab = await customer_socket(base, sessions[0])
    await make_agent(ctx)
    agent = await agent_login(base)
    agent_ws = await agent.socket()
    await agent_ws.send({"type": "subscribe", "conversation_id": first, "last_seq": 0})
    await agent_ws.send({"type": "ping"})
    await agent_ws.expect("pong")

    async def chatter(socket, cid, tag):
        return [await say(socket, cid, f"{tag} 第{i}条", msg_id=f"{tag}-{i}") for i in range(5)]

    results = await asyncio.gather(*(chatter(sock, s["conversation"]["id"], f"c{n}")
                                     for n, (sock, s) in enumerate(zip(sockets, sessions, strict=True))),
                                   chatter(second_tab, first, "tab2"))
    for acks in results[1:-1]:
        assert [a["seq"] for a in acks] == [1, 2, 3, 4, 5] and not any(a["duplicate"] for a in acks)
    first_tab, tab2 = results[0], results[-1]
    seqs = sorted(a["seq"] for a in first_tab + tab2)
    assert seqs == list(range(1, 11))  # one conversation, two writers: no seq twice
    assert [a["seq"] for a in first_tab] == sorted(a["seq"] for a in first_tab)  # each socket's order kept
    seen = [await agent_ws.expect("message", conversation_id=first) for _ in range(10)]
    assert sorted(f["message"]["seq"] for f in seen) == seqs
    assert [f for f in await agent_ws.quiet() if f["type"] == "message"] == []
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.get(f"/api/v1/chat/conversations/{first}/messages",
                           headers={"Authorization": f"Bearer {sessions[0]['customer_token']}"})
    assert sorted(m["client_msg_id"] for m in r.json()["messages"]) == sorted(
        [f"c0-{i}" for i in range(5)] + [f"tab2-{i}" for i in range(5)])
    for sock in [*sockets, second_tab, agent_ws]:
        await sock.close()
    await agent.http.aclose()


async def test_a_message_that_fails_does_not_fail_the_others_written_with_it(ctx, monkeypatch):
    """The writer retries a failed batch one message at a time: only the bad one gets the error."""
    customers = [await make_customer(ctx) for _ in range(4)]
    convs = [await make_conversation(ctx, c) for c in customers]
    real_after_post = tickets.after_post

    async def after_post(session, ctx_, conversation, posted):
        if posted.message.body == "坏消息":
            raise RuntimeError("boom")
        return await real_after_post(session, ctx_, conversation, posted)

    monkeypatch.setattr(tickets, "after_post", after_post)
    writer = MessageWriter(ctx)
    texts = ["一", "坏消息", "三", "四"]
    results = await asyncio.gather(*(writer.post(Draft(c.id, Sender.customer(cu), t, f"id-{i}"))
                                     for i, (cu, c, t) in enumerate(zip(customers, convs, texts, strict=True))),
                                   return_exceptions=True)
    await writer.close()
    assert isinstance(results[1], RuntimeError)
    assert [r[1].message.body for i, r in enumerate(results) if i != 1] == ["一", "三", "四"]
    async with unit_of_work(ctx.sessions) as session:  # nothing of the bad message was stored
        bodies = sorted(m.body for m in await session.scalars(select(Message)))
    assert bodies == ["一", "三", "四"]


async def test_closing_the_writer_finishes_the_batch_in_hand_and_refuses_new_messages(ctx, monkeypatch):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    real_after_post = tickets.after_post
    writing = asyncio.Event()

    async def slow_after_post(session, ctx_, c, posted):
        writing.set()
        await asyncio.sleep(0.3)
        return await real_after_post(session, ctx_, c, posted)

    monkeypatch.setattr(tickets, "after_post", slow_after_post)
    writer = MessageWriter(ctx)
    first = asyncio.create_task(writer.post(Draft(conversation.id, Sender.customer(customer), "一", "w-1")))
    await writing.wait()
    queued = asyncio.create_task(writer.post(Draft(conversation.id, Sender.customer(customer), "二", "w-2")))
    await asyncio.sleep(0)
    await writer.close()
    _, posted = await asyncio.wait_for(first, 2)  # the batch being written was committed and answered
    assert posted.message.seq == 1
    with pytest.raises(asyncio.CancelledError):  # not acked: the client sends it again after reconnecting
        await asyncio.wait_for(queued, 2)
    with pytest.raises(RuntimeError):
        await writer.post(Draft(conversation.id, Sender.customer(customer), "三", "w-3"))
    async with unit_of_work(ctx.sessions) as session:
        assert [m.body for m in await session.scalars(select(Message))] == ["一"]
