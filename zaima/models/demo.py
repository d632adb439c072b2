"""State of the built-in demo gateway and demo supplier (the remote side, simulated; demo and tests only)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from zaima.db import Base, UTCDateTime


class DemoGatewayTrade(Base):
    __tablename__ = "demo_gateway_trades"

    id: Mapped[int] = mapped_column(primary_key=True)
    trade_no: Mapped[str] = mapped_column(String(64), unique=True)
    pid: Mapped[str] = mapped_column(String(32))
    out_trade_no: Mapped[str] = mapped_column(String(64), unique=True)
    pay_type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    money: Mapped[str] = mapped_column(String(16))
    notify_url: Mapped[str] = mapped_column(String(500))
    return_url: Mapped[str] = mapped_column(String(500))
    status: Mapped[int] = mapped_column(Integer, default=0)  # 0 unpaid, 1 paid
    refunded_money: Mapped[str] = mapped_column(String(16), default="0.00")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DemoSupplierOrder(Base):
    __tablename__ = "demo_supplier_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    supplier_order_no: Mapped[str] = mapped_column(String(64), unique=True)
    sku: Mapped[str] = mapped_column(String(64))
    account: Mapped[dict] = mapped_column(JSON, default=dict)
    callback_url: Mapped[str] = mapped_column(String(500))
    # The scenario this order plays: outcome, delay, unconfirmed answers, callback behaviour.
    scenario: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="accepted")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finishes_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
