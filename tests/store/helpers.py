"""Helpers for store tests: products, stock and paid orders made through the real services."""

from __future__ import annotations

from tests.conftest import EPAY_KEY
from zaima.db import unit_of_work
from zaima.store import catalog, epay, orders, stock


async def make_product(ctx, sku: str = "card-1", kind: str = "card_key", price_fen: int = 3000, **values):
    if kind == "recharge":
        values.setdefault("input_fields", [{"name": "uid", "label": "游戏UID", "pattern": r"\d{9}"}])
    async with unit_of_work(ctx.sessions) as session:
        return await catalog.create_product(session, ctx.clock, sku, kind=kind, name=f"测试商品 {sku}",
                                            price_fen=price_fen, **values)


async def add_stock(ctx, product, secrets: list[str]):
    async with unit_of_work(ctx.sessions) as session:
        return await stock.import_keys(session, ctx.box, ctx.clock, product, secrets)


async def make_order(ctx, product, quantity: int = 1, contact: str = "buyer@example.com", **kwargs):
    async with unit_of_work(ctx.sessions) as session:
        fresh = await catalog.get_product(session, product.sku)
        return await orders.create_order(session, ctx, fresh, quantity, contact, **kwargs)


def notify_params(order, money: str | None = None, key: str = EPAY_KEY, trade_no: str = "T2026000001",
                  **overrides) -> dict[str, str]:
    from zaima.core.money import format_yuan

    params = {"pid": "1000", "trade_no": trade_no, "out_trade_no": order.order_no, "type": "alipay",
              "name": "test", "money": money or format_yuan(order.amount_fen), "trade_status": "TRADE_SUCCESS"}
    params.update(overrides)
    return epay.signed(params, key)
