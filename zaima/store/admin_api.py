"""Operator and agent API (/api/v1/admin), authenticated with HTTP Basic against staff accounts."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from sqlalchemy import select

from zaima.context import AppContext
from zaima.core.audit import Actor
from zaima.core.errors import DomainError, Forbidden, NotFound, ValidationFailed
from zaima.core.money import MoneyFormatError, parse_yuan
from zaima.db import unit_of_work
from zaima.models import CardKey, Order, StaffUser
from zaima.staff import authenticate
from zaima.store import (
    aftersales,
    catalog,
    delivery,
    epay,
    orders,
    payments,
    policy,
    refunds,
    stock,
    suppliers,
)
from zaima.store.api import product_view, products_with_stock
from zaima.store.schemas import (
    AfterSalesIn,
    ProductIn,
    ProductPatch,
    QuarantineIn,
    RefundIn,
    SettleRechargeIn,
)
from zaima.store.views import order_view
from zaima.web.deps import get_ctx

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
basic = HTTPBasic(realm="Zaima")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


class Unauthorized(DomainError):
    code = "unauthorized"
    status = 401
    message_zh = "请先登录（用户名或密码错误）"
    message_en = "Login required (wrong username or password)"


async def current_staff(credentials: HTTPBasicCredentials = Depends(basic), ctx: AppContext = Depends(get_ctx)):
    async with unit_of_work(ctx.sessions) as session:
        user = await authenticate(session, credentials.username, credentials.password)
    if user is None:
        raise Unauthorized()
    return user


def require(*roles: str):
    async def check(user: StaffUser = Depends(current_staff)) -> StaffUser:
        if user.role not in roles:
            raise Forbidden("此操作需要管理员权限", "this action needs an admin")
        return user

    return check


def actor_of(user: StaffUser) -> Actor:
    return Actor("agent", user.username)


def _price(text: str) -> int:
    try:
        return parse_yuan(text)
    except MoneyFormatError as exc:
        raise ValidationFailed("价格格式应为元，如 30 或 30.00", "price must be yuan, e.g. 30.00",
                               field="price") from exc


@router.get("/products")
async def list_products(ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(current_staff)):
    async with unit_of_work(ctx.sessions) as session:
        return {"products": [product_view(p, n) | {"active": p.active}
                             for p, n in await products_with_stock(session, active_only=False)]}


@router.post("/products", status_code=201)
async def create_product(body: ProductIn, ctx: AppContext = Depends(get_ctx),
                         _: StaffUser = Depends(require("admin"))):
    values = body.model_dump(exclude={"price", "sku"})
    values["input_fields"] = [f.model_dump(exclude_none=True) for f in body.input_fields]
    async with unit_of_work(ctx.sessions) as session:
        product = await catalog.create_product(session, ctx.clock, body.sku, price_fen=_price(body.price), **values)
        return product_view(product, 0 if product.is_stocked else None)


@router.patch("/products/{sku}")
async def update_product(sku: str, body: ProductPatch, ctx: AppContext = Depends(get_ctx),
                         _: StaffUser = Depends(require("admin"))):
    values = body.model_dump(exclude_unset=True, exclude={"price"})
    if body.input_fields is not None:
        values["input_fields"] = [f.model_dump(exclude_none=True) for f in body.input_fields]
    if body.price is not None:
        values["price_fen"] = _price(body.price)
    async with unit_of_work(ctx.sessions) as session:
        product = await catalog.update_product(session, await catalog.get_product(session, sku), **values)
        return product_view(product, None)


@router.get("/products/{sku}/keys")
async def list_keys(sku: str, status: str | None = None, limit: int = 100, offset: int = 0,
                    ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(current_staff)):
    """Stock rows without their secrets: plaintext never appears in a list."""
    async with unit_of_work(ctx.sessions) as session:
        product = await catalog.get_product(session, sku)
        query = select(CardKey).where(CardKey.product_id == product.id).order_by(CardKey.id)
        if status:
            query = query.where(CardKey.status == status)
        rows = await session.scalars(query.limit(max(0, min(limit, 1000))).offset(max(0, offset)))
        counts = (await catalog.stock_counts(session, [product.id])).get(product.id, {})
        return {
            "counts": counts,
            "keys": [{"id": k.id, "status": k.status, "order_id": k.order_id, "batch_id": k.batch_id,
                      "created_at": k.created_at.isoformat(), "sold_at": k.sold_at.isoformat() if k.sold_at else None,
                      "status_reason": k.status_reason} for k in rows],
        }


@router.post("/products/{sku}/keys", status_code=201)
async def import_keys(sku: str, request: Request, file: UploadFile | None = File(default=None),
                      ctx: AppContext = Depends(get_ctx), user: StaffUser = Depends(require("admin", "supervisor"))):
    """Upload a key file (multipart field `file`) or send the lines as a text/plain body."""
    raw = await file.read(MAX_UPLOAD_BYTES + 1) if file is not None else await request.body()
    if len(raw) > MAX_UPLOAD_BYTES:
        raise ValidationFailed("文件超过 20 MB，请分批导入", "file larger than 20 MB")
    text = raw.decode("utf-8", errors="replace")
    async with unit_of_work(ctx.sessions) as session:
        product = await catalog.get_product(session, sku)
        result = await stock.import_keys(session, ctx.box, ctx.clock, product, stock.split_lines(text),
                                         source=(file.filename if file else "api"), actor=user.username)
        delivered = await delivery.fulfil_backorders(session, ctx, product.id)
    return {"batch_id": result.batch_id, "imported": result.imported, "duplicates": len(result.duplicates),
            "duplicate_lines": result.duplicates, "backorders_delivered": delivered}


@router.post("/keys/{key_id}/quarantine")
async def quarantine_key(key_id: int, body: QuarantineIn, ctx: AppContext = Depends(get_ctx),
                         user: StaffUser = Depends(current_staff)):
    async with unit_of_work(ctx.sessions) as session:
        key = await session.get(CardKey, key_id)
        if key is None:
            raise NotFound("卡密不存在", "card key not found")
        if key.order_id:
            order = await session.get(Order, key.order_id)
            await aftersales.quarantine(session, order, key, actor_of(user), body.reason, ctx.clock.now())
        elif key.status not in ("quarantined", "void"):  # unsold stock: no order, no timeline
            key.status, key.status_reason = "quarantined", body.reason[:300]
        return {"id": key.id, "status": key.status}


@router.get("/orders")
async def list_orders(status: str | None = None, limit: int = 50, ctx: AppContext = Depends(get_ctx),
                      _: StaffUser = Depends(current_staff)):
    async with unit_of_work(ctx.sessions) as session:
        # Newest first by creation time: ids come in blocks per server process, so they only roughly follow it.
        query = select(Order).order_by(Order.created_at.desc(), Order.id.desc()).limit(max(0, min(limit, 500)))
        if status:
            query = query.where(Order.status == status)
        return {"orders": [{"order_no": o.order_no, "status": o.status, "amount_fen": o.amount_fen,
                            "quantity": o.quantity, "created_at": o.created_at.isoformat()}
                           for o in await session.scalars(query)]}


@router.get("/orders/{order_no}")
async def get_order(order_no: str, ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(current_staff)):
    async with unit_of_work(ctx.sessions) as session:
        return await order_view(session, ctx, await orders.get_order(session, order_no), staff=True)


@router.post("/orders/{order_no}/reveal-keys")
async def reveal_keys(order_no: str, ctx: AppContext = Depends(get_ctx), user: StaffUser = Depends(current_staff)):
    """Plaintext keys for an agent; every reveal is written to the order's audit log."""
    async with unit_of_work(ctx.sessions) as session:
        order = await orders.get_order(session, order_no)
        return {"keys": await stock.reveal_order_keys(session, ctx.box, ctx.clock, order, actor_of(user))}


