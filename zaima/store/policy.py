"""Store-wide after-sales defaults and their per-product overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from zaima.models import Product
from zaima.store.settings import read_setting, write_setting

AFTER_SALES_KEY = "after_sales"


@dataclass
class AfterSales:
    replaceable: bool = True
    replacement_window_hours: int = 24
    auto_refund: bool = True  # refund undelivered orders (out of stock, recharge failed) without a person
    recharge_handoff_minutes: int = 30


async def store_after_sales(session: AsyncSession) -> AfterSales:
    return AfterSales(**{**asdict(AfterSales()), **(await read_setting(session, AFTER_SALES_KEY) or {})})


async def save_store_after_sales(session: AsyncSession, values: dict) -> AfterSales:
    merged = AfterSales(**{**asdict(await store_after_sales(session)), **values})
    await write_setting(session, AFTER_SALES_KEY, asdict(merged))
    return merged


async def product_after_sales(session: AsyncSession, product: Product) -> AfterSales:
    base = await store_after_sales(session)
    return AfterSales(
        replaceable=base.replaceable if product.replaceable is None else product.replaceable,
        replacement_window_hours=(
            base.replacement_window_hours
            if product.replacement_window_hours is None
            else product.replacement_window_hours
        ),
        auto_refund=base.auto_refund if product.auto_refund is None else product.auto_refund,
        recharge_handoff_minutes=base.recharge_handoff_minutes,
    )
