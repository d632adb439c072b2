"""The owner's view of an order: on PostgreSQL read in one statement (order, product, timeline, payment and
keys as arrays of records), it must show exactly what the separate reads show."""

from __future__ import annotations

from sqlalchemy import select

from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.db import read_only, unit_of_work
from zaima.models import Order
from zaima.store import payments
from zaima.store.views import order_view, owner_view


async def _both(ctx, order_no: str) -> tuple[dict, dict]:
    async with read_only(ctx.sessions) as session:
        one_read = await owner_view(session, ctx, order_no)
    async with unit_of_work(ctx.sessions) as session:
        order = await session.scalar(select(Order).where(Order.order_no == order_no))
        separate = await order_view(session, ctx, order, reveal_keys=True)
    return one_read, separate


async def test_a_delivered_orders_view_read_at_once_equals_the_view_from_separate_reads(ctx):
    product = await make_product(ctx, sku="view-delivered", usage_instructions="在游戏内兑换")
    await add_stock(ctx, product, ["VIEW-KEY-0001", "VIEW-KEY-0002", "VIEW-KEY-0003"])
    order = await make_order(ctx, product, quantity=2)
    assert await payments.handle_notify(ctx, notify_params(order, trade_no="T-VIEW-1")) == "accepted"
    one_read, separate = await _both(ctx, order.order_no)
    assert one_read == separate
    # And it is the real thing: both keys in plaintext, in order, the payment, the timeline with times.
    assert one_read["status"] == "delivered" and one_read["usage_instructions"] == "在游戏内兑换"
    assert [k["secret"] for k in one_read["keys"]] == ["VIEW-KEY-0001", "VIEW-KEY-0002"]
    assert one_read["payment"]["trade_no"] == "T-VIEW-1" and one_read["payment"]["amount"] == "60.00"
    assert [e["kind"] for e in one_read["timeline"]] == ["created", "stock_reserved", "paid", "delivered"]
    assert one_read["paid_at"].endswith("+00:00") and one_read["timeline"][0]["at"].endswith("+00:00")


async def test_an_unpaid_orders_view_has_no_payment_and_no_keys_and_an_unknown_order_has_none(ctx):
    product = await make_product(ctx, sku="view-unpaid")
    await add_stock(ctx, product, ["VIEW-KEY-0101"])
    order = await make_order(ctx, product)
    one_read, separate = await _both(ctx, order.order_no)
    assert one_read == separate
    assert one_read["status"] == "pending_payment" and one_read["payment"] is None and one_read["keys"] == []
    async with read_only(ctx.sessions) as session:
        assert await owner_view(session, ctx, "NOSUCHORDER0") is None
