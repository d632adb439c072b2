"""Public store API (/api/v1), the 易支付 notify/return endpoints and the supplier callback."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Route

from zaima.context import AppContext
from zaima.core.errors import RateLimited
from zaima.core.ids import normalize_order_no
from zaima.core.money import format_yuan
from zaima.core.signing import check_order_access_token, order_access_token
from zaima.db import read, unit_of_work
from zaima.models import Order
from zaima.store import catalog, epay, orders, payments, suppliers
from zaima.store.schemas import OrderCreate, OrderLookup
from zaima.store.views import order_view, owner_view
from zaima.web.deps import FastJSONResponse, client_ip, ctx_of, documented, get_ctx, json_body, request_params

router = APIRouter()
ORDER_COOKIE_PREFIX = "zo_"


def product_view(product, available: int | None) -> dict:
    return {
        "sku": product.sku,
        "kind": product.kind,
        "name": product.name,
        "name_en": product.name_en,
        "description": product.description,
        "price": format_yuan(product.price_fen),
        "input_fields": product.input_fields,
        "min_quantity": product.min_quantity,
        "max_quantity": product.max_quantity,
        "in_stock": None if available is None else available,
        "allow_backorder": product.allow_backorder,
    }


async def products_with_stock(session, active_only: bool = True) -> list[tuple]:
    products = await catalog.list_products(session, active_only)
    counts = await catalog.stock_counts(session, [p.id for p in products])
    return [(p, counts.get(p.id, {}).get("available", 0) if p.is_stocked else None) for p in products]


@router.get("/api/v1/products", tags=["store"])
async def list_products(ctx: AppContext = Depends(get_ctx)):
    async with unit_of_work(ctx.sessions) as session:
        return {"products": [product_view(p, n) for p, n in await products_with_stock(session)]}


@router.get("/api/v1/products/{sku}", tags=["store"])
async def get_product(sku: str, ctx: AppContext = Depends(get_ctx)):
    async with unit_of_work(ctx.sessions) as session:
        product = await catalog.get_product(session, sku, active_only=True)
        counts = await catalog.stock_counts(session, [product.id])
        return product_view(product, counts.get(product.id, {}).get("available", 0) if product.is_stocked else None)


def checkout_links(ctx: AppContext, order, product_name: str) -> dict:
    token = order_access_token(ctx.settings.secret_key, order.order_no)
    base = ctx.settings.base_url
    links = {"access_token": token, "order_url": f"{base}/orders/{order.order_no}?t={token}"}
    if ctx.settings.epay_gateway:
        links["pay_url"] = epay.pay_url(
            ctx.settings.epay_gateway, ctx.settings.epay_pid, ctx.settings.epay_key,
            out_trade_no=order.order_no, money=format_yuan(order.amount_fen), name=product_name[:60],
            pay_type=order.pay_type, notify_url=f"{base}/pay/epay/notify",
            return_url=f"{base}/pay/epay/return/{order.order_no}/{token}",
        )
    return links


async def place_order(ctx: AppContext, body: OrderCreate, ip: str) -> tuple[object, dict]:
    async def place(session):
        product, order_id = await orders.product_for_checkout(session, body.sku)
        order = await orders.create_order(session, ctx, product, body.quantity, body.contact, body.query_password,
                                          body.inputs, body.pay_type, ip, order_id=order_id)
        return order, product

    order, product = await ctx.transact(place, lean=True)
    orders.keep_new_order(ctx.engine, order, product)
    return order, checkout_links(ctx, order, product.name)


# The three requests of every sale (create, notify, the buyer's read) take only the Request and read the rest
# themselves (zaima.web.deps), and are served by plain Starlette routes (`hot_routes`); the FastAPI routes
# declared here document them in OpenAPI.
@router.post("/api/v1/orders", status_code=201, tags=["store"], openapi_extra=documented(body=OrderCreate))
async def create_order(request: Request):
    ctx = ctx_of(request)
    order, links = await place_order(ctx, await json_body(request, OrderCreate), client_ip(request))
    # Plain JSON values already: answered as they are, without FastAPI's jsonable_encoder walk.
    return FastJSONResponse({"order_no": order.order_no, "status": order.status,
                             "amount": format_yuan(order.amount_fen), "expires_at": order.expires_at.isoformat(),
                             **links}, status_code=201)


def hot_routes() -> list[Route]:
    """The three requests of every sale as plain Starlette routes, for `create_app` to put ahead of all others:
    the same endpoints behind the same middleware and error handlers, without FastAPI's per-request routing,
    parameter and response layers (together a tenth of the server's time per sale)."""
    async def order_by_path(request: Request):
        return await get_order(request.path_params["order_no"], request)

    return [Route("/api/v1/orders", create_order, methods=["POST"]),
            Route("/pay/epay/notify", epay_notify, methods=["GET", "POST"]),
            Route("/api/v1/orders/{order_no}", order_by_path, methods=["GET"])]


def token_from(request: Request, order_no: str, header: str | None) -> str | None:
    return header or request.query_params.get("t") or request.cookies.get(ORDER_COOKIE_PREFIX + order_no)


@router.get("/api/v1/orders/{order_no}", tags=["store"], openapi_extra=documented(headers=("x-order-token",)))
async def get_order(order_no: str, request: Request):
    ctx = ctx_of(request)
    canonical = normalize_order_no(order_no) or ""
    token = token_from(request, canonical, request.headers.get("x-order-token"))
    if not check_order_access_token(ctx.settings.secret_key, canonical, token):
        raise orders.LookupFailed()
    view = await read(ctx.sessions, lambda session: owner_view(session, ctx, canonical), lean=True)
    if view is None:
        raise orders.OrderNotFound()
    return FastJSONResponse(view)  # plain JSON values (see order_view): no jsonable_encoder walk


def check_lookup_rate(request: Request, order_no: str) -> None:
    limits = request.app.state.limits
    ip_key = "ip:" + client_ip(request)
    order_key = "order:" + (normalize_order_no(order_no) or order_no)
    if not limits["lookup_ip"].allowed(ip_key) or not limits["lookup_order"].allowed(order_key):
        raise RateLimited()
    limits["lookup_ip"].hit(ip_key)


def record_lookup_failure(request: Request, order_no: str) -> None:
    request.app.state.limits["lookup_order"].hit("order:" + (normalize_order_no(order_no) or order_no))


async def lookup(ctx: AppContext, request: Request, body: OrderLookup):
    """Rate-limited guest lookup shared by the API and the lookup page."""
    check_lookup_rate(request, body.order_no)
    async with unit_of_work(ctx.sessions) as session:
        try:
            return await orders.lookup_order(session, body.order_no, body.contact, body.query_password)
        except orders.LookupFailed:
            record_lookup_failure(request, body.order_no)
            raise


@router.post("/api/v1/orders/lookup", tags=["store"])
async def lookup_order(body: OrderLookup, request: Request, ctx: AppContext = Depends(get_ctx)):
    order = await lookup(ctx, request, body)
    async with unit_of_work(ctx.sessions) as session:
        view = await order_view(session, ctx, await session.get(Order, order.id), reveal_keys=True)
    return {"access_token": order_access_token(ctx.settings.secret_key, order.order_no), "order": view}


@router.post("/api/v1/orders/{order_no}/check-payment", tags=["store"])
async def check_payment(order_no: str, request: Request, ctx: AppContext = Depends(get_ctx),
                        x_order_token: str | None = Header(default=None)):
    """「我已付款」: ask the gateway now instead of waiting for a notify that may be lost."""
    canonical = normalize_order_no(order_no) or ""
    if not check_order_access_token(ctx.settings.secret_key, canonical, token_from(request, canonical, x_order_token)):
        raise orders.LookupFailed()
    # Its own budget: tapping 「我已付款」 a few times must not lock the customer out of lookups.
    limiter = request.app.state.limits["check_payment"]
    if not limiter.allowed(canonical):
        raise RateLimited()
    limiter.hit(canonical)
    async with unit_of_work(ctx.sessions) as session:
        order_id = (await orders.get_order(session, canonical)).id
    try:
        recovered = await payments.recover_payment(ctx, order_id)
    except epay.EpayError:
        recovered = False
    async with unit_of_work(ctx.sessions) as session:
        order = await orders.get_order(session, canonical)
        return {"recovered": recovered, "status": order.status}


@router.api_route("/pay/epay/notify", methods=["GET", "POST"], include_in_schema=False)
async def epay_notify(request: Request):
    verdict = await payments.handle_notify(ctx_of(request), await request_params(request), client_ip(request))
    if verdict == "rejected":
        return PlainTextResponse("fail", status_code=400)
    return PlainTextResponse("success")


@router.get("/pay/epay/return/{order_no}/{token}", include_in_schema=False)
async def epay_return(order_no: str, token: str, ctx: AppContext = Depends(get_ctx)):
    """Where the gateway sends the buyer back. It proves nothing about payment; the notify does."""
    canonical = normalize_order_no(order_no) or ""
    if not check_order_access_token(ctx.settings.secret_key, canonical, token):
        return RedirectResponse("/lookup", status_code=303)
    response = RedirectResponse(f"/orders/{canonical}", status_code=303)
    set_order_cookie(response, ctx, canonical, token)
    return response


def set_order_cookie(response, ctx: AppContext, order_no: str, token: str) -> None:
    response.set_cookie(ORDER_COOKIE_PREFIX + order_no, token, max_age=180 * 24 * 3600, httponly=True,
                        samesite="lax", secure=ctx.settings.base_url.startswith("https"))


@router.post("/supplier/callback", include_in_schema=False)
async def supplier_callback(request: Request, ctx: AppContext = Depends(get_ctx)):
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # not JSON, or nested past what the parser takes
        body = None
    result = await suppliers.handle_callback(ctx, body)
    if result in ("rejected", "unknown"):
        return JSONResponse({"code": 400, "message": result}, status_code=400)
    return {"code": 0, "message": result}
