"""Storefront pages (zh-CN first, English second): product list, buy form, payment hand-off, order page,
guest order lookup and "how to reach support". Thin routes over zaima.store; the rules live there."""

from __future__ import annotations

import time
from datetime import datetime
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, pass_context
from pydantic import ValidationError

from zaima.context import AppContext
from zaima.conversations.identity import issue_order_context
from zaima.core.errors import DomainError, ValidationFailed
from zaima.core.ids import display_order_no, normalize_order_no
from zaima.core.money import format_yuan
from zaima.core.signing import check_order_access_token, order_access_token
from zaima.db import unit_of_work
from zaima.models import Product
from zaima.service.calendar import BusinessCalendar, describe_week, load_calendar
from zaima.service.policy import load_sla
from zaima.store import api, catalog, orders
from zaima.store.epay import PAY_TYPES
from zaima.store.policy import store_after_sales
from zaima.store.schemas import OrderCreate, OrderLookup
from zaima.store.views import KIND_TEXT, order_view
from zaima.web import TEMPLATES_DIR
from zaima.web.deps import client_ip, get_ctx

SERVICE_FACTS_SECONDS = 10.0  # pages may show hours changed on another node this much later
_service_facts: dict[int, tuple[float, dict]] = {}


async def service_facts(request: Request) -> None:
    """The store's service hours and reply promise for the page footer and /support, read from the
    service settings (cached for a few seconds per process)."""
    ctx = request.app.state.ctx
    cached = _service_facts.get(id(ctx))
    if cached is None or time.monotonic() - cached[0] > SERVICE_FACTS_SECONDS:
        async with unit_of_work(ctx.sessions) as session:
            calendar = await load_calendar(session)
            minutes = (await load_sla(session)).targets["normal"].first_response
        facts = {
            "hours": (describe_week(calendar), describe_week(calendar, "en")),
            "reply": (f"服务时间内一般 {minutes} 分钟内回复；非服务时间的留言会生成工单，在下一个服务时段按顺序处理，"
                      "并告诉您最晚回复时间。",
                      f"During service hours we usually reply within {minutes} minutes; messages left outside "
                      "them become tickets, answered in order when service opens, with a promised reply time."),
        }
        cached = _service_facts[id(ctx)] = (time.monotonic(), facts)
    request.state.service_facts = cached[1]


def _facts(request: Request) -> dict:
    """Pages on this router have the facts loaded; others (console, rating page) get the defaults."""
    facts = getattr(request.state, "service_facts", None)
    if facts is None:
        default = BusinessCalendar.from_settings(None)
        facts = {"hours": (describe_week(default), describe_week(default, "en")), "reply": ("", "")}
    return facts


def forget_service_facts() -> None:
    """The operator changed the service settings: show them on the next page."""
    _service_facts.clear()


router = APIRouter(include_in_schema=False, dependencies=[Depends(service_facts)])

LANG_COOKIE = "zaima_lang"
LANGS = ("zh-CN", "en")
SHANGHAI = ZoneInfo("Asia/Shanghai")
PAY_TYPES_EN = {"alipay": "Alipay", "wxpay": "WeChat Pay", "qqpay": "QQ Wallet"}
# Orders whose page keeps polling the JSON API: something is about to change without the buyer doing anything.
LIVE_STATUSES = ("pending_payment", "paid", "delivering", "awaiting_stock")
RECHARGE_TEXT = {
    "pending": ("等待提交", "Waiting to be submitted"),
    "submitted": ("已提交供应商", "Submitted to the supplier"),
    "accepted": ("供应商处理中", "Being processed by the supplier"),
    "succeeded": ("充值成功", "Succeeded"),
    "failed": ("充值失败", "Failed"),
}


