"""A built-in 易支付-compatible gateway for the demo and the tests (mounted only when enabled).

It speaks the real protocol over real HTTP: `submit.php` (cashier page), `api.php?act=order`
(active query) and `api.php?act=refund`, and sends signed notifies to the merchant's notify_url.
It can simulate a lost notify. Its state lives in its own tables (the remote side's books).
"""

from __future__ import annotations

import asyncio
import html
import secrets
from decimal import Decimal
from urllib.parse import urlencode

import httpx
import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy import select

from zaima.context import AppContext
from zaima.core.http import PooledClient
from zaima.core.money import MoneyFormatError, format_yuan, parse_yuan
from zaima.db import unit_of_work
from zaima.models import DemoGatewayTrade
from zaima.store import epay
from zaima.web.deps import get_ctx, request_params

router = APIRouter(prefix="/demo-gateway", include_in_schema=False)
log = structlog.get_logger("zaima.demo.gateway")
NOTIFY_RETRY_SECONDS = (0, 1, 3, 10, 30)
_background: set[asyncio.Task] = set()


def _trade_params(trade: DemoGatewayTrade, key: str) -> dict[str, str]:
    return epay.signed({"pid": trade.pid, "trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no,
                        "type": trade.pay_type, "name": trade.name, "money": trade.money,
                        "trade_status": "TRADE_SUCCESS"}, key)


_HTTP = PooledClient(timeout=10)  # the demo gateway's outbound notifies


async def send_notify(notify_url: str, params: dict[str, str]) -> bool:
    """Deliver a notify like a real gateway: retry until the merchant answers `success`."""
    for delay in NOTIFY_RETRY_SECONDS:
        await asyncio.sleep(delay)
        try:
            response = await _HTTP.get().get(notify_url, params=params)
            if response.text.strip() == "success":
                return True
        except httpx.HTTPError as exc:
            log.info("demo_notify_retry", error=exc.__class__.__name__)
    return False


def _spawn(coro) -> None:
    task = asyncio.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title>
<link rel="stylesheet" href="/static/zaima.css"></head>
<body class="gateway"><main class="card narrow"><p class="badge">演示支付平台 · Demo gateway</p>{body}</main></body></html>"""
    )


@router.api_route("/submit.php", methods=["GET", "POST"])
async def submit(request: Request, ctx: AppContext = Depends(get_ctx)):
    params = await request_params(request)
    if params.get("pid") != ctx.settings.epay_pid or not epay.verify(params, ctx.settings.epay_key):
        return _page("签名错误", "<h1>签名校验失败</h1><p>Signature check failed.</p>")
    try:
        money = format_yuan(parse_yuan(params.get("money", "")))
    except MoneyFormatError:
        return _page("金额错误", "<h1>金额格式错误</h1>")
    async with unit_of_work(ctx.sessions) as session:
        trade = await session.scalar(select(DemoGatewayTrade).where(
            DemoGatewayTrade.out_trade_no == params.get("out_trade_no", "")))
        if trade is None:
            trade = DemoGatewayTrade(
                trade_no=ctx.clock.now().strftime("%Y%m%d%H%M%S") + secrets.token_hex(4),
                pid=params["pid"], out_trade_no=params.get("out_trade_no", "")[:64],
                pay_type=params.get("type", "alipay"), name=params.get("name", "")[:200], money=money,
                notify_url=params.get("notify_url", ""), return_url=params.get("return_url", ""),
                status=0, created_at=ctx.clock.now())
            session.add(trade)
            await session.flush()
        elif trade.money != money:
            return _page("金额不一致", "<h1>同一订单号的金额不一致</h1>")
        paid = trade.status == 1
        trade_no, name, pay_type = trade.trade_no, trade.name, trade.pay_type
    label = epay.PAY_TYPES.get(pay_type, pay_type)
    if paid:
        buttons = "<p class='ok'>该订单已支付 · Already paid</p>"
    else:
        buttons = f"""<form method="post" action="/demo-gateway/pay">
<input type="hidden" name="trade_no" value="{html.escape(trade_no)}">
<button class="btn primary big" name="mode" value="normal" type="submit">确认支付 ¥{money}</button>
<button class="btn ghost" name="mode" value="lost_notify" type="submit">模拟：支付成功但回调丢失</button>
</form>"""
    return _page("收银台", f"""<h1>收银台 · Cashier</h1>
