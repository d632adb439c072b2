"""Closing unpaid orders at their deadline, after one last question to the gateway."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from zaima.core.audit import SYSTEM
from zaima.jobs import RetryLater, handler
from zaima.models import Order
from zaima.store import stock, timeline
from zaima.store.delivery import queue_backorders
from zaima.store.epay import EpayError
from zaima.store.orders import transition
from zaima.store.payments import recover_payment


@handler("expire_order")
async def expire_order_job(ctx, payload: dict) -> None:
    # Ask the gateway once more before closing: the notify may have been lost. If the gateway is
    # down, close anyway: a payment that shows up later is still accepted (expired → paid).
    try:
        if await recover_payment(ctx, payload["order_id"]):
            return
    except EpayError:
        pass

    async def expire(session: AsyncSession) -> None:
        order = await session.get(Order, payload["order_id"])
        if order is None or order.status != "pending_payment":
            return
        now = ctx.clock.now()
        if order.expires_at > now:  # run early (another node's clock): come back at the deadline
            raise RetryLater(order.expires_at, "not yet due")
        transition(order, "expired")
        released = await stock.release_reservations(session, order.id)
        await timeline.record(session, order, "expired", SYSTEM, now)
        if released:
            await timeline.record(session, order, "stock_released", SYSTEM, now, quantity=released)
            await queue_backorders(session, ctx, order.product_id)

    await ctx.transact(expire)
