"""Card-key stock under concurrency: one key is never sold twice, on SQLite and on PostgreSQL."""

import asyncio

from sqlalchemy import func, select

from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.core.errors import Conflict
from zaima.db import unit_of_work
from zaima.models import CardKey, Order, Payment
from zaima.staff import create_staff
from zaima.store import delivery, payments, stock

ADMIN = ("ops-admin", "correct horse battery")


async def make_admin(ctx):
    async with unit_of_work(ctx.sessions) as session:
        await create_staff(session, ctx.clock, ADMIN[0], ADMIN[1], role="admin")


async def orders_by_status(ctx, product_id: int) -> dict[str, int]:
    async with unit_of_work(ctx.sessions) as session:
        rows = await session.execute(select(Order.status, func.count()).where(Order.product_id == product_id)
                                     .group_by(Order.status))
        return dict(rows.all())


async def keys_of_product(ctx, product_id: int) -> list[CardKey]:
    async with unit_of_work(ctx.sessions) as session:
        return list(await session.scalars(select(CardKey).where(CardKey.product_id == product_id)
                                          .order_by(CardKey.id)))


async def assert_no_key_sold_twice(ctx, product_id: int) -> list[CardKey]:
    """Every sold key belongs to exactly one delivered-or-partial order, and each order holds as many
    sold keys as it has been told it received; plaintexts are distinct too (not just row ids)."""
    keys = await keys_of_product(ctx, product_id)
    sold = [k for k in keys if k.status == "sold"]
    async with unit_of_work(ctx.sessions) as session:
        order_rows = {o.id: o for o in await session.scalars(select(Order).where(Order.product_id == product_id))}
    per_order: dict[int, int] = {}
    for key in sold:
        assert key.order_id in order_rows, f"sold key {key.id} has no order"
        per_order[key.order_id] = per_order.get(key.order_id, 0) + 1
    for order_id, order in order_rows.items():
        assert per_order.get(order_id, 0) == order.delivered_quantity, order.order_no
        if order.status == "delivered":
            assert order.delivered_quantity == order.quantity
    secrets = [stock.reveal(ctx.box, k) for k in sold]
    assert len(set(secrets)) == len(secrets)
    assert len({k.id for k in sold}) == len(sold)
    return sold


async def test_200_buyers_racing_for_50_keys_get_each_key_once_and_the_rest_after_restock(ctx, client):
    product = await make_product(ctx, sku="race-50", max_quantity=5)
    first_batch = [f"RACE-{i:04d}-ALPHA" for i in range(50)]
    await add_stock(ctx, product, first_batch)

    async def buy(i: int) -> str:
        created = await client.post("/api/v1/orders", json={"sku": "race-50", "quantity": 1,
                                                            "contact": f"buyer{i}@example.com"})
        assert created.status_code == 201, created.text
        order_no = created.json()["order_no"]
        async with unit_of_work(ctx.sessions) as session:
            order = await session.scalar(select(Order).where(Order.order_no == order_no))
        reply = await client.get("/pay/epay/notify", params=notify_params(order, trade_no=f"T{i:08d}"))
        assert (reply.status_code, reply.text) == (200, "success")
        return order_no

    order_nos = await asyncio.gather(*(buy(i) for i in range(200)))
    assert len(set(order_nos)) == 200

    assert await orders_by_status(ctx, product.id) == {"delivered": 50, "awaiting_stock": 150}
    sold = await assert_no_key_sold_twice(ctx, product.id)
    assert len(sold) == 50
    assert {stock.reveal(ctx.box, k) for k in sold} == set(first_batch)
    async with unit_of_work(ctx.sessions) as session:
        holders = list(await session.scalars(select(Order).where(Order.id.in_([k.order_id for k in sold]))))
    assert len(holders) == 50 and {o.status for o in holders} == {"delivered"}
    async with unit_of_work(ctx.sessions) as session:
        assert await session.scalar(select(func.count()).select_from(Payment)) == 200
        assert await stock.available_count(session, product.id) == 0

    # Restock through the admin upload: the 150 waiting orders are delivered from the new keys.
    await make_admin(ctx)
    second_batch = [f"RACE-{i:04d}-BRAVO" for i in range(150)]
    uploaded = await client.post("/api/v1/admin/products/race-50/keys", auth=ADMIN,
                                 files={"file": ("restock.txt", "\n".join(second_batch).encode(), "text/plain")})
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["imported"] == 150
    assert uploaded.json()["backorders_delivered"] == 150

    assert await orders_by_status(ctx, product.id) == {"delivered": 200}
    sold = await assert_no_key_sold_twice(ctx, product.id)
    assert len(sold) == 200
    assert {stock.reveal(ctx.box, k) for k in sold} == set(first_batch) | set(second_batch)
    assert len({k.order_id for k in sold}) == 200


