"""How an order looks to its owner, to staff, and to the API: one place that decides what is shown."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession

from zaima import sql
from zaima.core.ids import display_order_no
from zaima.core.money import format_yuan
from zaima.models import CardKey, DeliveryAttempt, Order, OrderEvent, Payment, Product, SupplierOrder
from zaima.store import orders, stock, timeline
from zaima.store.payments import PaymentRow, payment_of
from zaima.store.refunds import refunds_of

STATUS_TEXT: dict[str, tuple[str, str]] = {
    "pending_payment": ("待付款", "Awaiting payment"),
    "expired": ("已关闭（超时未付款）", "Closed (not paid in time)"),
    "paid": ("已付款", "Paid"),
    "delivering": ("充值处理中", "Recharge in progress"),
    "delivered": ("已发货", "Delivered"),
    "awaiting_stock": ("已付款，等待补货", "Paid; waiting for stock"),
    "delivery_failed": ("发货失败", "Delivery failed"),
    "partially_refunded": ("部分退款", "Partly refunded"),
    "refunded": ("已退款", "Refunded"),
}
KIND_TEXT = {"card_key": ("卡密", "Card key"), "recharge": ("直充", "Direct recharge"),
             "account": ("账号", "Account"), "license": ("激活码", "Licence key")}
REFUND_TEXT = {"processing": ("退款处理中", "Refund in progress"),
               "succeeded": ("已原路退回", "Returned to your payment account"),
               "manual_pending": ("待人工退款", "To be refunded by staff"),
               "failed": ("退款失败，待人工处理", "Refund failed; staff will handle it")}


def mask(secret: str) -> str:
    if len(secret) <= 6:
        return "*" * len(secret)
    return secret[:2] + "*" * (len(secret) - 4) + secret[-2:]


class Loaded(NamedTuple):
    """An order's timeline, payment and sold keys, read together with the order."""
    events: list
    payment: PaymentRow | None
    keys: list


def _rows_of(model, *where, order_by):
    """A correlated subquery: the model's rows matching `where`, as one array of records."""
    return select(func.array_agg(aggregate_order_by(func.row(*model.__table__.columns), order_by))).where(
        *where).scalar_subquery()


# PostgreSQL: the order, its product and everything its owner's view shows, in one statement (one round trip,
# one snapshot). SQLite answers the separate reads without a round trip each.
_OWNER_READ = sql.Prepared(orders.ORDER_AND_PRODUCT.add_columns(
    _rows_of(OrderEvent, OrderEvent.order_id == Order.id, order_by=OrderEvent.id),
    select(func.row(*Payment.__table__.columns)).where(Payment.provider == "epay",
                                                     Payment.out_trade_no == Order.order_no).scalar_subquery(),
    _rows_of(CardKey, CardKey.order_id == Order.id, CardKey.status == "sold", order_by=CardKey.id)))


async def owner_view(session: AsyncSession, ctx, order_no: str) -> dict | None:
    """The order (by its canonical number) as its verified owner sees it, keys in plaintext; None if there is
    no such order. Run it with `zaima.db.read(…, lean=True)`: on PostgreSQL its main read is one statement, sent
    without BEGIN/COMMIT."""
    dialect = session.bind.dialect
    if dialect.name != "postgresql":
        order, product = await orders.order_and_product(session, order_no)
        return None if order is None else await order_view(session, ctx, order, reveal_keys=True, product=product)
    row = await sql.fetch_one(session, _OWNER_READ, order_no=order_no)
    if row is None:
        return None
    order, product, (events, payment, keys) = orders.split_order_and_product(row)
    loaded = Loaded([timeline.OrderEventRow.decoded(dialect, e) for e in events or ()],
                    None if payment is None else PaymentRow.decoded(dialect, payment),
                    [stock.CardKeyRow.decoded(dialect, k) for k in keys or ()])
    return await order_view(session, ctx, order, reveal_keys=True, product=product, loaded=loaded)


