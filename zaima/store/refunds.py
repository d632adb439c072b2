"""Refunds of what was not delivered: the whole order, or the undelivered part of it.

Each refund has an idempotency key: asking twice (a double click, a bot retry, a repeated
callback) returns the first refund. The money goes back through the gateway's refund API when it
has one; otherwise the refund is recorded as `manual_pending` for an agent to pay back.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.core.audit import SYSTEM, Actor
from zaima.core.errors import Conflict, ValidationFailed
from zaima.core.money import format_yuan
from zaima.jobs import RetryLater, enqueue, handler
from zaima.models import Order, Refund
from zaima.store import stock, timeline
from zaima.store.epay import EpayError
from zaima.store.orders import transition

REFUNDABLE_STATES = ("paid", "awaiting_stock", "delivery_failed")
# 易支付's refund API has no idempotency key: a request that may have reached the gateway is never
# sent again. Only a connection that was never made is retried, this many times, then staff take over.
GATEWAY_CONNECT_RETRIES_SECONDS = (30, 120, 600, 1800)


class NotRefundable(Conflict):
    code = "not_refundable"


async def refund_undelivered(session: AsyncSession, ctx, order: Order, *, actor: Actor, reason: str,
                             idempotency_key: str, quantity: int | None = None) -> Refund:
    existing = await session.scalar(select(Refund).where(Refund.idempotency_key == idempotency_key))
    if existing is not None:
        if existing.order_id != order.id:
            raise ValidationFailed("幂等键已被其他订单使用", "idempotency key belongs to another order")
        return existing
    if order.status not in REFUNDABLE_STATES:
        if order.status in ("refunded", "partially_refunded"):
            raise NotRefundable("该订单已退款", "the order has already been refunded")
        if order.status == "delivering":
            raise NotRefundable("充值正在处理中，结果出来前不能退款", "the recharge is still in progress")
        if order.status in ("pending_payment", "expired"):
            raise NotRefundable("订单未付款，无需退款", "the order was never paid")
        raise NotRefundable("已发货的商品不能自动退款，如有问题请联系客服", "delivered goods are not refundable here")
    refundable = order.undelivered_quantity
    quantity = refundable if quantity is None else quantity
    if not isinstance(quantity, int) or not (1 <= quantity <= refundable):
        raise ValidationFailed(f"可退数量为 1–{refundable}", f"refundable quantity is 1–{refundable}")
    now = ctx.clock.now()
    amount = quantity * order.unit_price_fen
    order.refunded_quantity += quantity
    order.refunded_fen += amount
    if order.undelivered_quantity == 0:
        await stock.release_reservations(session, order.id)
        transition(order, "refunded" if order.delivered_quantity == 0 else "partially_refunded")
    gateway = ctx.epay is not None and ctx.settings.epay_refund_enabled
    refund = Refund(order_id=order.id, idempotency_key=idempotency_key, quantity=quantity, amount_fen=amount,
                    reason=reason[:1000], actor_kind=actor.kind, actor_id=actor.id,
                    status="processing" if gateway else "manual_pending", created_at=now,
                    conversation_id=actor.conversation_id)
    session.add(refund)
    await session.flush()
    await timeline.record(session, order, "refunded", actor, now, reason=reason, amount=amount,
                          quantity=quantity, refund_id=refund.id)
    if gateway:
        await enqueue(session, ctx, "gateway_refund", {"refund_id": refund.id}, dedupe_key=f"refund:{refund.id}")
    else:
        await timeline.record(session, order, "refund_manual", SYSTEM, now, refund_id=refund.id, amount=amount)
    await session.flush()
    return refund


_REFUNDS_OF = select(Refund).where(Refund.order_id == bindparam("for_order")).order_by(Refund.id)


async def refunds_of(session: AsyncSession, order_id: int) -> list[Refund]:
    return list(await session.scalars(_REFUNDS_OF, {"for_order": order_id}))


@handler("gateway_refund")
async def gateway_refund_job(ctx, payload: dict) -> None:
    async with ctx.sessions() as session:
        refund = await session.get(Refund, payload["refund_id"])
        if refund is None or refund.status != "processing":
            return
        order = await session.get(Order, refund.order_id)
        order_no, money = order.order_no, format_yuan(refund.amount_fen)
    try:
        ok, message = await ctx.epay.refund(order_no, money)
    except EpayError as exc:
        tries = payload.get("connect_failures", 0)
        never_sent = isinstance(exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout)
        if never_sent and tries < len(GATEWAY_CONNECT_RETRIES_SECONDS):
            raise RetryLater(ctx.clock.now() + timedelta(seconds=GATEWAY_CONNECT_RETRIES_SECONDS[tries]),
                             "gateway unreachable", payload={**payload, "connect_failures": tries + 1}) from exc
        ok = False
        message = ("支付平台无法连接，请人工退款" if never_sent
                   else "支付平台未返回退款结果，请先在支付平台核对是否已退款，再人工处理")

    async def record(session: AsyncSession) -> None:
        refund = await session.get(Refund, payload["refund_id"])
        order = await session.get(Order, refund.order_id)
        if refund.status != "processing":
            return
        refund.gateway_response = message[:1000]
        refund.finished_at = ctx.clock.now()
        refund.status = "succeeded" if ok else "manual_pending"
        kind = "refund_succeeded" if ok else "refund_failed"
        await timeline.record(session, order, kind, SYSTEM, ctx.clock.now(), refund_id=refund.id,
                              amount=refund.amount_fen, gateway_message=message[:200])

    await ctx.transact(record)
