"""Products and store-wide settings."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from zaima.db import Base, UTCDateTime

PRODUCT_KINDS = ("card_key", "recharge", "account", "license")
STOCKED_KINDS = ("card_key", "account", "license")  # delivered from imported stock


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    usage_instructions: Mapped[str] = mapped_column(Text, default="")
    price_fen: Mapped[int] = mapped_column(Integer)
    # 直充: what the buyer must type, e.g. [{"name": "uid", "label": "游戏UID", "pattern": "^\\d{9}$"}]
    input_fields: Mapped[list] = mapped_column(JSON, default=list)
    supplier_sku: Mapped[str | None] = mapped_column(String(64))
    # After-sales overrides; None means "use the store default".
    replaceable: Mapped[bool | None] = mapped_column(Boolean)
    replacement_window_hours: Mapped[int | None] = mapped_column(Integer)
    auto_refund: Mapped[bool | None] = mapped_column(Boolean)
    min_quantity: Mapped[int] = mapped_column(Integer, default=1)
    max_quantity: Mapped[int] = mapped_column(Integer, default=10)
    allow_backorder: Mapped[bool] = mapped_column(Boolean, default=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def is_stocked(self) -> bool:
        return self.kind in STOCKED_KINDS


class StoreSetting(Base):
    __tablename__ = "store_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict] = mapped_column(JSON)
