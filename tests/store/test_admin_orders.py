"""The operator's order list (`GET /api/v1/admin/orders`)."""

from __future__ import annotations

from tests.store.helpers import make_order, make_product
from tests.store.test_stock import ADMIN, make_admin


async def test_the_order_list_shows_the_newest_orders_first_whatever_their_ids(ctx, client, clock):
    """Server processes draw order ids in blocks, so an order made later may have a smaller id: the list still
    follows the time the orders were made, and filters by status."""
    await make_admin(ctx)
    product = await make_product(ctx, sku="list-order")
    first = await make_order(ctx, product, order_id=900)  # one process's block
    clock.advance(seconds=1)
    second = await make_order(ctx, product, order_id=800)  # another's, with lower ids
    clock.advance(seconds=1)
    third = await make_order(ctx, product, order_id=901)
    listed = await client.get("/api/v1/admin/orders", auth=ADMIN)
    assert listed.status_code == 200
    assert [o["order_no"] for o in listed.json()["orders"]] == [third.order_no, second.order_no, first.order_no]
    limited = await client.get("/api/v1/admin/orders", params={"limit": 2, "status": "pending_payment"}, auth=ADMIN)
    assert [o["order_no"] for o in limited.json()["orders"]] == [third.order_no, second.order_no]
    assert (await client.get("/api/v1/admin/orders", params={"status": "delivered"}, auth=ADMIN)).json() == {"orders": []}
