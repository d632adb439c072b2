"""Input no endpoint could use gets a clear refusal in Chinese, never a 500, and changes nothing.

Each case here once answered 500 (or stored something every later read failed on, or held the server):
found by sending malformed input to every route of the running demo. Grouped by what guards it: the JSON
guard in front of every route, the signed-token checks, the database's range, the product's input rules,
the calendar, the framework's own errors, and the sockets.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from sqlalchemy import func, select

from tests.service.helpers import make_agent
from tests.store.helpers import add_stock, make_order, make_product
from tests.web.chat_helpers import Client, agent_login, customer_session, customer_socket, say, ws_url
from tests.web.chat_helpers import make_agent as make_chat_agent
from zaima.db import unit_of_work
from zaima.models import KbArticle, Order, Product

PASSWORD = "password-123"  # tests.service.helpers.make_agent's password
ADMIN = ("boss", PASSWORD)
JSON = {"content-type": "application/json"}
LONE = "<lone surrogate>"


def raw(doc) -> str:
    """`doc` as JSON, with every LONE string written as `"x\ud800"`: the escape of half a UTF-16 pair, which
    decodes to no character at all (a client can send it; `json.dumps` of a str never writes it)."""
    return json.dumps(doc).replace(json.dumps(LONE), '"x\\ud800"')


async def count(ctx, model) -> int:
    async with ctx.sessions() as session:
        return await session.scalar(select(func.count()).select_from(model))


def refused(r: httpx.Response, status: int, words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert words in error["message"] and error["message_en"], error


async def test_json_that_nothing_could_store_is_refused_before_any_route(client, ctx):
    product = await make_product(ctx, sku="guard-1", kind="recharge", input_fields=[{"name": "note"}])
    body = raw({"sku": "guard-1", "contact": "a@b.cc", "inputs": {"note": LONE}})
    refused(await client.post("/api/v1/orders", content=body, headers=JSON), 422, "不成对的 Unicode 代理项")
    huge = json.dumps({"sku": "guard-1", "contact": "a@b.cc", "quantity": 2**64})
    refused(await client.post("/api/v1/orders", content=huge, headers=JSON), 422, "数字超出范围")
    deep = "[" * 100_000 + "]" * 100_000
    refused(await client.post("/api/v1/orders", content=deep, headers=JSON), 422, "嵌套层级过深")
    assert await count(ctx, Order) == 0

    # A surrogate *pair* is an ordinary character (an emoji): it passes, and the order is placed.
    fine = '{"sku": "guard-1", "contact": "a@b.cc", "inputs": {"note": "\\ud83d\\ude00 ok"}}'
    r = await client.post("/api/v1/orders", content=fine, headers=JSON)
    assert r.status_code == 201, r.text
    async with ctx.sessions() as session:
        assert (await session.scalar(select(Order.recharge_inputs))) == {"note": "😀 ok"}
    assert product.id


async def test_admin_input_that_would_break_the_storefront_is_refused(api, ctx):
    bad_label = raw({"sku": "g-2", "kind": "recharge", "name": "n", "price": "1.00",
                     "input_fields": [{"name": "uid", "label": LONE}]})
    refused(await api.post("/api/v1/admin/products", content=bad_label, headers=JSON, auth=ADMIN), 422, "代理项")
    bad_faq = raw({"title": "t", "questions": [LONE], "answer": "a"})
    refused(await api.post("/api/v1/admin/kb/articles", content=bad_faq, headers=JSON, auth=ADMIN), 422, "代理项")
    assert await count(ctx, Product) == 0 and await count(ctx, KbArticle) == 0
    assert (await api.get("/api/v1/products")).status_code == 200


@pytest.mark.parametrize("pattern, words", [
    ("(a+)+b", "过于复杂"),  # 26 characters of input held the whole server for seconds, each one more doubled it
    ("(x|x)*y", "过于复杂"),
    ("(a?){25}a{25}", "过于复杂"),  # 2^25 ways to place the optional a's
    (r"\d*\d*\d*\d*\d*\d*x", "过于复杂"),  # 40 digits took seconds
    ("a{4294967296}", "格式规则无效"),
    ("(" * 500 + ")" * 500, "input_fields.0.pattern"),  # over 200 characters: the field is named
])
async def test_input_rules_that_could_hang_the_server_are_refused(api, ctx, pattern, words):
    body = {"sku": "rule-1", "kind": "recharge", "name": "n", "price": "1.00",
            "input_fields": [{"name": "uid", "pattern": pattern}]}
    refused(await api.post("/api/v1/admin/products", json=body, auth=ADMIN), 422, words)
    assert await count(ctx, Product) == 0


async def test_ordinary_input_rules_still_work_and_control_characters_are_refused(api, ctx):
    body = {"sku": "rule-2", "kind": "recharge", "name": "n", "price": "1.00",
            "input_fields": [{"name": "uid", "label": "游戏 UID", "pattern": r"[1-9]\d{8}"},
                             {"name": "code", "label": "兑换码", "pattern": r"([A-Z0-9]{4}-){3}[A-Z0-9]{4}",
                              "required": False},
                             {"name": "ip", "label": "IP", "pattern": r"(\d{1,3}\.){3}\d{1,3}", "required": False},
                             {"name": "area", "label": "区服", "pattern": r"(\d{3}-)?\d{2,4}", "required": False},
                             {"name": "note", "label": "备注", "required": False}]}
    assert (await api.post("/api/v1/admin/products", json=body, auth=ADMIN)).status_code == 201
    order = {"sku": "rule-2", "contact": "a@b.cc", "inputs": {"uid": "123456789", "area": "010-21"}}
    assert (await api.post("/api/v1/orders", json=order)).status_code == 201
    order["inputs"]["note"] = "a\x00b"
    refused(await api.post("/api/v1/orders", json=order), 422, "备注含有无法识别的字符")


async def test_control_characters_in_a_products_input_fields_and_totals_past_the_limit_are_refused(api, ctx):
    body = {"sku": "opt-1", "kind": "recharge", "name": "n", "price": "1.00",
            "input_fields": [{"name": "server", "label": "区服", "options": ["一区\x00", "二区"]}]}
    refused(await api.post("/api/v1/admin/products", json=body, auth=ADMIN), 422, "控制字符")
    refused(await api.post("/api/v1/admin/products", json={**body, "price": "30000000.00", "input_fields": [
        {"name": "server", "label": "区服"}]}, auth=ADMIN), 422, "价格超出上限")
    await make_product(ctx, sku="big-1", price_fen=3_000_000, max_quantity=1000)  # ¥30,000 a piece
    order = {"sku": "big-1", "contact": "a@b.cc", "quantity": 1000}
    refused(await api.post("/api/v1/orders", json=order), 422, "订单金额超出上限")
    assert await count(ctx, Order) == 0


async def test_a_stored_rule_an_older_version_accepted_does_not_block_other_edits(api, ctx):
    product = await make_product(ctx, sku="old-rule", kind="recharge")
    async with unit_of_work(ctx.sessions) as session:  # saved before the rule check existed
        (await session.get(Product, product.id)).input_fields = [{"name": "uid", "pattern": "(a+)+b"}]
    r = await api.patch("/api/v1/admin/products/old-rule", json={"price": "2.00", "active": False}, auth=ADMIN)
    assert r.status_code == 200, r.text
    refused(await api.patch("/api/v1/admin/products/old-rule", json={"input_fields": [
        {"name": "uid", "pattern": "(a+)+b"}]}, auth=ADMIN), 422, "过于复杂")  # changing the rules checks them


async def test_a_json_body_in_utf16_is_checked_like_utf8(client):
    chat = (await client.post("/api/v1/chat/session", json={})).json()
    body = raw({"round": 1, "rating": 5, "comment": LONE}).encode("utf-16")
    r = await client.post(f"/api/v1/chat/conversations/{chat['conversation']['id']}/csat", content=body,
                          headers={**JSON, "Authorization": f"Bearer {chat['customer_token']}"})
    refused(r, 422, "代理项")


async def test_a_product_field_cannot_be_patched_to_null_or_hold_nul(api, ctx):
    await make_product(ctx, sku="patch-1")
    refused(await api.patch("/api/v1/admin/products/patch-1", json={"name": None}, auth=ADMIN), 422, "不能设为空")
    refused(await api.patch("/api/v1/admin/products/patch-1", json={"active": None}, auth=ADMIN), 422, "不能设为空")
    refused(await api.patch("/api/v1/admin/products/patch-1", json={"name": "a\x00b"}, auth=ADMIN), 422, "空字符")
    ok = await api.patch("/api/v1/admin/products/patch-1", json={"replaceable": None, "name": "新名字"}, auth=ADMIN)
    assert ok.status_code == 200 and ok.json()["name"] == "新名字"


async def test_order_tokens_with_any_character_are_just_wrong_tokens(client, ctx):
    product = await make_product(ctx, sku="tok-1")
    await add_stock(ctx, product, ["TOK-1-KEY-0001"])
    order = await make_order(ctx, product)
    no = order.order_no
    for r in (await client.get(f"/api/v1/orders/{no}", params={"t": "é"}),
              await client.get(f"/api/v1/orders/{no}", headers={"X-Order-Token": "é".encode()}),
              await client.get(f"/api/v1/orders/{no}", headers={"cookie": f"zo_{no}=令牌".encode()}),
              await client.post(f"/api/v1/orders/{no}/check-payment", params={"t": "令牌"})):
        assert r.status_code == 404 and "未找到" in r.json()["error"]["message"], r.text
    page = await client.get(f"/orders/{no}", params={"t": "é"})
    assert page.status_code < 500
    back = await client.get(f"/pay/epay/return/{no}/é")
    assert back.status_code < 500


@pytest.mark.parametrize("number", [2**40, 2**70])  # past PostgreSQL's int32 ids; past any 64-bit integer
async def test_numbers_past_the_databases_range_are_refused_not_500(client, number):
    chat = (await client.post("/api/v1/chat/session", json={})).json()
    headers = {"Authorization": f"Bearer {chat['customer_token']}"}
    cid = chat["conversation"]["id"]
    for path in (f"/api/v1/chat/conversations/{number}/messages",
                 f"/api/v1/chat/conversations/{cid}/messages?after_seq={number}",
                 f"/chat/attachments/{number}/x"):
        r = await client.get(path, headers=headers)
        assert r.status_code in (200, 404, 422), (path, r.status_code, r.text)  # never 500
        if r.status_code == 422:
            assert "数字超出范围" in r.json()["error"]["message"]


async def test_the_frameworks_own_refusals_speak_chinese(api):
    hours = {"timezone": "Asia/Shanghai", "weekly": {d: [["10:00", "20:00"]] for d in
                                                     ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}
    assert (await api.put("/api/v1/admin/settings/service-hours", json=hours, auth=ADMIN)).status_code == 200
    r = await api.get("/api/v1/no-such-thing")
    assert r.status_code == 404 and r.json()["error"]["message"] == "找不到这个地址"
    page = await api.get("/no-such-page", headers={"accept": "text/html"})
    assert page.status_code == 404 and "没有找到这个页面" in page.text
    assert "10:00–20:00" in page.text  # the store's own hours in the footer, not the defaults
    r = await api.delete("/api/v1/products")
    assert r.status_code == 405 and r.json()["error"]["message"] == "不支持这种请求方式"
    for auth in ({}, {"Authorization": "Basic !!!"}):
        r = await api.get("/api/v1/admin/orders", headers=auth)
        assert r.status_code == 401 and "请先登录" in r.json()["error"]["message"]
        assert r.headers["www-authenticate"].startswith("Basic")
    r = await api.post("/api/v1/orders", content=b'{"sku": "\xff\xfe"}', headers=JSON)
    assert r.status_code in (400, 422) and "message" in r.json()["error"]
    assert all("\u4e00" <= ch <= "\u9fff" for ch in r.json()["error"]["message"][:2])


async def test_service_hours_with_dates_no_calendar_holds(api):
    for day in ("9999-12-31", "0001-01-01"):
        r = await api.put("/api/v1/admin/settings/service-hours", json={"special": {day: [["09:00", "18:00"]]}},
                          auth=ADMIN)
        refused(r, 422, "超出范围")


async def test_odd_forms_and_callbacks_get_answers_not_errors(api, ctx):
    r = await api.post("/console/login", data={"username": "boss", "password": PASSWORD},
                       headers={"origin": "http://[::1"})
    assert r.status_code < 500 and r.status_code != 303  # refused as cross-site, not crashed
    r = await api.post("/console/login", data={"username": "boss\x00", "password": PASSWORD})
    assert r.status_code == 401 and "用户名或密码错误" in r.text  # the login page, not a database error
    r = await api.post("/rate/not-a-token", data={"rating": "²"})  # '²'.isdigit() is True; int('²') fails
    assert r.status_code == 404 and "评价链接无效" in r.text
    r = await api.post("/supplier/callback", json={"sign": "é", "request_id": "x"})
    assert r.status_code == 400
    r = await api.post("/supplier/callback", content="[" * 100_000, headers={"content-type": "text/plain"})
    assert r.status_code == 400


@pytest.fixture
async def api(settings, ctx):
    from zaima.app import create_app

    await make_agent(ctx, ADMIN[0], role="admin")
    app = create_app(settings, ctx=ctx, migrate=False)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://zaima.test") as http:
        yield http


async def test_socket_frames_nothing_could_store_get_error_frames_and_the_socket_lives(live_server, ctx):
    base = live_server.url
    session = await customer_session(base)
    cid = session["conversation"]["id"]
    customer = await customer_socket(base, session)
    await customer.send(raw({"type": "send", "conversation_id": cid, "client_msg_id": LONE, "text": "hi"}))
    error = await customer.expect("error")
    assert error["code"] == "invalid" and "代理项" in error["message"]
    await customer.send(json.dumps({"type": "read", "conversation_id": cid, "seq": 2**64}))
    assert "数字超出范围" in (await customer.expect("error"))["message"]
    await customer.send({"type": "read", "conversation_id": cid, "seq": 2**40})  # fits int64, not an int32 column
    await customer.quiet(0.3)
    assert (await say(customer, cid, "还在吗"))["type"] == "ack"  # the socket still serves

    # An auth frame with such a value is a failed login, not a crashed socket nor a "try again" loop.
    for auth in (raw({"type": "auth", "token": LONE, "conversation_id": cid}),
                 json.dumps({"type": "auth", "token": session["customer_token"], "conversation_id": cid,
                             "last_seq": 2**31})):
        ws = await websockets.connect(ws_url(base, "/ws/customer"))
        await ws.send(auth)
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 4001

    await make_chat_agent(ctx)
    agent = await agent_login(base)
    agent_ws: Client = await agent.socket()
    await agent_ws.send({"type": "read", "conversation_id": 999_999, "seq": 1})
    assert (await agent_ws.expect("error"))["code"] == "not_found"
    # A refused subscribe subscribes to nothing: the customer's next message does not reach this agent.
    await agent_ws.send({"type": "subscribe", "conversation_id": cid, "last_seq": 2**31})
    assert (await agent_ws.expect("error"))["code"] == "invalid"
    await say(customer, cid, "有人吗")
    assert not [f for f in await agent_ws.quiet(0.5) if f["type"] == "message"]
    await agent_ws.send({"type": "ping"})
    await agent_ws.expect("pong")
    await customer.close()
    await agent_ws.close()
    await agent.http.aclose()