<p class="muted">{html.escape(label)} · 商户订单号 {html.escape(params.get('out_trade_no', ''))}</p>
<p>{html.escape(name)}</p><p class="amount">¥{money}</p>{buttons}""")


async def mark_paid(ctx: AppContext, trade_no: str) -> DemoGatewayTrade | None:
    async with unit_of_work(ctx.sessions) as session:
        trade = await session.scalar(select(DemoGatewayTrade).where(DemoGatewayTrade.trade_no == trade_no))
        if trade is None:
            return None
        if trade.status == 0:
            trade.status = 1
            trade.paid_at = ctx.clock.now()
        return trade


@router.post("/pay")
async def pay(request: Request, ctx: AppContext = Depends(get_ctx)):
    form = await request.form()
    trade = await mark_paid(ctx, str(form.get("trade_no", "")))
    if trade is None:
        return _page("订单不存在", "<h1>订单不存在</h1>")
    params = _trade_params(trade, ctx.settings.epay_key)
    if form.get("mode") != "lost_notify":
        _spawn(send_notify(trade.notify_url, params))
    sep = "&" if "?" in trade.return_url else "?"
    return RedirectResponse(trade.return_url + sep + urlencode(params), status_code=303)


@router.api_route("/api.php", methods=["GET", "POST"])
async def api(request: Request, ctx: AppContext = Depends(get_ctx)):
    params = await request_params(request)
    if params.get("pid") != ctx.settings.epay_pid or params.get("key") != ctx.settings.epay_key:
        return JSONResponse({"code": -3, "msg": "商户ID或密钥错误"})
    async with unit_of_work(ctx.sessions) as session:
        query = select(DemoGatewayTrade)
        if params.get("trade_no"):
            query = query.where(DemoGatewayTrade.trade_no == params["trade_no"])
        else:
            query = query.where(DemoGatewayTrade.out_trade_no == params.get("out_trade_no", ""))
        if params.get("act") == "refund":
            query = query.with_for_update()  # concurrent refunds of one trade must not lose an update
        trade = await session.scalar(query)
        if trade is None:
            return JSONResponse({"code": -1, "msg": "订单号不存在"})
        if params.get("act") == "order":
            return {"code": 1, "msg": "查询订单号成功！", "trade_no": trade.trade_no,
                    "out_trade_no": trade.out_trade_no, "type": trade.pay_type, "pid": trade.pid,
                    "addtime": trade.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    "endtime": trade.paid_at.strftime("%Y-%m-%d %H:%M:%S") if trade.paid_at else "",
                    "name": trade.name, "money": trade.money, "status": trade.status}
        if params.get("act") == "refund":
            try:
                amount = Decimal(format_yuan(parse_yuan(params.get("money", ""))))
            except MoneyFormatError:
                return JSONResponse({"code": -1, "msg": "退款金额格式错误"})
            left = Decimal(trade.money) - Decimal(trade.refunded_money)
            if trade.status != 1 or amount <= 0 or amount > left:
                return JSONResponse({"code": -1, "msg": "退款金额超出可退金额"})
            trade.refunded_money = str(Decimal(trade.refunded_money) + amount)
            return {"code": 1, "msg": "退款成功"}
    return JSONResponse({"code": -4, "msg": "不支持的操作"})


@router.post("/test/pay")
async def test_pay(request: Request, ctx: AppContext = Depends(get_ctx)):
    """Pay a trade without the cashier page (tests, demo seeding). Body: out_trade_no, notify (bool)."""
    body = await request.json()
    async with unit_of_work(ctx.sessions) as session:
        trade = await session.scalar(select(DemoGatewayTrade).where(
            DemoGatewayTrade.out_trade_no == str(body.get("out_trade_no", ""))))
        trade_no = trade.trade_no if trade else ""
    trade = await mark_paid(ctx, trade_no)
    if trade is None:
        return JSONResponse({"code": -1, "msg": "订单号不存在"}, status_code=404)
    if body.get("notify", True):
        await send_notify(trade.notify_url, _trade_params(trade, ctx.settings.epay_key))
    return {"code": 1, "trade_no": trade.trade_no}