# ---------------------------------------------------------------------------------------------------
# DEMO VALUES. The store name and the channels listed on /support are hard-coded here until the operator
# settings for them exist. Service hours and the reply promise come from the service settings.
# Every value is (zh-CN, en).
# ---------------------------------------------------------------------------------------------------
SUPPORT_INFO: dict = {
    "store_name": ("在吗数字商店", "Zaima Store"),
    "channels": [
        {"name": ("客服邮箱", "E-mail"), "value": "support@zaima.example", "href": "mailto:support@zaima.example",
         "note": ("全天可发，工作时间内处理", "Any time; handled during service hours")},
        {"name": ("客服电话", "Phone"), "value": "400-000-0000", "href": "tel:4000000000",
         "note": ("仅工作时间接听", "Answered during service hours only")},
        {"name": ("QQ 客服", "QQ"), "value": "800000000", "href": "",
         "note": ("添加时请备注订单号", "Put your order number in the friend request")},
    ],
}


# --- rendering ---------------------------------------------------------------------------------------

def _lang(request: Request) -> tuple[str, bool]:
    """(language, whether the choice came from ?lang= and must be remembered in a cookie)."""
    asked = request.query_params.get("lang")
    if asked in LANGS:
        return asked, True
    if asked in ("zh", "cn"):
        return "zh-CN", True
    return ("en" if request.cookies.get(LANG_COOKIE) == "en" else "zh-CN"), False


@pass_context
def _tr(context, zh: str, en: str) -> str:
    return en if context.get("lang") == "en" else zh


def _pick(lang: str, pair) -> str:
    """A (zh, en) pair or a plain string, in the page's language."""
    if isinstance(pair, (tuple, list)):
        return pair[1] if lang == "en" and pair[1] else pair[0]
    return pair


def _beijing_time(iso: str | datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if not iso:
        return ""
    when = datetime.fromisoformat(iso) if isinstance(iso, str) else iso
    return when.astimezone(SHANGHAI).strftime(fmt)


_env = Environment(loader=FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True, trim_blocks=True,
                   lstrip_blocks=True)
_env.globals.update(tr=_tr)
_env.filters.update(bjt=_beijing_time)

# Pages hold order data and card keys; nothing but our own files may run in them.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def render(request: Request, template: str, status: int = 200, switch_path: str | None = None,
           private: bool = False, **values) -> HTMLResponse:
    lang, remember = _lang(request)
    query = {k: v for k, v in request.query_params.items() if k not in ("lang", "t")}
    path = switch_path or request.url.path
    switch = {"zh-CN": "en", "en": "zh-CN"}[lang]
    values.update(
        lang=lang,
        request=request,
        store_name=_pick(lang, SUPPORT_INFO["store_name"]),
        service_hours=_pick(lang, _facts(request)["hours"]),
        lang_url=f"{path}?{urlencode({**query, 'lang': switch})}",
        pick=lambda pair: _pick(lang, pair),
    )
    response = HTMLResponse(_env.get_template(template).render(**values), status_code=status)
    response.headers.update(SECURITY_HEADERS)
    if private:
        response.headers["Cache-Control"] = "no-store"
    if remember:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 24 * 3600, samesite="lax")
    return response


def error_message(request: Request, exc: DomainError) -> str:
    return exc.message_en if _lang(request)[0] == "en" else exc.message_zh


def not_found(request: Request) -> HTMLResponse:
    return render(request, "not_found.html", status=404)


# --- product list and product page ------------------------------------------------------------------

def _stock_state(product, available: int | None) -> dict:
    """How much can be bought right now, in words: 有货 N / 缺货（可预订）/ 缺货 / 直充 (no stock)."""
    if available is None:
        return {"state": "recharge", "text": ("自动充值", "Instant top-up"), "buyable": True}
    if available > 0:
        return {"state": "in_stock", "text": (f"有货 {available}", f"In stock: {available}"), "buyable": True}
    if product.allow_backorder:
        return {"state": "backorder", "text": ("缺货（可预订，补货自动发货）",
                                               "Out of stock (order now; delivered when restocked)"),
                "buyable": True}
    return {"state": "sold_out", "text": ("缺货", "Sold out"), "buyable": False}