async def order_view(session: AsyncSession, ctx, order, *, reveal_keys: bool = False, staff: bool = False,
                     product=None, loaded: Loaded | None = None) -> dict:
    """A plain dict. Keys are in plaintext only with reveal_keys (the verified owner). `order` is an ORM
    `Order` or an `OrderRow`; `product` its product, and `loaded` its sold keys, timeline and payment, when
    the caller has them."""
    product = product or await session.get(Product, order.product_id)
    key_states = ("sold", "quarantined") if staff else ("sold",)
    if loaded is None or staff:
        # Payments and refunds are only ever written together with paid_at / refunded_quantity: no rows to
        # read for an order without them.
        loaded = Loaded(await timeline.events_for(session, order.id),
                        await payment_of(session, order) if order.paid_at is not None else None,
                        await stock.keys_of_order(session, order.id, key_states))
    events, payment, keys = loaded
    refunds = await refunds_of(session, order.id) if order.refunded_quantity else []
    view = {
        "order_no": order.order_no,
        "display_no": display_order_no(order.order_no),
        "status": order.status,
        "status_text": STATUS_TEXT[order.status][0],
        "status_text_en": STATUS_TEXT[order.status][1],
        "product": {"sku": product.sku, "name": product.name, "name_en": product.name_en, "kind": product.kind,
                    "kind_text": KIND_TEXT[product.kind][0]},
        "usage_instructions": product.usage_instructions,
        "quantity": order.quantity,
        "delivered_quantity": order.delivered_quantity,
        "refunded_quantity": order.refunded_quantity,
        "unit_price": format_yuan(order.unit_price_fen),
        "amount": format_yuan(order.amount_fen),
        "refunded_amount": format_yuan(order.refunded_fen),
        "pay_type": order.pay_type,
        "recharge_inputs": order.recharge_inputs,
        "created_at": order.created_at.isoformat(),
        "expires_at": order.expires_at.isoformat(),
        "paid_at": order.paid_at.isoformat() if order.paid_at else None,
        "delivered_at": order.delivered_at.isoformat() if order.delivered_at else None,
        "timeline": [
            {
                "at": e.at.isoformat(),
                "kind": e.kind,
                "text": timeline.EVENT_TEXT.get(e.kind, (e.kind, e.kind))[0],
                "text_en": timeline.EVENT_TEXT.get(e.kind, (e.kind, e.kind))[1],
                "actor": e.actor_kind,
                **({"actor_id": e.actor_id, "reason": e.reason, "data": e.data,
                    "conversation_id": e.conversation_id} if staff else {}),
            }
            for e in events if staff or e.kind not in timeline.STAFF_ONLY_KINDS
        ],
        "payment": None if payment is None else {
            "trade_no": payment.trade_no, "amount": format_yuan(payment.amount_fen), "pay_type": payment.pay_type,
            "received_via": payment.received_via, "at": payment.created_at.isoformat(),
        },
        "refunds": [
            {"amount": format_yuan(r.amount_fen), "quantity": r.quantity, "status": r.status,
             "status_text": REFUND_TEXT.get(r.status, (r.status,))[0],
             "status_text_en": REFUND_TEXT.get(r.status, (r.status, r.status))[1],
             "reason": r.reason, "at": r.created_at.isoformat()}
            for r in refunds
        ],
        "keys": [],
    }
    if reveal_keys:
        view["keys"] = [{"id": k.id, "secret": stock.reveal(ctx.box, k)} for k in keys if k.status == "sold"]
    elif staff:
        view["keys"] = [{"id": k.id, "masked": mask(stock.reveal(ctx.box, k)), "status": k.status} for k in keys]
    if staff:
        view["contact"] = order.contact
        attempts = await session.scalars(select(DeliveryAttempt).where(DeliveryAttempt.order_id == order.id)
                                         .order_by(DeliveryAttempt.id))
        view["delivery_attempts"] = [
            {"at": a.at.isoformat(), "method": a.method, "result": a.result, "quantity": a.quantity, "detail": a.detail}
            for a in attempts
        ]
        sos = await session.scalars(select(SupplierOrder).where(SupplierOrder.order_id == order.id)
                                    .order_by(SupplierOrder.id))
        view["supplier_orders"] = [
            {"request_id": s.request_id, "supplier_order_no": s.supplier_order_no, "status": s.status,
             "message": s.message, "attempts": s.attempts, "log": s.log,
             "submitted_at": s.submitted_at.isoformat() if s.submitted_at else None,
             "finished_at": s.finished_at.isoformat() if s.finished_at else None}
            for s in sos
        ]
    if product.kind == "recharge":
        last = await session.scalar(select(SupplierOrder).where(SupplierOrder.order_id == order.id)
                                    .order_by(SupplierOrder.id.desc()).limit(1))
        view["recharge"] = None if last is None else {
            "status": last.status, "supplier_order_no": last.supplier_order_no,
            "finished_at": last.finished_at.isoformat() if last.finished_at else None,
        }
    return view
