"""Orders: guest checkout, guarded state transitions, lookup, expiry."""

from __future__ import annotations

import functools
import re
import time
import unicodedata
import weakref
from collections import OrderedDict
from datetime import timedelta

from sqlalchemy import Integer, bindparam, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession

from zaima import sql
from zaima.core.audit import CUSTOMER, SYSTEM
from zaima.core.errors import Conflict, NotFound, ValidationFailed
from zaima.core.ids import new_order_no, normalize_order_no
from zaima.core.passwords import hash_password, verify_password
from zaima.jobs import Queued, enqueue_all
from zaima.models import Order, Product
from zaima.store import stock, timeline
from zaima.store.catalog import (
    MAX_AMOUNT_FEN,
    SKU_PATTERN,
    ProductNotFound,
    ProductRow,
    validate_recharge_inputs,
)
from zaima.store.epay import PAY_TYPES

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
PHONE = re.compile(r"^1[3-9][0-9]{9}$")  # mainland mobile

# Allowed transitions. Anything else is refused, so a late or repeated callback never moves an
# order backwards (e.g. delivered → paid).
TRANSITIONS: dict[str, set[str]] = {
    "pending_payment": {"paid", "expired"},
    "expired": {"paid"},  # money arrived after the order closed: still the customer's money
    "paid": {"delivered", "awaiting_stock", "delivering", "refunded"},
    "awaiting_stock": {"delivered", "refunded", "partially_refunded", "awaiting_stock"},
    "delivering": {"delivered", "delivery_failed"},
    "delivery_failed": {"refunded", "delivering"},
    "delivered": set(),
    "partially_refunded": set(),
    "refunded": set(),
}


class InvalidTransition(Conflict):
    code = "invalid_transition"


# The order's hot paths (create, notify, read) work on `OrderRow`s read and written with `zaima.sql`; the
# rest of the code loads ORM `Order`s. Both have the same attributes, and the rules here accept either.
OrderRow = sql.row_type(Order)
_ORDER_COLUMNS = tuple(Order.__table__.columns)
_PRODUCT_COLUMNS = tuple(Product.__table__.columns)


@functools.cache
def _update_order(columns: frozenset) -> sql.Prepared:
    return sql.Prepared(update(Order).where(Order.id == bindparam("for_id"), Order.version == bindparam("at_version"))
                        .values({**{c: bindparam(c) for c in sorted(columns)}, "version": bindparam("at_version") + 1}))


async def save(session: AsyncSession, order: Order | OrderRow) -> None:
    """Write the order's changes. An `OrderRow` is written with one guarded `UPDATE … WHERE version = :v`,
    queued with the transaction's other writes (`zaima.sql.defer`): a concurrent writer that got there
    first makes their flush fail with StaleDataError, which `transact` retries. An ORM `Order` is flushed
    now (its version is checked the same way)."""
    if not isinstance(order, OrderRow):
        await session.flush()
        return
    changes = order.changes()
    if not changes:
        return
    await _guarded_update(session, order, changes)
    order.version += 1
    order.mark_saved()


async def _guarded_update(session: AsyncSession, order: Order | OrderRow, changes: dict) -> None:
    """Queue `UPDATE … SET changes, version = version + 1 WHERE id AND version` with the transaction's other
    writes; a version that moved meanwhile fails their flush with StaleDataError."""
    await sql.defer(session, _update_order(frozenset(changes)), expect=1,
                    stale=f"order {order.order_no} changed concurrently", for_id=order.id, at_version=order.version,
                    **changes)


async def claim(session: AsyncSession, order: Order | OrderRow) -> None:
    """Bump the order's version without changing it: for a decision about the order that writes only other
    rows (e.g. flagging a second payment once). A concurrent transaction that decided from the same version
    then fails with StaleDataError, is retried, and sees what this one wrote."""
    await _guarded_update(session, order, {})
    if isinstance(order, OrderRow):
        order.version += 1
        order.mark_saved("version")
    else:
        sql.assign(order, version=order.version + 1)