def _product_card(product, available: int | None) -> dict:
    view = api.product_view(product, available)
    view["kind_text"] = KIND_TEXT[product.kind]
    view["stock"] = _stock_state(product, available)
    return view


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, ctx: AppContext = Depends(get_ctx)):
    async with unit_of_work(ctx.sessions) as session:
        products = [_product_card(p, n) for p, n in await api.products_with_stock(session)]
    return render(request, "home.html", products=products)


async def _load_product(ctx: AppContext, sku: str) -> dict | None:
    async with unit_of_work(ctx.sessions) as session:
        try:
            product = await catalog.get_product(session, sku, active_only=True)
        except DomainError:
            return None
        available = None
        if product.is_stocked:
            counts = await catalog.stock_counts(session, [product.id])
            available = counts.get(product.id, {}).get("available", 0)
        return _product_card(product, available)


def _product_page(request: Request, product: dict, form: dict | None = None, error: DomainError | None = None,
                  status: int = 200) -> HTMLResponse:
    form = form or {"quantity": str(product["min_quantity"]), "pay_type": "alipay", "inputs": {}}
    field = (error.details.get("field") if error else None) or ""
    # Errors without a field of their own (stock ran out, product withdrawn) go above the button.
    known = {"quantity", "contact", "query_password", "pay_type"} | {f["name"] for f in product["input_fields"]}
    return render(request, "product.html", status=status, switch_path=f"/p/{product['sku']}",
                  product=product, form=form, pay_types=PAY_TYPES, pay_types_en=PAY_TYPES_EN,
                  ttl=request.app.state.ctx.settings.order_ttl_minutes,
                  error_field=field if field in known else "",
                  error_text=error_message(request, error) if error else "")


@router.get("/p/{sku}", response_class=HTMLResponse)
async def product_page(sku: str, request: Request, ctx: AppContext = Depends(get_ctx)):
    product = await _load_product(ctx, sku)
    if product is None:
        return not_found(request)
    return _product_page(request, product)


_FIELD_NAMES = {"quantity": "购买数量", "contact": "联系方式", "query_password": "查询密码", "pay_type": "支付方式"}


def _field_of_validation_error(exc: ValidationError) -> str:
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if loc:
            return loc[-1] if loc[0] == "inputs" else loc[0]
    return ""


@router.post("/p/{sku}/buy", response_class=HTMLResponse)
async def buy(sku: str, request: Request, ctx: AppContext = Depends(get_ctx)):
    product = await _load_product(ctx, sku)
    if product is None:
        return not_found(request)
    data = await request.form()
    form = {
        "quantity": str(data.get("quantity", "")).strip(),
        "contact": str(data.get("contact", "")).strip(),
        "query_password": str(data.get("query_password", "")),
        "pay_type": str(data.get("pay_type", "alipay")),
        "inputs": {f["name"]: str(data.get("in_" + f["name"], "")).strip() for f in product["input_fields"]},
    }
    try:
        try:
            quantity = int(form["quantity"] or product["min_quantity"])
        except ValueError:
            raise ValidationFailed("请填写正确的购买数量", "enter a valid quantity", field="quantity") from None
        try:
            body = OrderCreate(sku=sku, quantity=quantity, contact=form["contact"],
                               query_password=form["query_password"] or None, inputs=form["inputs"] or None,
                               pay_type=form["pay_type"])
        except ValidationError as exc:
            field = _field_of_validation_error(exc)
            if field == "quantity":  # outside the API's absolute bounds (1–1000): say the product's own
                lo, hi = product["min_quantity"], product["max_quantity"]
                raise ValidationFailed(f"购买数量需在 {lo}–{hi} 之间", f"quantity must be between {lo} and {hi}",
                                       field=field) from None
            raise ValidationFailed(f"输入有误，请检查「{_FIELD_NAMES.get(field, field)}」",
                                   f"invalid input: {field}", field=field) from None
        order, links = await api.place_order(ctx, body, client_ip(request))
    except DomainError as exc:
        # The password is never echoed back into the page.
        form["query_password"] = ""
        return _product_page(request, product, form, exc, status=exc.status)
    response = RedirectResponse(f"/pay/{order.order_no}", status_code=303)
    api.set_order_cookie(response, ctx, order.order_no, links["access_token"])
    return response


