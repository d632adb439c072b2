"""Delivery after payment: card keys from stock, or a 直充 request at the supplier.

Never "delivered" without the goods: a short stock leaves the order `awaiting_stock` with what
could be delivered, and restocking delivers the rest oldest-first.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.core.audit import SYSTEM, Actor
from zaima.db import append_row
from zaima.jobs import enqueue, handler
from zaima.models import DeliveryAttempt, Order, Product, SupplierOrder
from zaima.store import stock, timeline
from zaima.store.orders import transition


async def deliver(session: AsyncSession, ctx, order, actor: Actor = SYSTEM, product=None) -> None:
    """Start delivery of a paid order (status `paid`). The order's own changes are the caller's to write
    (`orders.save`, or the flush of an ORM order); `product` is the order's, when the caller has it."""
    product = product or await session.get(Product, order.product_id)
    if product.is_stocked:
        await deliver_from_stock(session, ctx, order, actor)
    else:
        await start_recharge(session, ctx, order, product)


async def deliver_from_stock(session: AsyncSession, ctx, order, actor: Actor = SYSTEM) -> int:
    now = ctx.clock.now()
    need = order.undelivered_quantity
    if need <= 0:
        return 0
    got = await stock.sell_keys(session, order.product_id, order.id, need, now)
    order.delivered_quantity += got
    complete = order.undelivered_quantity == 0
    if complete:
        transition(order, "delivered")
        order.delivered_at = now
    elif order.status != "awaiting_stock":
        transition(order, "awaiting_stock")
    result = "delivered" if complete else ("partial" if got else "short")
    await append_row(session, DeliveryAttempt, order_id=order.id, at=now, method="stock", result=result,
                     quantity=got, detail=f"need {need}, delivered {got}")
    if complete:
        await timeline.record(session, order, "delivered", actor, now, quantity=got)
    elif got:
        await timeline.record(session, order, "partially_delivered", actor, now, quantity=got,
                              missing=order.undelivered_quantity)
    else:
        await timeline.record(session, order, "awaiting_stock", actor, now, missing=need)
    return got


async def fulfil_backorders(session: AsyncSession, ctx, product_id: int) -> int:
    """Deliver waiting orders of a product, oldest payment first, while stock lasts."""
    delivered = 0
    orders = await session.scalars(
        select(Order)
        .where(Order.product_id == product_id, Order.status == "awaiting_stock")
        .order_by(Order.paid_at, Order.id)
    )
    for order in list(orders):
        if await stock.available_count(session, product_id) == 0:
            break
        if await deliver_from_stock(session, ctx, order):
            delivered += 1
    return delivered


async def queue_backorders(session: AsyncSession, ctx, product_id: int) -> None:
    await enqueue(session, ctx, "fulfil_backorders", {"product_id": product_id},
                  dedupe_key=f"backorders:{product_id}")


@handler("fulfil_backorders")
async def fulfil_backorders_job(ctx, payload: dict) -> None:
    await ctx.transact(lambda session: fulfil_backorders(session, ctx, payload["product_id"]))


async def start_recharge(session: AsyncSession, ctx, order, product) -> None:
    now = ctx.clock.now()
    transition(order, "delivering")
    attempt_no = 1 + len(list(await session.scalars(select(SupplierOrder.id).where(SupplierOrder.order_id == order.id))))
    supplier_order = SupplierOrder(
        order_id=order.id,
        supplier=getattr(ctx.supplier, "name", "default"),
        request_id=f"{order.order_no}-{attempt_no}",
        status="pending",
        created_at=now,
        log=[],
    )
    session.add(supplier_order)
    await session.flush()
    await append_row(session, DeliveryAttempt, order_id=order.id, at=now, method="supplier", result="submitted",
                     quantity=order.quantity, detail=supplier_order.request_id)
    await enqueue(session, ctx, "supplier_submit", {"supplier_order_id": supplier_order.id},
                  dedupe_key=f"supplier_submit:{supplier_order.id}")
