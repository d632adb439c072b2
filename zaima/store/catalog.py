"""Products: create, update, list, and validate the inputs a 直充 product asks the buyer for."""

from __future__ import annotations

import re
import re._constants as sre_constants  # the parser of the `re` module, to inspect a pattern's structure
import re._parser as sre_parse

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima import sql
from zaima.core.errors import Conflict, NotFound, ValidationFailed
from zaima.models import CardKey, Product
from zaima.models.catalog import PRODUCT_KINDS

# Fields whose None means "the store's default" (after-sales settings) or "none" (the supplier's SKU).
NULLABLE_FIELDS = ("supplier_sku", "replaceable", "replacement_window_hours", "auto_refund")
MAX_AMOUNT_FEN = 2_000_000_000  # ¥20 million, for a price and an order's total: 32-bit columns on PostgreSQL
TEXT_FIELDS = ("name", "name_en", "description", "usage_instructions", "supplier_sku")
SKU_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PRODUCT_FIELDS = (
    "kind", "name", "name_en", "description", "usage_instructions", "price_fen", "input_fields",
    "supplier_sku", "replaceable", "replacement_window_hours", "auto_refund", "min_quantity",
    "max_quantity", "allow_backorder", "active", "sort_order",
)


_INF = float("inf")
_MAX_WAYS = 10_000  # how many ways a rule may split one input before it counts as runaway backtracking


def _runaway(items, times: float = 1) -> bool:
    """Whether a parsed pattern can backtrack without bound: a part of variable length (or a choice, `|`)
    inside a repetition, where the ways to split the input multiply per repetition — `(a+)+`, `(a|a)*`,
    `(a?){25}` — or more than three unbounded repeats in one rule (`\\d*\\d*\\d*\\d*x`). `times` is how often
    the enclosing repetitions may repeat this part. Fixed-length parts repeated a fixed or small number of
    times (`([A-Z0-9]{4}-){3}`, `(\\d{1,3}\\.){3}`) are fine."""
    unbounded = 0
    for op, av in items:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            lo, hi, sub = av
            high = _INF if hi == sre_constants.MAXREPEAT else hi
            unbounded += high == _INF
            if lo != hi and times > 1 and (high == _INF or times == _INF or (high - lo + 1) ** times > _MAX_WAYS):
                return True
            if _runaway(sub, times * high):
                return True
        elif name == "BRANCH":
            branches = av[1]
            if times > 1 and (times == _INF or len(branches) ** times > _MAX_WAYS):
                return True
            if any(_runaway(branch, times) for branch in branches):
                return True
        elif name in ("SUBPATTERN", "ASSERT", "ASSERT_NOT"):
            if _runaway(av[-1], times):
                return True
        elif name == "ATOMIC_GROUP":
            if _runaway(av, times):
                return True
        elif name == "GROUPREF_EXISTS":
            if any(b is not None and _runaway(b, times) for b in av[1:]):
                return True
    return unbounded > 3


def _check_pattern(name: str, pattern) -> None:
    """A product's input rule is a regular expression the buyer's input is matched against in the request:
    it must compile, be short, and not backtrack exponentially (a 30-character input against `(a+)+b`
    would hold the whole server for minutes)."""
    if not isinstance(pattern, str) or len(pattern) > 200:
        raise ValidationFailed(f"输入项 {name} 的格式规则无效（最多 200 个字符）", "invalid field pattern (200 characters at most)")
    try:
        parsed = sre_parse.parse(pattern)
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        raise ValidationFailed(f"输入项 {name} 的格式规则无效", "invalid field pattern") from exc
    if _runaway(parsed):
        raise ValidationFailed(
            f"输入项 {name} 的格式规则过于复杂，可能让服务器长时间卡住：重复的部分里不要再有长度可变的重复或「|」，"
            "例如把 (a+)+ 写成 a+，把 (a|b)+ 写成 [ab]+",
            "the field pattern could backtrack for a very long time: do not repeat a part that itself varies in "
            "length or branches; write (a+)+ as a+, (a|b)+ as [ab]+")