# --- ownership --------------------------------------------------------------------------------------

def _owner_token(request: Request, ctx: AppContext, order_no: str) -> tuple[str | None, bool]:
    """(a valid access token, whether it came in the URL and so should be stored in the cookie)."""
    secret = ctx.settings.secret_key
    given = request.query_params.get("t")
    if given and check_order_access_token(secret, order_no, given):
        return given, True
    cookie = request.cookies.get(api.ORDER_COOKIE_PREFIX + order_no)
    if cookie and check_order_access_token(secret, order_no, cookie):
        return cookie, False
    return None, False


def _owner(request: Request, ctx: AppContext, order_no: str) -> tuple[str, str | None, bool]:
    """(canonical order no, owner token or None, whether the token came in the URL)."""
    canonical = normalize_order_no(order_no) or ""
    token, from_url = _owner_token(request, ctx, canonical) if canonical else (None, False)
    return canonical, token, from_url


async def _order_or_none(session, order_no: str):
    try:
        return await orders.get_order(session, order_no)
    except DomainError:
        return None


def _to_lookup(order_no: str) -> RedirectResponse:
    """An order or pay link without a valid owner token (cut short, or opened on another device): the lookup
    form, filled in, saying why it is asked for."""
    return RedirectResponse("/lookup?" + urlencode({"order_no": order_no[:40], "verify": "1"}), status_code=303)


# --- payment hand-off -------------------------------------------------------------------------------

@router.get("/pay/{order_no}", response_class=HTMLResponse)
async def pay_page(order_no: str, request: Request, ctx: AppContext = Depends(get_ctx)):
    canonical, token, from_url = _owner(request, ctx, order_no)
    if token is None:
        return _to_lookup(order_no)
    async with unit_of_work(ctx.sessions) as session:
        order = await _order_or_none(session, canonical)
        if order is None:
            return _to_lookup(order_no)
        if order.status != "pending_payment":
            response = RedirectResponse(f"/orders/{canonical}", status_code=303)
            if from_url:
                api.set_order_cookie(response, ctx, canonical, token)
            return response
        product = await session.get(Product, order.product_id)
        labels = {f["name"]: f for f in product.input_fields or []}
        links = api.checkout_links(ctx, order, product.name)
        remaining = max(0, int((order.expires_at - ctx.clock.now()).total_seconds()))
        page = dict(
            order_no=canonical, display_no=display_order_no(canonical),
            product={"name": product.name, "name_en": product.name_en or product.name, "kind": product.kind},
            kind_text=KIND_TEXT[product.kind],
            quantity=order.quantity, amount=format_yuan(order.amount_fen),
            pay_type=(PAY_TYPES.get(order.pay_type, order.pay_type), PAY_TYPES_EN.get(order.pay_type, order.pay_type)),
            recharge_inputs=[(labels.get(k, {}), v) for k, v in (order.recharge_inputs or {}).items()],
            remaining=remaining, pay_url=links.get("pay_url"),
        )
    response = render(request, "pay.html", private=True, **page)
    if from_url:
        api.set_order_cookie(response, ctx, canonical, token)
    return response


# --- order page -------------------------------------------------------------------------------------

def _key_parts(kind: str, secret: str) -> list[tuple[tuple[str, str], str]]:
    """Split a delivered secret into labelled parts: account pairs are stored as `user----pass`."""
    if "----" in secret:
        first, second = secret.split("----", 1)
        first_label = ("账号", "Account") if kind == "account" else ("卡号", "Card number")
        return [(first_label, first), (("密码", "Password"), second)]
    label = {"license": ("激活码", "Licence key"), "account": ("账号", "Account")}.get(kind, ("卡密", "Card key"))
    return [(label, secret)]


