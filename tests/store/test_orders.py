"""Orders: guarded transitions, guest checkout that refuses bad input cleanly, and the guest lookup that
tells a stranger nothing."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.core.errors import ValidationFailed
from zaima.db import unit_of_work
from zaima.models import CardKey, Job, Order
from zaima.store import payments
from zaima.store.orders import TRANSITIONS, InvalidTransition, normalize_contact, transition

ALL_STATES = sorted(TRANSITIONS)

# --- transitions ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ALL_STATES)
@pytest.mark.parametrize("target", ALL_STATES)
def test_only_listed_transitions_are_allowed(source, target):
    order = Order(status=source)
    if target in TRANSITIONS[source]:
        transition(order, target)
        assert order.status == target
    else:
        with pytest.raises(InvalidTransition) as err:
            transition(order, target)
        assert order.status == source
        assert err.value.message_zh == f"订单当前状态为「{source}」，不能变为「{target}」"


def test_the_transitions_that_protect_money_and_stock():
    assert "paid" not in TRANSITIONS["delivered"]          # never backwards after delivery
    assert "pending_payment" not in TRANSITIONS["paid"]
    assert "paid" in TRANSITIONS["expired"]                # money after expiry is still taken
    assert TRANSITIONS["refunded"] == set()


async def test_a_delivered_order_cannot_go_back_to_paid(ctx):
    product = await make_product(ctx)
    await add_stock(ctx, product, ["BACK-1"])
    order = await make_order(ctx, product)
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"

    async def go_back(session):
        fresh = await session.get(Order, order.id)
        assert fresh.status == "delivered"
        transition(fresh, "paid")

    with pytest.raises(InvalidTransition):
        await ctx.transact(go_back)
    async with unit_of_work(ctx.sessions) as session:
        fresh = await session.get(Order, order.id)
        assert (fresh.status, fresh.delivered_quantity) == ("delivered", 1)
        version = fresh.version
    assert await payments.handle_notify(ctx, notify_params(order)) == "duplicate"
    async with unit_of_work(ctx.sessions) as session:
        assert (await session.get(Order, order.id)).version == version


# --- checkout -------------------------------------------------------------------------------------------------


async def test_checkout_prices_in_fen_reserves_stock_and_schedules_requery_and_expiry(ctx, client, clock):
    product = await make_product(ctx, sku="co-1", price_fen=1999, max_quantity=5)
    await add_stock(ctx, product, ["CO-1", "CO-2", "CO-3"])
    reply = await client.post("/api/v1/orders", json={"sku": "co-1", "quantity": 3, "contact": "a@example.com"})
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["amount"] == "59.97" and body["status"] == "pending_payment"
    async with unit_of_work(ctx.sessions) as session:
        order = await session.scalar(select(Order).where(Order.order_no == body["order_no"]))
        assert (order.amount_fen, order.unit_price_fen) == (5997, 1999)
        reserved = await session.scalar(select(func.count()).select_from(CardKey)
                                        .where(CardKey.order_id == order.id, CardKey.status == "reserved"))
        assert reserved == 3
        due = {j.kind: j.run_at for j in await session.scalars(select(Job))}
    assert due == {"expire_order": clock.now() + timedelta(minutes=ctx.settings.order_ttl_minutes),
                   "requery_payment": clock.now() + timedelta(minutes=2)}


async def _nothing_happened(ctx) -> None:
    async with unit_of_work(ctx.sessions) as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 0
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
        statuses = set(await session.scalars(select(CardKey.status)))
        assert statuses <= {"available"}


BAD_CHECKOUTS = [  # (what the buyer sent, HTTP status, the message they see)
    ({"quantity": 11}, 422, "购买数量需在 1–10 之间"),
    ({"quantity": 0}, 422, "请求内容有误，请检查：quantity"),
    ({"contact": "not a contact"}, 422, "请填写正确的邮箱或 11 位手机号，用于查询订单和接收通知"),
    ({"contact": "12345678901"}, 422, "请填写正确的邮箱或 11 位手机号，用于查询订单和接收通知"),
    ({"pay_type": "paypal"}, 422, "不支持的支付方式"),
    ({"contact": "a\x01b@example.com"}, 422, "请填写正确的邮箱或 11 位手机号，用于查询订单和接收通知"),  # control char
    ({"query_password": "abc"}, 422, "查询密码需 4–64 位，且不含控制字符"),
    ({"query_password": "abcd\x00"}, 422, "查询密码需 4–64 位，且不含控制字符"),
    ({"sku": "no-such-sku"}, 404, "商品不存在或已下架"),
    ({"sku": "off-sale"}, 404, "商品不存在或已下架"),
    ({"sku": "co-bad\x00"}, 404, "商品不存在或已下架"),  # was an HTTP 500 on PostgreSQL (NUL in text)
]


async def test_bad_checkout_gets_a_clear_chinese_error_and_changes_nothing(ctx, client):
    product = await make_product(ctx, sku="co-bad")
    await make_product(ctx, sku="off-sale", active=False)
    await add_stock(ctx, product, ["BAD-1", "BAD-2"])
    for body, status, message in BAD_CHECKOUTS:
        reply = await client.post("/api/v1/orders", json={"sku": "co-bad", "quantity": 1,
                                                          "contact": "a@example.com", **body})
        assert reply.status_code == status, (body, reply.text)
        assert reply.json()["error"]["message"] == message, body
        await _nothing_happened(ctx)
    assert (await client.post("/api/v1/orders", json={"sku": "co-bad", "contact": "a@example.com"})).status_code == 201


async def test_an_unreadable_or_incomplete_checkout_body_is_refused_by_name_and_documented(ctx, client):
    reply = await client.post("/api/v1/orders", content=b'{"sku": "co-x", ', headers={"content-type": "application/json"})
    assert reply.status_code == 422 and reply.json()["error"]["message"].startswith("请求内容有误")
    reply = await client.post("/api/v1/orders", json={"sku": "co-x"})
    assert reply.status_code == 422 and reply.json()["error"]["message"] == "请求内容有误，请检查：contact"
    await _nothing_happened(ctx)
    # The route reads its body and token itself; OpenAPI still shows both.
    api = (await client.get("/openapi.json")).json()["paths"]
    body = api["/api/v1/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["sku", "contact"] and "quantity" in body["properties"]
    assert "x-order-token" in [p["name"] for p in api["/api/v1/orders/{order_no}"]["get"]["parameters"]]


async def test_a_product_sku_must_be_plain_ascii(ctx):
    for sku in ["abc\n", "abc\x00", "-abc", "a b", "商品", "", "x" * 65]:
        with pytest.raises(ValidationFailed) as err:
            await make_product(ctx, sku=sku)
        assert err.value.message_zh == "SKU 只能包含字母、数字、点、下划线和短横线", repr(sku)
    assert (await make_product(ctx, sku="Game_60.cn-1")).sku == "Game_60.cn-1"


async def test_recharge_inputs_are_checked_against_the_product_fields(ctx, client):
    await make_product(ctx, sku="game-60", kind="recharge")
    bad = await client.post("/api/v1/orders", json={"sku": "game-60", "contact": "a@example.com",
                                                    "inputs": {"uid": "12ab"}})
    assert bad.status_code == 422
    assert bad.json()["error"]["message"] == "游戏UID格式不正确"
    missing = await client.post("/api/v1/orders", json={"sku": "game-60", "contact": "a@example.com"})
    assert missing.json()["error"]["message"] == "请填写游戏UID"
    await _nothing_happened(ctx)
    good = await client.post("/api/v1/orders", json={"sku": "game-60", "contact": "a@example.com",
                                                     "inputs": {"uid": " 123456789 ", "other": "ignored"}})
    assert good.status_code == 201
    async with unit_of_work(ctx.sessions) as session:
        order = await session.scalar(select(Order))
        assert order.recharge_inputs == {"uid": "123456789"}


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("13800138000", ("phone", "13800138000")),
        ("+86 138 0013 8000", ("phone", "13800138000")),
        ("+8613800138000", ("phone", "13800138000")),
        ("0086-138-0013-8000", ("phone", "13800138000")),
        ("(138) 0013 8000", ("phone", "13800138000")),
        ("  Buyer@Example.COM ", ("email", "buyer@example.com")),
        # Full-width digits and signs, as a Chinese IME types them.
        ("１３８００１３８０００", ("phone", "13800138000")),
        ("＋８６ １３８ ００１３ ８０００", ("phone", "13800138000")),
        ("13８００１３８０００", ("phone", "13800138000")),
        ("ｂｕｙｅｒ＠ｅｘａｍｐｌｅ．ｃｏｍ", ("email", "buyer@example.com")),
    ],
)
def test_contacts_are_normalized(typed, expected):
    assert normalize_contact(typed) == expected


@pytest.mark.parametrize("typed", ["", "12800138000", "1380013800", "+1 415 555 0100", "buyer@", "a b@c.com"])
def test_bad_contacts_are_refused_in_chinese(typed):
    with pytest.raises(ValidationFailed) as err:
        normalize_contact(typed)
    assert err.value.message_zh.startswith("请填写正确的邮箱或 11 位手机号")


# --- guest lookup ---------------------------------------------------------------------------------------------


async def paid_order(ctx, contact: str, secret: str, query_password: str | None = None):
    product = await make_product(ctx, sku=f"lk-{secret.lower()}")
    await add_stock(ctx, product, [secret])
    order = await make_order(ctx, product, contact=contact, query_password=query_password)
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    return order


def dashed_lower(order_no: str) -> str:
    return "-".join(order_no[i:i + 4] for i in (0, 4, 8)).lower()


async def test_lookup_with_the_right_contact_in_any_spelling_returns_the_order_and_its_keys(ctx, client):
    phone_order = await paid_order(ctx, "13800138000", "PHONE-KEY-1")
    mail_order = await paid_order(ctx, "Buyer@Example.com", "MAIL-KEY-1", query_password="pass-1234")
    attempts = [
        (phone_order, {"contact": "13800138000"}, "PHONE-KEY-1"),
        (phone_order, {"contact": "+86 138 0013 8000"}, "PHONE-KEY-1"),
        (phone_order, {"contact": "138 0013 8000"}, "PHONE-KEY-1"),
        (phone_order, {"contact": "１３８ ００１３ ８０００"}, "PHONE-KEY-1"),
        (mail_order, {"contact": " BUYER@example.COM "}, "MAIL-KEY-1"),
        (mail_order, {"query_password": "pass-1234"}, "MAIL-KEY-1"),
    ]
    for order, proof, secret in attempts:
        reply = await client.post("/api/v1/orders/lookup", json={"order_no": dashed_lower(order.order_no), **proof})
        assert reply.status_code == 200, (proof, reply.text)
        body = reply.json()
        assert body["order"]["order_no"] == order.order_no
        assert body["order"]["status"] == "delivered"
        assert [k["secret"] for k in body["order"]["keys"]] == [secret]
        # The token it hands out opens the order page API.
        again = await client.get(f"/api/v1/orders/{order.order_no}", headers={"X-Order-Token": body["access_token"]})
        assert again.status_code == 200 and again.json()["keys"] == body["order"]["keys"]


async def test_every_failed_lookup_looks_the_same(ctx, client):
    order = await paid_order(ctx, "13800138000", "SAME-KEY-1", query_password="right-pass")
    other = await paid_order(ctx, "other@example.com", "SAME-KEY-2")
    misses = [
        {"order_no": order.order_no, "contact": "13900139000"},          # wrong contact
        {"order_no": order.order_no, "contact": "other@example.com"},    # someone else's contact
        {"order_no": order.order_no, "query_password": "wrong-pass"},    # wrong query password
        {"order_no": other.order_no, "query_password": "right-pass"},    # no password set on that order
        {"order_no": "ZZZZ-ZZZZ-ZZZZ", "contact": "13800138000"},         # unknown order
        {"order_no": "not an order", "contact": "13800138000"},          # not even an order number
        {"order_no": order.order_no},                                     # no proof at all
    ]
    replies = [await client.post("/api/v1/orders/lookup", json=body) for body in misses]
    assert {r.status_code for r in replies} == {404}
    bodies = {r.text for r in replies}
    assert len(bodies) == 1, bodies
    error = replies[0].json()["error"]
    assert error["code"] == "order_lookup_failed"
    assert error["message"] == "未找到匹配的订单，请核对订单号和联系方式（或查询密码）"
    assert "SAME-KEY" not in replies[0].text


async def test_repeated_failed_lookups_of_one_order_are_rate_limited(ctx, client):
    order = await paid_order(ctx, "13800138000", "RATE-KEY-1")
    limit = ctx.settings.lookup_rate_per_order
    for _ in range(limit):
        miss = await client.post("/api/v1/orders/lookup", json={"order_no": order.order_no, "contact": "13900139000"})
        assert miss.status_code == 404
    # Now even the right contact is refused for a while: guessing cannot go on.
    blocked = await client.post("/api/v1/orders/lookup", json={"order_no": dashed_lower(order.order_no),
                                                               "contact": "13800138000"})
    assert blocked.status_code == 429
    assert blocked.json()["error"]["message"] == "尝试次数过多，请稍后再试"
    assert "RATE-KEY" not in blocked.text


async def test_one_address_cannot_sweep_many_orders(ctx, client):
    limit = ctx.settings.lookup_rate_per_ip
    for i in range(limit):
        miss = await client.post("/api/v1/orders/lookup", json={"order_no": f"ZZZZZZZZZZ{i:02d}",
                                                                "contact": "13800138000"})
        assert miss.status_code == 404
    blocked = await client.post("/api/v1/orders/lookup", json={"order_no": "YYYYYYYYYYYY", "contact": "13800138000"})
    assert blocked.status_code == 429
    assert blocked.json()["error"]["message"] == "尝试次数过多，请稍后再试"


async def test_order_api_without_the_right_token_looks_like_a_miss(ctx, client):
    order = await paid_order(ctx, "13800138000", "TOKEN-KEY-1")
    for headers in ({}, {"X-Order-Token": "forged"}):
        reply = await client.get(f"/api/v1/orders/{order.order_no}", headers=headers)
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "order_lookup_failed"
        assert "TOKEN-KEY" not in reply.text
