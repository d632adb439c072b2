"""A built-in simulated 直充 supplier (demo and tests only), speaking zaima.store.supplier_protocol.

Each order plays a scenario: outcome (succeeded / failed), delay, how many status queries answer
`unconfirmed` first, and how callbacks behave (normal, none, repeat, late, plus extra contradictory
ones). Tests queue scenarios with POST /demo-supplier/control/next; the demo derives them from the
game UID: one ending in 0000 fails, one ending in 9999 stays in processing, others succeed.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta

import httpx
import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from zaima.context import AppContext
from zaima.core.http import PooledClient
from zaima.db import unit_of_work
from zaima.models import DemoSupplierOrder
from zaima.store import supplier_protocol
from zaima.web.deps import get_ctx

router = APIRouter(prefix="/demo-supplier", include_in_schema=False)
log = structlog.get_logger("zaima.demo.supplier")
_HTTP = PooledClient(timeout=10)  # the demo supplier's outbound callbacks
DEFAULT_SCENARIO = {"outcome": "succeeded", "delay_seconds": 3, "unconfirmed_polls": 0, "callback": "normal",
                    "extra_callbacks": [], "message": ""}
_queued: list[dict] = []
_background: set[asyncio.Task] = set()


def _scenario_for(account: dict) -> dict:
    if _queued:
        return {**DEFAULT_SCENARIO, **_queued.pop(0)}
    first = str(next(iter(account.values()), ""))
    if first.endswith("0000"):
        return {**DEFAULT_SCENARIO, "outcome": "failed", "message": "游戏账号不存在"}
    if first.endswith("9999"):
        return {**DEFAULT_SCENARIO, "delay_seconds": 10 * 365 * 86400, "callback": "none"}
    return dict(DEFAULT_SCENARIO)


def _status(order: DemoSupplierOrder, now) -> str:
    return order.scenario["outcome"] if now >= order.finishes_at else "processing"


def _signed(ctx: AppContext, params: dict) -> dict:
    params = {**params, "timestamp": int(ctx.clock.now().timestamp())}
    params["sign"] = supplier_protocol.sign(params, ctx.settings.supplier_secret)
    return params


async def _send_callbacks(ctx: AppContext, order_id: int) -> None:
    async with ctx.sessions() as session:
        order = await session.get(DemoSupplierOrder, order_id)
        scenario, url = order.scenario, order.callback_url
        base = {"request_id": order.request_id, "supplier_order_no": order.supplier_order_no,
                "message": scenario.get("message", "")}
    delay = float(scenario.get("delay_seconds", 0))
    mode = scenario.get("callback", "normal")
    if mode == "none":
        return
    await asyncio.sleep(delay * (2 if mode == "late" else 1))
    statuses = [scenario["outcome"]] * (3 if mode == "repeat" else 1) + list(scenario.get("extra_callbacks", []))
    for status in statuses:
        try:
            await _HTTP.get().post(url, json=_signed(ctx, {**base, "status": status}))
        except httpx.HTTPError as exc:
            log.info("demo_supplier_callback_failed", error=exc.__class__.__name__)


@router.post("/api/orders")
async def create(request: Request, ctx: AppContext = Depends(get_ctx)):
    body = await request.json()
    if not supplier_protocol.verify(body, ctx.settings.supplier_secret):
        return JSONResponse({"code": 401, "message": "签名错误"}, status_code=401)
    account = body.get("account") or {}
    async with unit_of_work(ctx.sessions) as session:
        order = await session.scalar(select(DemoSupplierOrder).where(
            DemoSupplierOrder.request_id == str(body.get("request_id", ""))))
        created = order is None
        if created:  # a repeated submit with the same request id is the same order
            scenario = _scenario_for(account)
            now = ctx.clock.now()
            order = DemoSupplierOrder(
                request_id=str(body["request_id"])[:64], supplier_order_no="SP" + secrets.token_hex(6).upper(),
                sku=str(body.get("sku", ""))[:64], account=account, callback_url=str(body.get("callback_url", "")),
                scenario=scenario, status="accepted", created_at=now,
                finishes_at=now + timedelta(seconds=float(scenario["delay_seconds"])))
            session.add(order)
            await session.flush()
        order_id, supplier_order_no = order.id, order.supplier_order_no
    if created:
        task = asyncio.create_task(_send_callbacks(ctx, order_id))
        _background.add(task)
        task.add_done_callback(_background.discard)
    return {"code": 0, "status": "accepted", "supplier_order_no": supplier_order_no}


@router.get("/api/orders/{request_id}")
async def query(request_id: str, request: Request, ctx: AppContext = Depends(get_ctx)):
    params = dict(request.query_params)
    # The signed request_id must be the one in the path, or a signed query could read another order.
    if params.get("request_id") != request_id or not supplier_protocol.verify(params, ctx.settings.supplier_secret):
        return JSONResponse({"code": 401, "message": "签名错误"}, status_code=401)
    async with unit_of_work(ctx.sessions) as session:
        order = await session.scalar(select(DemoSupplierOrder).where(DemoSupplierOrder.request_id == request_id))
        if order is None:
            return {"code": 404, "message": "订单不存在"}
        scenario = dict(order.scenario)
        if scenario.get("unconfirmed_polls", 0) > 0:
            scenario["unconfirmed_polls"] -= 1
            order.scenario = scenario
            status = "unconfirmed"
        else:
            status = _status(order, ctx.clock.now())
        return {"code": 0, "status": status, "supplier_order_no": order.supplier_order_no,
                "message": scenario.get("message", "") if status == "failed" else ""}


@router.post("/control/next")
async def queue_scenario(request: Request):
    """Queue the scenario for the next new supplier order (tests and demos)."""
    body = await request.json()
    _queued.append({k: v for k, v in body.items() if k in DEFAULT_SCENARIO})
    return {"queued": len(_queued)}