NEXT_STEP: dict[str, tuple[str, str]] = {
    "pending_payment": ("还没有收到这笔订单的付款。如果您刚刚付过款，请稍候，本页会自动更新，不要重复付款；"
                        "还没付的话，请在订单关闭前完成支付。",
                        "We have not received the payment for this order yet. If you just paid, wait a moment: this "
                        "page updates by itself; do not pay twice. Otherwise, pay before the order closes."),
    "paid": ("已收到您的付款，系统正在自动发货，通常几秒内完成。本页会自动刷新，无需重复付款。",
             "We have your payment and are delivering it now, usually within seconds. This page refreshes "
             "by itself; do not pay again."),
    "delivering": ("已提交充值，一般 10 分钟内到账。本页会自动刷新；到账后状态会变为「已发货」。"
                   "如超过 30 分钟仍未到账，请联系客服。",
                   "The recharge has been submitted and usually arrives within 10 minutes. This page refreshes "
                   "by itself. If nothing arrives within 30 minutes, contact support."),
    "awaiting_stock": ("您已付款成功，但该商品暂时缺货。补货后系统会自动发货，卡密会显示在本页（无需重新下单）。"
                       "不想等待可以联系客服申请退款。",
                       "Your payment went through, but the item is out of stock. It is delivered automatically to "
                       "this page when restocked; no need to order again. Contact support if you prefer a refund."),
    # A failed recharge the store refunds automatically is `refunded` by now; one still here waits for a person.
    "delivery_failed": ("充值没有成功，这笔订单需要客服核实后为您退款或重新充值，钱不会丢。请点「联系客服」并说「退款」，"
                        "客服会看到这笔订单；您无需重复下单。",
                        "The recharge did not succeed. This order needs our staff to refund it or top up again; your "
                        "money is safe. Tap “Contact support” and say “refund”: they will see this order. No need "
                        "to order again."),
    "expired": ("订单超时未付款，已自动关闭。如果您其实已经付款，系统会自动识别并为您发货；"
                "如有疑问请联系客服。需要购买请重新下单。",
                "The order closed because it was not paid in time. If you did pay, the payment is recognised and "
                "delivered automatically; contact support if in doubt. To buy, place a new order."),
    "refunded": ("款项已原路退回您的付款账户，到账时间以支付平台为准。",
                 "The money was returned to the account you paid with; arrival time depends on the payment "
                 "provider."),
    "partially_refunded": ("部分商品已发货，未发货的部分已退款。",
                           "Part of the order was delivered; the undelivered part was refunded."),
    "delivered": ("已自动发货，内容就在下方。请按使用说明操作；用不了或有疑问，点「联系客服」。",
                  "Delivered automatically; it is right below. Follow the instructions; if something does not "
                  "work, tap “Contact support”."),
}
RECHARGE_DELIVERED = ("充值已成功到账。如果游戏内没看到，请重新登录后再查看；仍有问题请联系客服。",
                      "The top-up went through. If you do not see it in the game, log in again; still missing? "
                      "Contact support.")