def normalize_contact(text: str) -> tuple[str, str]:
    """('email'|'phone', canonical value) or a clear error."""
    # NFKC: a Chinese IME may type full-width digits and signs (１３８…, ＋８６, ＠); they mean the ASCII ones.
    value = unicodedata.normalize("NFKC", text or "").strip()
    if EMAIL.match(value) and value.isprintable():
        return "email", value.lower()
    digits = re.sub(r"[\s\-()]", "", value)
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("0086"):
        digits = digits[4:]
    if PHONE.match(digits):
        return "phone", digits
    raise ValidationFailed("请填写正确的邮箱或 11 位手机号，用于查询订单和接收通知",
                           "enter a valid e-mail or mainland mobile number", field="contact")


def transition(order: Order, new_status: str) -> None:
    if new_status not in TRANSITIONS.get(order.status, set()):
        raise InvalidTransition(
            f"订单当前状态为「{order.status}」，不能变为「{new_status}」",
            f"order is {order.status}; cannot become {new_status}",
        )
    order.status = new_status


# A checkout's product read. On PostgreSQL it also draws the new order's id from the orders' sequence: the order's
# INSERT then needs no answer, so it is queued (zaima.sql.defer) and travels with the checkout's other writes.
# (A checkout refused after the read leaves a gap in the ids, as a rollback does.)
_CHECKOUT_READ = sql.per_dialect(
    sqlite=select(*_PRODUCT_COLUMNS).where(Product.sku == bindparam("sku")),
    postgresql=select(*_PRODUCT_COLUMNS, func.nextval(func.pg_get_serial_sequence("orders", "id")))
    .where(Product.sku == bindparam("sku")))

# PostgreSQL, in a `Tx`: a process keeps the stocked products it sold in the last seconds, and a block of order
# ids, so that a checkout sends nothing but its writes, as one statement. Those writes carry a check that the
# product still sells as kept (`sql.check`, in their snapshot); one changed meanwhile makes the checkout run
# again in a session, which reads it anew. The time limit only bounds how long a refusal decided on the kept
# values (a quantity over a limit since raised) can outlive a change. Ids come in blocks, so with several
# processes their order only roughly follows the orders' creation.
CHECKOUT_CACHE_SECONDS = 2.0
ORDER_ID_BLOCK = 16
_KEPT: weakref.WeakKeyDictionary[Engine, dict[str, tuple[ProductRow, float]]] = weakref.WeakKeyDictionary()
_ORDER_IDS: weakref.WeakKeyDictionary[Engine, list[int]] = weakref.WeakKeyDictionary()
_CHECKED = ("kind", "price_fen", "min_quantity", "max_quantity", "allow_backorder", "name")  # what a checkout uses
_STILL_SELLS = sql.Prepared(select(Product.id).where(
    Product.id == bindparam("for_product"), Product.active.is_(True),
    *(getattr(Product, name) == bindparam(name) for name in _CHECKED)))
_ORDER_ID_BLOCK = sql.Prepared(select(func.nextval(func.pg_get_serial_sequence("orders", "id")))
                               .select_from(func.generate_series(1, bindparam("n", type_=Integer))))


async def product_for_checkout(session: AsyncSession, sku: str) -> tuple[ProductRow, int | None]:
    """The product a checkout buys, as a row, and (PostgreSQL) the id its order will have: for `create_order`."""
    if not SKU_PATTERN.fullmatch(sku or ""):
        raise ProductNotFound()
    kept = _KEPT.setdefault(session.bind.sync_engine, {}) if session.bind.dialect.name == "postgresql" else None
    if kept is not None and sql.may_assume(session):
        product, since = kept.get(sku, (None, 0.0))
        if product is not None and time.monotonic() - since < CHECKOUT_CACHE_SECONDS:
            order_id = await _next_order_id(session)  # (before the check is queued: a read would send it)
            await sql.check(session, _STILL_SELLS, for_product=product.id,
                            **{name: getattr(product, name) for name in _CHECKED})
            return product, order_id
    row = await sql.fetch_one(session, _CHECKOUT_READ, sku=sku)
    if row is None or not (product := ProductRow.of(row[:len(_PRODUCT_COLUMNS)])).active:
        if kept is not None:
            kept.pop(sku, None)
        raise ProductNotFound()
    if kept is not None and product.is_stocked:
        if len(kept) >= 1000:
            kept.clear()
        kept[sku] = (product, time.monotonic())
    return product, (row[len(_PRODUCT_COLUMNS)] if len(row) > len(_PRODUCT_COLUMNS) else None)


