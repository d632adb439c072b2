"""Orders and everything that happens to them: timeline, payments, deliveries, supplier orders, refunds."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from zaima.db import Base, UTCDateTime

ORDER_STATES = (
    "pending_payment",
    "expired",
    "paid",
    "delivering",
    "delivered",
    "awaiting_stock",
    "delivery_failed",
    "partially_refunded",
    "refunded",
)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_status_product", "status", "product_id", "paid_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_no: Mapped[str] = mapped_column(String(16), unique=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_fen: Mapped[int] = mapped_column(Integer)
    amount_fen: Mapped[int] = mapped_column(Integer)
    contact: Mapped[str] = mapped_column(String(200), index=True)
    contact_kind: Mapped[str] = mapped_column(String(8))  # email | phone
    query_password_hash: Mapped[str | None] = mapped_column(String(200))
    recharge_inputs: Mapped[dict] = mapped_column(JSON, default=dict)
    pay_type: Mapped[str] = mapped_column(String(16), default="alipay")
    status: Mapped[str] = mapped_column(String(24), default="pending_payment")
    delivered_quantity: Mapped[int] = mapped_column(Integer, default=0)
    refunded_quantity: Mapped[int] = mapped_column(Integer, default=0)
    refunded_fen: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    client_ip: Mapped[str] = mapped_column(String(64), default="")
    # Optimistic lock: two writers of one order cannot both win.
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}

    @property
    def undelivered_quantity(self) -> int:
        return self.quantity - self.delivered_quantity - self.refunded_quantity


class OrderEvent(Base):
    """The order's timeline (audit log): when, what, who, why, and from which conversation."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(40))
    actor_kind: Mapped[str] = mapped_column(String(16))  # customer|bot|agent|system|gateway|supplier
    actor_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    conversation_id: Mapped[int | None] = mapped_column(Integer)


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("provider", "out_trade_no"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    provider: Mapped[str] = mapped_column(String(16), default="epay")
    out_trade_no: Mapped[str] = mapped_column(String(64))
    trade_no: Mapped[str] = mapped_column(String(64))
    pay_type: Mapped[str] = mapped_column(String(16), default="")
    amount_fen: Mapped[int] = mapped_column(Integer)
    received_via: Mapped[str] = mapped_column(String(16))  # notify | query
    raw: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PaymentNotification(Base):
    """Every notify that reached us, accepted or not: evidence for disputes and for debugging."""

    __tablename__ = "payment_notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    out_trade_no: Mapped[str] = mapped_column(String(64), default="", index=True)
    verdict: Mapped[str] = mapped_column(String(16))  # accepted | duplicate | rejected
    reason: Mapped[str] = mapped_column(String(200), default="")
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    remote_addr: Mapped[str] = mapped_column(String(64), default="")


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    method: Mapped[str] = mapped_column(String(16))  # stock | supplier
    result: Mapped[str] = mapped_column(String(16))  # delivered | partial | short | submitted | failed
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str] = mapped_column(Text, default="")


class SupplierOrder(Base):
    """A direct-recharge (直充) request at the supplier: submitted → accepted → succeeded / failed."""

    __tablename__ = "supplier_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    supplier: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[str] = mapped_column(String(64), unique=True)  # our idempotency key
    supplier_order_no: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    message: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    log: Mapped[list] = mapped_column(JSON, default=list)  # what the supplier said, in order
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class Refund(Base):
    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(100), unique=True)
    quantity: Mapped[int] = mapped_column(Integer)
    amount_fen: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    # processing (gateway call queued) | succeeded | manual_pending (an agent must pay it back) | failed
    status: Mapped[str] = mapped_column(String(16))
    gateway_response: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    conversation_id: Mapped[int | None] = mapped_column(Integer)
