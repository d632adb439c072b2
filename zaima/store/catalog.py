"""Products: create, update, list, and validate the inputs a 直充 product asks the buyer for."""

from __future__ import annotations

import re

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.core.errors import Conflict, NotFound, ValidationFailed
from zaima.models import CardKey, Product
from zaima.models.catalog import PRODUCT_KINDS

SKU_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PRODUCT_FIELDS = (
    "kind", "name", "name_en", "description", "usage_instructions", "price_fen", "input_fields",
    "supplier_sku", "replaceable", "replacement_window_hours", "auto_refund", "min_quantity",
    "max_quantity", "allow_backorder", "active", "sort_order",
)


def _check_product(values: dict) -> None:
    if values.get("kind") not in PRODUCT_KINDS:
        raise ValidationFailed("商品类型必须是 card_key、recharge、account 或 license 之一",
                               "kind must be one of card_key, recharge, account, license")
    price = values.get("price_fen")
    if not isinstance(price, int) or isinstance(price, bool) or price <= 0:
        raise ValidationFailed("价格必须大于 0", "price must be positive")
    lo, hi = values.get("min_quantity", 1), values.get("max_quantity", 10)
    if not (1 <= lo <= hi <= 1000):
        raise ValidationFailed("购买数量限制无效（1 ≤ 最少 ≤ 最多 ≤ 1000）", "invalid purchase limits")
    for field in values.get("input_fields") or []:
        if not isinstance(field, dict) or not re.match(r"^[a-z][a-z0-9_]{0,31}$", str(field.get("name", ""))):
            raise ValidationFailed("充值输入项需要 name（小写英文）", "each input field needs a lowercase name")
        if field.get("pattern"):
            try:
                re.compile(field["pattern"])
            except re.error as exc:
                raise ValidationFailed(f"输入项 {field['name']} 的格式规则无效", "invalid field pattern") from exc
    if values.get("kind") == "recharge" and not values.get("input_fields"):
        raise ValidationFailed("直充商品必须声明需要买家填写的信息（如游戏UID）",
                               "a recharge product must declare its input fields")


async def create_product(session: AsyncSession, clock, sku: str, **values) -> Product:
    if not SKU_PATTERN.fullmatch(sku or ""):  # not .match: `$` also matches before a trailing newline
        raise ValidationFailed("SKU 只能包含字母、数字、点、下划线和短横线", "invalid SKU")
    values = {k: v for k, v in values.items() if k in PRODUCT_FIELDS and v is not None}
    values.setdefault("input_fields", [])
    _check_product(values)
    if await session.scalar(select(Product.id).where(Product.sku == sku)):
        raise Conflict(f"SKU {sku} 已存在", f"SKU {sku} already exists")
    product = Product(sku=sku, created_at=clock.now(), **values)
    session.add(product)
    await session.flush()
    return product


async def update_product(session: AsyncSession, product: Product, **values) -> Product:
    changes = {k: v for k, v in values.items() if k in PRODUCT_FIELDS}
    merged = {f: getattr(product, f) for f in PRODUCT_FIELDS} | changes
    _check_product(merged)
    for key, value in changes.items():
        setattr(product, key, value)
    await session.flush()
    return product


_BY_SKU = select(Product).where(Product.sku == bindparam("sku"))  # built once: the checkout's first read


async def get_product(session: AsyncSession, sku: str, active_only: bool = False) -> Product:
    # A string that cannot be a SKU is not looked up (PostgreSQL refuses NUL in text with an error).
    product = None
    if SKU_PATTERN.fullmatch(sku or ""):
        product = await session.scalar(_BY_SKU, {"sku": sku})
    if product is None or (active_only and not product.active):
        raise NotFound("商品不存在或已下架", "Product not found")
    return product


async def list_products(session: AsyncSession, active_only: bool = True) -> list[Product]:
    query = select(Product).order_by(Product.sort_order, Product.id)
    if active_only:
        query = query.where(Product.active.is_(True))
    return list(await session.scalars(query))


async def stock_counts(session: AsyncSession, product_ids: list[int] | None = None) -> dict[int, dict[str, int]]:
    query = select(CardKey.product_id, CardKey.status, func.count()).group_by(CardKey.product_id, CardKey.status)
    if product_ids is not None:
        query = query.where(CardKey.product_id.in_(product_ids))
    counts: dict[int, dict[str, int]] = {}
    for product_id, status, n in await session.execute(query):
        counts.setdefault(product_id, {})[status] = n
    return counts


def validate_recharge_inputs(product: Product, inputs: dict | None) -> dict:
    """The buyer's 直充 details (game UID, server…), checked against the product's declared fields."""
    inputs = inputs or {}
    clean: dict[str, str] = {}
    for field in product.input_fields or []:
        name = field["name"]
        label = field.get("label") or name
        value = str(inputs.get(name, "")).strip()
        if not value:
            if field.get("required", True):
                raise ValidationFailed(f"请填写{label}", f"{name} is required", field=name)
            continue
        if len(value) > 100:
            raise ValidationFailed(f"{label}太长", f"{name} is too long", field=name)
        options = field.get("options")
        if options and value not in options:
            raise ValidationFailed(f"{label}不在可选范围内", f"{name} is not one of the options", field=name)
        if field.get("pattern") and not re.fullmatch(field["pattern"], value):
            hint = field.get("hint") or ""
            raise ValidationFailed(f"{label}格式不正确{('：' + hint) if hint else ''}", f"{name} has the wrong format",
                                   field=name)
        clean[name] = value
    return clean