async def _next_order_id(session: AsyncSession) -> int:
    ids = _ORDER_IDS.setdefault(session.bind.sync_engine, [])
    if not ids:
        drawn = [r[0] for r in await sql.fetch(session, _ORDER_ID_BLOCK, n=ORDER_ID_BLOCK)]
        ids.extend(sorted(drawn, reverse=True))  # handed out in ascending order
    return ids.pop()


async def create_order(session: AsyncSession, ctx, product: Product, quantity: int, contact: str,
                       query_password: str | None = None, inputs: dict | None = None, pay_type: str = "alipay",
                       client_ip: str = "", order_id: int | None = None) -> Order:
    """A new unpaid order, its stock reserved. `order_id`: the id `product_for_checkout` drew for it, if any."""
    if not product.active:
        raise NotFound("商品已下架", "Product is not on sale")
    if not isinstance(quantity, int) or not (product.min_quantity <= quantity <= product.max_quantity):
        raise ValidationFailed(
            f"购买数量需在 {product.min_quantity}–{product.max_quantity} 之间",
            f"quantity must be between {product.min_quantity} and {product.max_quantity}", field="quantity")
    if pay_type not in PAY_TYPES:
        raise ValidationFailed("不支持的支付方式", "unsupported payment method", field="pay_type")
    kind, contact_value = normalize_contact(contact)
    if query_password is not None and query_password != "":
        if not (4 <= len(query_password) <= 64) or not query_password.isprintable():
            raise ValidationFailed("查询密码需 4–64 位，且不含控制字符", "query password must be 4–64 printable characters",
                                   field="query_password")
        password_hash = hash_password(query_password)
    else:
        password_hash = None
    if product.price_fen * quantity > MAX_AMOUNT_FEN:
        raise ValidationFailed("订单金额超出上限（¥2,000 万），请减少数量", "the order total is over the limit (¥20 million)",
                               field="quantity")
    recharge_inputs = validate_recharge_inputs(product, inputs) if product.kind == "recharge" else {}
    now = ctx.clock.now()
    values = dict(
        order_no=new_order_no(),
        product_id=product.id,
        quantity=quantity,
        unit_price_fen=product.price_fen,
        amount_fen=product.price_fen * quantity,
        contact=contact_value,
        contact_kind=kind,
        query_password_hash=password_hash,
        recharge_inputs=recharge_inputs,
        pay_type=pay_type,
        status="pending_payment",
        created_at=now,
        expires_at=now + timedelta(minutes=ctx.settings.order_ttl_minutes),
        client_ip=client_ip[:64],
    )
    values = sql.with_defaults(Order.__table__, values)
    if order_id is None:
        (order_id,) = await sql.fetch_one(session, sql.insert_for(Order.__table__, values, (Order.id,)), **values)
    else:
        values["id"] = order_id
        await sql.defer(session, sql.insert_for(Order.__table__, values), **values)
    order = OrderRow.of([order_id if c.key == "id" else values.get(c.key) for c in _ORDER_COLUMNS])
    reserved = 0
    if product.is_stocked:
        reserved = await stock.reserve_keys(session, product.id, order.id, quantity, now)
        if reserved < quantity and not product.allow_backorder:
            raise Conflict("库存不足，请减少数量或稍后再来", "not enough stock", available=reserved)
    entries = [timeline.entry(order, "created", CUSTOMER, now, quantity=quantity, amount=order.amount_fen)]
    if reserved:
        entries.append(timeline.entry(order, "stock_reserved", SYSTEM, now, quantity=reserved))
    await timeline.record_all(session, entries)
    await enqueue_all(session, ctx, [
        Queued("expire_order", {"order_id": order.id}, order.expires_at, f"expire:{order.id}"),
        # Recover a lost notify long before the order would expire.
        Queued("requery_payment", {"order_id": order.id, "round": 0}, now + timedelta(minutes=2),
               f"requery:{order.id}"),
    ])
    return order


ORDER_BY_NO = select(Order).where(Order.order_no == bindparam("order_no"))  # built once
# An order by its number with its product; a read that needs more of the order adds columns after these.
ORDER_AND_PRODUCT = (select(*_ORDER_COLUMNS, *_PRODUCT_COLUMNS).join(Product, Product.id == Order.product_id)
                     .where(Order.order_no == bindparam("order_no")))