async def test_concurrent_payments_for_backorders_take_available_keys_without_double_selling(ctx):
    """No reservations at all (stock arrived after the orders): every payment takes keys straight
    from available stock, the compare-and-set path."""
    product = await make_product(ctx, sku="cas-sell")
    orders = [await make_order(ctx, product, contact=f"b{i}@example.com") for i in range(60)]
    await add_stock(ctx, product, [f"CAS-{i:03d}" for i in range(25)])  # stock only, no backorder run

    verdicts = await asyncio.gather(*(payments.handle_notify(ctx, notify_params(o, trade_no=f"C{i}"))
                                      for i, o in enumerate(orders)))
    assert verdicts == ["accepted"] * 60
    assert await orders_by_status(ctx, product.id) == {"delivered": 25, "awaiting_stock": 35}
    assert len(await assert_no_key_sold_twice(ctx, product.id)) == 25


async def test_concurrent_restock_runs_deliver_each_waiting_order_once(ctx):
    product = await make_product(ctx, sku="restock", max_quantity=3)
    orders = [await make_order(ctx, product, quantity=2, contact=f"r{i}@example.com") for i in range(20)]
    for i, order in enumerate(orders):
        assert await payments.handle_notify(ctx, notify_params(order, trade_no=f"R{i}")) == "accepted"
    assert await orders_by_status(ctx, product.id) == {"awaiting_stock": 20}
    await add_stock(ctx, product, [f"RS-{i:03d}" for i in range(31)])  # enough for 15.5 orders

    await asyncio.gather(*(ctx.transact(lambda s: delivery.fulfil_backorders(s, ctx, product.id))
                           for _ in range(6)))

    sold = await assert_no_key_sold_twice(ctx, product.id)
    assert len(sold) == 31
    statuses = await orders_by_status(ctx, product.id)
    assert statuses == {"delivered": 15, "awaiting_stock": 5}
    async with unit_of_work(ctx.sessions) as session:
        partial = list(await session.scalars(select(Order).where(Order.product_id == product.id,
                                                                 Order.delivered_quantity == 1)))
    assert len(partial) == 1 and partial[0].status == "awaiting_stock"


async def test_orders_reserve_distinct_keys_and_a_shortfall_without_backorder_changes_nothing(ctx):
    product = await make_product(ctx, sku="no-backorder", allow_backorder=False, max_quantity=5)
    await add_stock(ctx, product, ["NB-1", "NB-2", "NB-3"])
    results = await asyncio.gather(*(make_order(ctx, product, quantity=2, contact=f"n{i}@example.com")
                                     for i in range(4)), return_exceptions=True)
    placed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(placed) == 1 and len(refused) == 3, results
    assert refused[0].message_zh == "库存不足，请减少数量或稍后再来"
    keys = await keys_of_product(ctx, product.id)
    assert sorted(k.status for k in keys) == ["available", "reserved", "reserved"]
    assert {k.order_id for k in keys if k.status == "reserved"} == {placed[0].id}
    async with unit_of_work(ctx.sessions) as session:
        # The refused checkouts left no order rows behind.
        assert await session.scalar(select(func.count()).select_from(Order)) == 1


async def test_payment_sells_the_orders_own_reserved_keys(ctx):
    product = await make_product(ctx, sku="own-keys", max_quantity=5)
    await add_stock(ctx, product, ["OWN-1", "OWN-2", "OWN-3", "OWN-4"])
    first = await make_order(ctx, product, quantity=2)
    second = await make_order(ctx, product, quantity=2, contact="other@example.com")
    reserved_for_second = {k.id for k in await keys_of_product(ctx, product.id) if k.order_id == second.id}
    assert len(reserved_for_second) == 2
    assert await payments.handle_notify(ctx, notify_params(second)) == "accepted"
    keys = await keys_of_product(ctx, product.id)
    assert {k.id for k in keys if k.status == "sold"} == reserved_for_second
    assert {k.status for k in keys if k.order_id == first.id} == {"reserved"}