@router.post("/orders/{order_no}/refund")
async def refund_order(order_no: str, body: RefundIn, ctx: AppContext = Depends(get_ctx),
                       user: StaffUser = Depends(current_staff)):
    async def run(session):
        order = await orders.get_order(session, order_no)
        refund = await refunds.refund_undelivered(session, ctx, order, actor=actor_of(user), reason=body.reason,
                                                  idempotency_key=body.idempotency_key, quantity=body.quantity)
        return {"refund_id": refund.id, "status": refund.status, "amount_fen": refund.amount_fen,
                "order_status": order.status}

    return await ctx.transact(run)


@router.post("/orders/{order_no}/query-payment")
async def query_payment(order_no: str, ctx: AppContext = Depends(get_ctx), user: StaffUser = Depends(current_staff)):
    async with unit_of_work(ctx.sessions) as session:
        order_id = (await orders.get_order(session, order_no)).id
    try:
        recovered = await payments.recover_payment(ctx, order_id, actor=actor_of(user))
    except epay.EpayError as exc:
        raise DomainError("支付平台暂时无法查询，请稍后再试", "the payment gateway could not be reached") from exc
    async with unit_of_work(ctx.sessions) as session:
        return {"recovered": recovered, "status": (await orders.get_order(session, order_no)).status}


@router.post("/orders/{order_no}/redeliver")
async def redeliver(order_no: str, ctx: AppContext = Depends(get_ctx), user: StaffUser = Depends(current_staff)):
    async def run(session):
        order = await orders.get_order(session, order_no)
        if order.status != "awaiting_stock":
            raise orders.InvalidTransition("只有等待补货的订单可以重新发货", "only orders awaiting stock can be redelivered")
        delivered = await delivery.deliver_from_stock(session, ctx, order, actor_of(user))
        return {"delivered": delivered, "status": order.status}

    return await ctx.transact(run)


@router.post("/orders/{order_no}/settle-recharge")
async def settle_recharge(order_no: str, body: SettleRechargeIn, ctx: AppContext = Depends(get_ctx),
                          user: StaffUser = Depends(require("admin", "supervisor"))):
    """Settle a 直充 the supplier never answered, after staff confirmed the result with the supplier."""
    async def run(session):
        order = await orders.get_order(session, order_no)
        await suppliers.settle_recharge(session, ctx, order, body.result == "succeeded", body.note, actor_of(user))
        return {"status": order.status}

    return await ctx.transact(run)


@router.get("/settings/after-sales")
async def get_after_sales(ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(current_staff)):
    async with unit_of_work(ctx.sessions) as session:
        return (await policy.store_after_sales(session)).__dict__


@router.put("/settings/after-sales")
async def put_after_sales(body: AfterSalesIn, ctx: AppContext = Depends(get_ctx),
                          _: StaffUser = Depends(require("admin"))):
    async with unit_of_work(ctx.sessions) as session:
        return (await policy.save_store_after_sales(session, body.model_dump(exclude_none=True))).__dict__