_ORDER_AND_PRODUCT_BY_NO = sql.Prepared(ORDER_AND_PRODUCT)
_PRODUCT_END = len(_ORDER_COLUMNS) + len(_PRODUCT_COLUMNS)


def split_order_and_product(row) -> tuple[OrderRow, ProductRow, tuple]:
    """A row of ORDER_AND_PRODUCT as the order, its product, and the values of any columns added after."""
    split = len(_ORDER_COLUMNS)
    return OrderRow.of(row[:split]), ProductRow.of(row[split:_PRODUCT_END]), tuple(row[_PRODUCT_END:])


async def order_and_product(session: AsyncSession, order_no: str) -> tuple[OrderRow, ProductRow] | tuple[None, None]:
    """An order (by its canonical number) and its product, as rows, in one statement: for the hot paths
    that need both (a notify delivers, the order's API read shows the product). Changes to the order are
    written with `save`."""
    row = await sql.fetch_one(session, _ORDER_AND_PRODUCT_BY_NO, order_no=order_no)
    if row is None:
        return None, None
    order, product, _ = split_order_and_product(row)
    return order, product


# PostgreSQL: a process keeps the stocked orders it created, as written, until their payment arrives, so that the
# notify sends nothing but its writes (one statement, see `zaima.sql.Tx`). That is safe without a read because every
# change to an order moves its version, and the notify's writes are guarded by the version it was created with: an
# order changed meanwhile (expired, say) fails that guard, and the notify runs again and reads it.
KEPT_ORDERS_MAX = 4096
_NEW_ORDERS: weakref.WeakKeyDictionary[Engine, OrderedDict[str, tuple[tuple, ProductRow]]] = \
    weakref.WeakKeyDictionary()


def keep_new_order(engine, order: OrderRow, product: ProductRow) -> None:
    """After a checkout committed: remember the order for `order_for_payment` (PostgreSQL, stocked products)."""
    if engine.dialect.name != "postgresql" or not product.is_stocked:
        return
    kept = _NEW_ORDERS.setdefault(engine.sync_engine, OrderedDict())
    kept[order.order_no] = (order._loaded, product)
    if len(kept) > KEPT_ORDERS_MAX:
        kept.popitem(last=False)  # the oldest: an order never paid


async def order_for_payment(session: AsyncSession, order_no: str) -> tuple[OrderRow, ProductRow] | tuple[None, None]:
    """`order_and_product` for a payment: the order as this process created it when it kept it (once: a retry, or
    a second notify, reads), else as read now. Its writes are guarded by its version either way (`save`)."""
    if sql.may_assume(session):
        kept = _NEW_ORDERS.get(session.bind.sync_engine)
        entry = kept.pop(order_no, None) if kept else None
        if entry is not None:
            return OrderRow.of(entry[0]), entry[1]
    return await order_and_product(session, order_no)


async def get_order(session: AsyncSession, order_no: str) -> Order:
    canonical = normalize_order_no(order_no)
    order = await session.scalar(ORDER_BY_NO, {"order_no": canonical}) if canonical else None
    if order is None:
        raise OrderNotFound()
    return order


class OrderNotFound(NotFound):
    message_zh = "未找到该订单"
    message_en = "Order not found"


class LookupFailed(NotFound):
    code = "order_lookup_failed"
    message_zh = "未找到匹配的订单，请核对订单号和联系方式（或查询密码）"
    message_en = "No matching order; check the order number and the contact (or query password)"


async def lookup_order(session: AsyncSession, order_no: str, contact: str | None = None,
                       query_password: str | None = None) -> Order:
    """Guest lookup. Any miss — unknown order, wrong contact, wrong password — gives the same answer."""
    canonical = normalize_order_no(order_no or "")
    order = await session.scalar(select(Order).where(Order.order_no == canonical)) if canonical else None
    ok = False
    if contact:
        try:
            _, value = normalize_contact(contact)
        except ValidationFailed:
            value = None
        ok = order is not None and value is not None and value == order.contact
    elif query_password:
        # Always run the hash check, so timing does not tell whether the order exists.
        ok = verify_password(order.query_password_hash if order else None, query_password) and order is not None
    if not ok:
        raise LookupFailed()
    return order
