"""直充 direct recharge through a supplier: the adapter interface, the HTTP adapter, and the flow.

Supplier order states: pending (not yet sent) → submitted → accepted → succeeded / failed.
`unconfirmed` (the supplier does not know yet) is still pending, never a failure. Results come by
callback or, when callbacks do not arrive, by polling with backoff. Terminal states never change:
a late or repeated callback after success is recorded and ignored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import httpx
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.core.audit import SUPPLIER, SYSTEM, Actor
from zaima.core.errors import Conflict
from zaima.core.http import PooledClient
from zaima.core.jsoncheck import storable_text
from zaima.jobs import RetryLater, enqueue, handler
from zaima.models import Order, Product, SupplierOrder
from zaima.store import supplier_protocol, timeline
from zaima.store.orders import transition
from zaima.store.policy import product_after_sales
from zaima.store.refunds import refund_undelivered

log = structlog.get_logger("zaima.suppliers")

POLL_BACKOFF_SECONDS = (15, 30, 60, 120, 300, 600, 1200, 1800)
GIVE_UP_POLLING_AFTER = timedelta(hours=48)
TERMINAL = ("succeeded", "failed")


class SupplierUnavailable(Exception):
    """Network error or an answer we cannot read: try again later, never treat as failure."""


@dataclass
class SupplierReport:
    status: str  # accepted | processing | unconfirmed | succeeded | failed
    supplier_order_no: str | None = None
    message: str = ""
    raw: dict | None = None

    def __post_init__(self):
        # What the supplier says is stored as it fits (a number as text, a NUL made visible, cut to the
        # column): refusing it would leave a genuine result unapplied and the order stuck.
        no = self.supplier_order_no
        self.supplier_order_no = storable_text(no, 64) if no not in (None, "") else None
        self.message = storable_text(self.message, 1000)


class SupplierAdapter:
    name = "supplier"

    async def submit(self, request_id: str, sku: str, account: dict, callback_url: str) -> SupplierReport:
        raise NotImplementedError

    async def query(self, request_id: str) -> SupplierReport:
        raise NotImplementedError

    def parse_callback(self, body: dict) -> tuple[str, SupplierReport] | None:
        """(request_id, report) for a genuine callback, None for a forged or malformed one."""
        raise NotImplementedError


class HttpSupplierAdapter(SupplierAdapter):
    name = "http"

    def __init__(self, base_url: str, app_id: str, secret: str, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.app_id = app_id
        self.secret = secret
        self.http = PooledClient(timeout, transport)

    def _signed(self, params: dict) -> dict:
        params = {**params, "app_id": self.app_id, "timestamp": int(time.time())}
        params["sign"] = supplier_protocol.sign(params, self.secret)
        return params

    async def _send(self, method: str, path: str, body: dict) -> dict:
        try:
            client = self.http.get()
            if method == "POST":
                response = await client.post(self.base_url + path, json=body)
            else:
                response = await client.get(self.base_url + path, params=body)
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SupplierUnavailable(exc.__class__.__name__) from exc
        if not isinstance(data, dict) or response.status_code >= 500:
            raise SupplierUnavailable(f"HTTP {response.status_code}")
        return data

    @staticmethod
    def _report(data: dict) -> SupplierReport:
        status = data.get("status")
        if status != "failed" and data.get("code") != 0:
            # An error answer (bad signature, rate limit, maintenance) is about the request, not the
            # recharge: only an explicit `failed` is a failure. Anything else may still succeed.
            raise SupplierUnavailable(f"supplier error {data.get('code')!r}: {str(data.get('message', ''))[:100]}")
        if status not in supplier_protocol.SUPPLIER_STATES:
            raise SupplierUnavailable(f"unknown supplier status {status!r}")
        return SupplierReport(status, data.get("supplier_order_no"), str(data.get("message", "")), data)

    async def submit(self, request_id, sku, account, callback_url):
        body = self._signed({"request_id": request_id, "sku": sku, "account": account,
                             "callback_url": callback_url})
        return self._report(await self._send("POST", "/api/orders", body))

    async def query(self, request_id):
        data = await self._send("GET", f"/api/orders/{request_id}", self._signed({"request_id": request_id}))
        if data.get("code") == 404:
            return SupplierReport("unconfirmed", None, "supplier does not know this order yet", data)
        return self._report(data)

    def parse_callback(self, body):
        if not isinstance(body, dict) or not supplier_protocol.verify(body, self.secret):
            return None
        status = body.get("status")
        if status not in supplier_protocol.SUPPLIER_STATES or not body.get("request_id"):
            return None
        return str(body["request_id"]), SupplierReport(status, body.get("supplier_order_no"),
                                                       str(body.get("message", "")), body)


def _log_entry(ctx, via: str, report: SupplierReport) -> dict:
    return {"at": ctx.clock.now().isoformat(), "via": via, "status": report.status, "message": report.message[:300]}


async def apply_report(session: AsyncSession, ctx, supplier_order: SupplierOrder, report: SupplierReport,
                       via: str, actor: Actor = SUPPLIER) -> str:
    """Apply what the supplier said (or, via="agent", what staff confirmed with the supplier).

    Returns 'applied', 'pending', 'duplicate' or 'conflict'.
    """
    now = ctx.clock.now()
    order = await session.get(Order, supplier_order.order_id)
    supplier_order.log = [*supplier_order.log, _log_entry(ctx, via, report)]
    supplier_order.last_checked_at = now
    if report.supplier_order_no and not supplier_order.supplier_order_no:
        supplier_order.supplier_order_no = report.supplier_order_no
    if supplier_order.status in TERMINAL:
        if report.status == supplier_order.status or report.status not in TERMINAL:
            return "duplicate"
        await timeline.record(session, order, "supplier_conflict", SUPPLIER, now, reported=report.status,
                              final=supplier_order.status, via=via)
        log.warning("supplier_conflicting_report", request_id=supplier_order.request_id, reported=report.status)
        return "conflict"
    if report.status not in TERMINAL:
        if supplier_order.status in ("pending", "submitted") and report.status in ("accepted", "processing"):
            supplier_order.status = "accepted"
            await timeline.record(session, order, "supplier_accepted", SUPPLIER, now,
                                  supplier_order_no=supplier_order.supplier_order_no)
        return "pending"
    supplier_order.status = report.status
    supplier_order.finished_at = now
    supplier_order.message = report.message[:500]
    if report.status == "succeeded":
        transition(order, "delivered")
        order.delivered_quantity = order.quantity
        order.delivered_at = now
        await timeline.record(session, order, "supplier_succeeded", actor, now,
                              supplier_order_no=supplier_order.supplier_order_no, via=via)
    else:
        transition(order, "delivery_failed")
        await timeline.record(session, order, "supplier_failed", actor, now, reason=report.message[:200],
                              supplier_order_no=supplier_order.supplier_order_no, via=via)
        product = await session.get(Product, order.product_id)
        if (await product_after_sales(session, product)).auto_refund:
            await refund_undelivered(session, ctx, order, actor=SYSTEM, reason="供应商充值失败，自动退款",
                                     idempotency_key=f"supplier-failed:{supplier_order.request_id}")
    await session.flush()
    return "applied"


def _callback_url(ctx) -> str:
    return f"{ctx.settings.base_url}/supplier/callback"


@handler("supplier_submit")
async def supplier_submit_job(ctx, payload: dict) -> None:
    so_id = payload["supplier_order_id"]

    async def mark_submitted(session: AsyncSession):
        so = await session.get(SupplierOrder, so_id)
        if so is None or so.status not in ("pending", "submitted"):
            return None
        order = await session.get(Order, so.order_id)
        product = await session.get(Product, order.product_id)
        first = so.status == "pending"
        so.status = "submitted"
        so.attempts += 1
        so.submitted_at = so.submitted_at or ctx.clock.now()
        if first:
            await timeline.record(session, order, "supplier_submitted", SYSTEM, ctx.clock.now(),
                                  request_id=so.request_id)
        return (so.request_id, product.supplier_sku or product.sku, dict(order.recharge_inputs), so.attempts,
                so.created_at)

    job = await ctx.transact(mark_submitted)
    if job is None:
        return
    request_id, sku, account, attempts, created = job
    try:
        report = await ctx.supplier.submit(request_id, sku, account, _callback_url(ctx))
    except SupplierUnavailable as exc:
        # Same request id next time: the supplier deduplicates, so a retry never recharges twice.
        # Keep trying for as long as we would poll (not just the job's few attempts), then say so.
        if ctx.clock.now() - created > GIVE_UP_POLLING_AFTER:
            why = str(exc)
            await ctx.transact(lambda session: _give_up(session, ctx, so_id, "submit", why))
            return
        delay = POLL_BACKOFF_SECONDS[min(attempts - 1, len(POLL_BACKOFF_SECONDS) - 1)]
        raise RetryLater(ctx.clock.now() + timedelta(seconds=delay), f"supplier unreachable: {exc}") from exc

    async def record(session: AsyncSession):
        so = await session.get(SupplierOrder, so_id)
        result = await apply_report(session, ctx, so, report, "submit")
        if result == "pending":
            await enqueue(session, ctx, "supplier_poll", {"supplier_order_id": so_id, "round": 0},
                          run_at=ctx.clock.now() + timedelta(seconds=POLL_BACKOFF_SECONDS[0]),
                          dedupe_key=f"supplier_poll:{so_id}")

    await ctx.transact(record)


async def query_once(ctx, so_id: int) -> str | None:
    """Ask the supplier once about a recharge and apply its answer. Returns apply_report's verdict,
    'final' when the recharge already has its result, or None when the supplier could not be asked."""
    async with ctx.sessions() as session:
        so = await session.get(SupplierOrder, so_id)
        if so is None or so.status in TERMINAL:
            return "final"
        request_id = so.request_id
    if ctx.supplier is None:
        return None
    try:
        report = await ctx.supplier.query(request_id)
    except SupplierUnavailable:
        return None
    return await ctx.transact(lambda session: _apply_polled(session, ctx, so_id, report))


@handler("supplier_poll")
async def supplier_poll_job(ctx, payload: dict) -> None:
    so_id = payload["supplier_order_id"]
    result = await query_once(ctx, so_id)
    if result not in (None, "pending"):
        return
    async with ctx.sessions() as session:
        created = (await session.get(SupplierOrder, so_id)).created_at
    round_no = payload.get("round", 0) + 1
    if ctx.clock.now() - created > GIVE_UP_POLLING_AFTER:
        await ctx.transact(lambda session: _give_up(session, ctx, so_id, "poll", "no final answer"))
        return
    delay = POLL_BACKOFF_SECONDS[min(round_no, len(POLL_BACKOFF_SECONDS) - 1)]
    raise RetryLater(ctx.clock.now() + timedelta(seconds=delay), f"poll round {round_no}",
                     payload={**payload, "round": round_no})


async def _give_up(session: AsyncSession, ctx, so_id: int, stage: str, why: str) -> None:
    """Stop asking: the order stays `delivering` (never failed on a guess) and staff see why."""
    so = await session.get(SupplierOrder, so_id)
    if so is None or so.status in TERMINAL:
        return
    order = await session.get(Order, so.order_id)
    log.error("supplier_gave_up", request_id=so.request_id, stage=stage, why=why)
    await timeline.record(session, order, "supplier_gave_up", SYSTEM, ctx.clock.now(),
                          reason="供应商长时间无结果，请人工核实充值状态", stage=stage, request_id=so.request_id,
                          error=why[:200])


async def _apply_polled(session: AsyncSession, ctx, so_id: int, report: SupplierReport) -> str:
    so = await session.get(SupplierOrder, so_id)
    return await apply_report(session, ctx, so, report, "poll")


async def handle_callback(ctx, body: dict) -> str:
    """Returns 'applied', 'pending', 'duplicate', 'conflict', 'unknown' or 'rejected'."""
    parsed = ctx.supplier.parse_callback(body) if ctx.supplier else None
    if parsed is None:
        log.warning("supplier_callback_rejected")
        return "rejected"
    request_id, report = parsed

    async def apply(session: AsyncSession) -> str:
        so = await session.scalar(select(SupplierOrder).where(SupplierOrder.request_id == request_id))
        if so is None:
            return "unknown"
        return await apply_report(session, ctx, so, report, "callback")

    return await ctx.transact(apply)


async def settle_recharge(session: AsyncSession, ctx, order: Order, succeeded: bool, note: str, actor: Actor) -> str:
    """Staff settle a recharge the supplier never answered, after checking with the supplier."""
    supplier_order = await session.scalar(select(SupplierOrder).where(SupplierOrder.order_id == order.id)
                                          .order_by(SupplierOrder.id.desc()).limit(1))
    if supplier_order is None or order.status != "delivering":
        raise Conflict("只有充值处理中的订单可以人工确认结果", "only a recharge in progress can be settled")
    report = SupplierReport("succeeded" if succeeded else "failed", None, note)
    return await apply_report(session, ctx, supplier_order, report, "agent", actor)
