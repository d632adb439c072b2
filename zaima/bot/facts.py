"""What the bot knows about an order, read through the store's own services: a plain snapshot the
playbooks decide on. Nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.models import Order, Product, SupplierOrder
from zaima.store import aftersales, stock
from zaima.store.payments import payment_of
from zaima.store.policy import AfterSales, product_after_sales
from zaima.store.refunds import refunds_of

DELIVERS_KEYS = ("card_key", "license", "account")


@dataclass
class RechargeFacts:
    supplier_order_id: int
    status: str  # pending | submitted | accepted | succeeded | failed
    request_id: str
    supplier_order_no: str | None
    finished_at: datetime | None
    message: str


@dataclass
class OrderFacts:
    order: Order
    product: Product
    policy: AfterSales
    status: str
    paid_at: datetime | None
    delivered_at: datetime | None
    minutes_since_payment: float | None
    hours_since_delivery: float | None
    times_replaced: int
    stock_available: int
    refunded_at: datetime | None
    recharge: RechargeFacts | None

    @property
    def kind(self) -> str:
        return self.product.kind

    @property
    def delivers_keys(self) -> bool:
        return self.product.kind in DELIVERS_KEYS

    @property
    def nothing_delivered(self) -> bool:
        return self.order.delivered_quantity == 0


async def order_facts(session: AsyncSession, order: Order, now: datetime) -> OrderFacts:
    product = await session.get(Product, order.product_id)
    # Only what the order's state can need: a turn's latency is mostly these lookups.
    refunds = await refunds_of(session, order.id) if order.refunded_fen else []
    recharge = None
    if product.kind == "recharge":
        so = await session.scalar(select(SupplierOrder).where(SupplierOrder.order_id == order.id)
                                  .order_by(SupplierOrder.id.desc()).limit(1))
        if so is not None:
            recharge = RechargeFacts(so.id, so.status, so.request_id, so.supplier_order_no, so.finished_at,
                                     so.message or "")
    return OrderFacts(
        order=order,
        product=product,
        policy=await product_after_sales(session, product),
        status=order.status,
        paid_at=order.paid_at,
        delivered_at=order.delivered_at,
        minutes_since_payment=(now - order.paid_at).total_seconds() / 60 if order.paid_at else None,
        hours_since_delivery=(now - order.delivered_at).total_seconds() / 3600 if order.delivered_at else None,
        times_replaced=await aftersales.times_replaced(session, order.id) if order.status == "delivered" else 0,
        stock_available=(await stock.available_count(session, order.product_id)
                         if product.is_stocked and order.status in ("awaiting_stock", "paid") else 0),
        refunded_at=refunds[-1].created_at if refunds else None,
        recharge=recharge,
    )


async def trade_no_of(session: AsyncSession, order: Order) -> str | None:
    payment = await payment_of(session, order)
    return payment.trade_no if payment else None