@router.get("/orders/{order_no}", response_class=HTMLResponse)
async def order_page(order_no: str, request: Request, ctx: AppContext = Depends(get_ctx)):
    canonical, token, from_url = _owner(request, ctx, order_no)
    if token is None:
        return _to_lookup(order_no)
    async with unit_of_work(ctx.sessions) as session:
        order = await _order_or_none(session, canonical)
        if order is None:
            return _to_lookup(order_no)
        view = await order_view(session, ctx, order, reveal_keys=True)
        product = await session.get(Product, order.product_id)
        labels = {f["name"]: f for f in product.input_fields or []}
    # The widget opens with this order attached: the visitor has just proved they own it.
    order_context = issue_order_context(ctx.settings, ctx.clock, order)
    kind = view["product"]["kind"]
    view["key_items"] = [_key_parts(kind, k["secret"]) for k in view["keys"]]
    view["recharge_rows"] = [(labels.get(k, {}), v) for k, v in (view["recharge_inputs"] or {}).items()]
    if view.get("recharge"):
        view["recharge"]["text"] = RECHARGE_TEXT.get(view["recharge"]["status"],
                                                     (view["recharge"]["status"],) * 2)
    response = render(request, "order.html", private=True, order=view, order_context=order_context, next_step=RECHARGE_DELIVERED if kind == "recharge" and view["status"] == "delivered"
                      else NEXT_STEP.get(view["status"]),
                      live=view["status"] in LIVE_STATUSES,
                      kind_text=KIND_TEXT[kind],
                      pay_type=(PAY_TYPES.get(view["pay_type"], view["pay_type"]),
                                PAY_TYPES_EN.get(view["pay_type"], view["pay_type"])))
    if from_url:
        api.set_order_cookie(response, ctx, canonical, token)
    return response


# --- guest lookup -----------------------------------------------------------------------------------

def _lookup_page(request: Request, form: dict, error: str = "", status: int = 200, verify: bool = False) -> HTMLResponse:
    return render(request, "lookup.html", status=status, switch_path="/lookup", form=form, error_text=error,
                  verify=verify)


@router.get("/lookup", response_class=HTMLResponse)
async def lookup_page(request: Request):
    typed = request.query_params.get("order_no", "")[:40]
    canonical = normalize_order_no(typed)
    order_no = display_order_no(canonical) if canonical else typed
    return _lookup_page(request, {"order_no": order_no, "by": "contact", "contact": ""},
                        verify=request.query_params.get("verify") == "1")


@router.post("/lookup", response_class=HTMLResponse)
async def lookup_submit(request: Request, ctx: AppContext = Depends(get_ctx)):
    data = await request.form()
    by = "password" if data.get("by") == "password" else "contact"
    form = {"order_no": str(data.get("order_no", "")).strip()[:40], "by": by,
            "contact": str(data.get("contact", "")).strip()[:200]}
    password = str(data.get("query_password", ""))[:64]
    try:
        body = OrderLookup(order_no=form["order_no"], contact=form["contact"] if by == "contact" else None,
                           query_password=password if by == "password" else None)
        order = await api.lookup(ctx, request, body)
    except (DomainError, ValidationError) as exc:
        if isinstance(exc, ValidationError):  # cannot happen with the truncation above; same answer anyway
            exc = orders.LookupFailed()
        return _lookup_page(request, form, error_message(request, exc), status=exc.status)
    response = RedirectResponse(f"/orders/{order.order_no}", status_code=303)
    api.set_order_cookie(response, ctx, order.order_no, order_access_token(ctx.settings.secret_key, order.order_no))
    return response


# --- support ----------------------------------------------------------------------------------------

@router.get("/policy", response_class=HTMLResponse)
async def policy_page(request: Request, ctx: AppContext = Depends(get_ctx)):
    async with unit_of_work(ctx.sessions) as session:
        policy = await store_after_sales(session)
    return render(request, "policy.html", policy=policy)


@router.get("/support", response_class=HTMLResponse)
async def support_page(request: Request):
    order_no = normalize_order_no(request.query_params.get("order", "")[:40])
    lang = _lang(request)[0]
    channels = []
    for channel in SUPPORT_INFO["channels"]:
        href = channel["href"]
        if href.startswith("mailto:") and order_no:
            subject = ("订单 " if lang != "en" else "Order ") + display_order_no(order_no)
            href += "?subject=" + quote(subject)
        channels.append({**channel, "href": href})
    return render(request, "support.html", order_no=order_no,
                  display_no=display_order_no(order_no) if order_no else "",
                  channels=channels, reply=_facts(request)["reply"])