def _check_product(values: dict, check_patterns: bool = True) -> None:
    for key in TEXT_FIELDS:
        if "\x00" in (values.get(key) or ""):  # PostgreSQL text cannot hold NUL; no product name needs it
            raise ValidationFailed(f"「{key}」含有无法保存的空字符（NUL）", f"{key} contains a NUL character", field=key)
    if values.get("kind") not in PRODUCT_KINDS:
        raise ValidationFailed("商品类型必须是 card_key、recharge、account 或 license 之一",
                               "kind must be one of card_key, recharge, account, license")
    price = values.get("price_fen")
    if not isinstance(price, int) or isinstance(price, bool) or price <= 0:
        raise ValidationFailed("价格必须大于 0", "price must be positive")
    if price > MAX_AMOUNT_FEN:
        raise ValidationFailed("价格超出上限（¥2,000 万）", "price is over the limit (¥20 million)", field="price")
    lo, hi = values.get("min_quantity", 1), values.get("max_quantity", 10)
    if not (1 <= lo <= hi <= 1000):
        raise ValidationFailed("购买数量限制无效（1 ≤ 最少 ≤ 最多 ≤ 1000）", "invalid purchase limits")
    for field in values.get("input_fields") or []:
        if not isinstance(field, dict) or not re.match(r"^[a-z][a-z0-9_]{0,31}$", str(field.get("name", ""))):
            raise ValidationFailed("充值输入项需要 name（小写英文）", "each input field needs a lowercase name")
        texts = [field.get(k) or "" for k in ("label", "label_en", "hint")] + list(field.get("options") or [])
        if not all(isinstance(t, str) and t.isprintable() for t in texts):
            raise ValidationFailed(f"输入项 {field['name']} 的名称、提示或选项含有控制字符（如空字符）",
                                   f"input field {field['name']}: a label, hint or option holds a control character")
        if field.get("pattern") and check_patterns:
            _check_pattern(field["name"], field["pattern"])
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
    for key, value in changes.items():
        if value is None and key not in NULLABLE_FIELDS:
            raise ValidationFailed(f"「{key}」不能设为空（null）", f"{key} cannot be null", field=key)
    merged = {f: getattr(product, f) for f in PRODUCT_FIELDS} | changes
    # The stored rules were accepted when they were saved: an edit of the price or the name must not fail
    # on a rule an older version accepted; they are checked again only when they change.
    _check_product(merged, check_patterns="input_fields" in changes)
    for key, value in changes.items():
        setattr(product, key, value)
    await session.flush()
    return product


_BY_SKU = select(Product).where(Product.sku == bindparam("sku"))  # built once
ProductRow = sql.row_type(Product)  # a product as the order hot paths read it (see zaima.sql)


class ProductNotFound(NotFound):
    message_zh = "商品不存在或已下架"
    message_en = "Product not found"


async def get_product(session: AsyncSession, sku: str, active_only: bool = False) -> Product:
    # A string that cannot be a SKU is not looked up (PostgreSQL refuses NUL in text with an error).
    product = None
    if SKU_PATTERN.fullmatch(sku or ""):
        product = await session.scalar(_BY_SKU, {"sku": sku})
    if product is None or (active_only and not product.active):
        raise ProductNotFound()
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
        label_en = field.get("label_en") or label  # the English message names the field as the form does
        value = str(inputs.get(name, "")).strip()
        if not value:
            if field.get("required", True):
                raise ValidationFailed(f"请填写{label}", f"Enter the {label_en}", field=name)
            continue
        if len(value) > 100:
            raise ValidationFailed(f"{label}太长", f"The {label_en} is too long", field=name)
        if not value.isprintable():
            raise ValidationFailed(f"{label}含有无法识别的字符", f"The {label_en} holds a control character", field=name)
        options = field.get("options")
        if options and value not in options:
            raise ValidationFailed(f"{label}不在可选范围内", f"The {label_en} is not one of the options", field=name)
        if field.get("pattern") and not re.fullmatch(field["pattern"], value):
            hint = field.get("hint") or ""
            raise ValidationFailed(f"{label}格式不正确{('：' + hint) if hint else ''}", f"The {label_en} has the wrong format",
                                   field=name)
        clean[name] = value
    return clean
