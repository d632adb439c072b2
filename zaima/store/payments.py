"""Payments through 易支付: notify handling, active query for lost notifies, and the payment record.

A notify changes an order only when its signature, merchant id, status, order number and exact
amount all check out. Every notify is kept in `payment_notifications` with its verdict. The same
payment arriving twice (or five times at once) is one payment and one delivery: the payment row is
unique per order, and the order row is optimistically locked.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima import sql
from zaima.core.audit import GATEWAY, Actor
from zaima.core.jsoncheck import storable_text
from zaima.core.money import MoneyFormatError, format_yuan, parse_yuan
from zaima.db import append_row
from zaima.jobs import RetryLater, cancel, handler
from zaima.models import Order, Payment, PaymentNotification
from zaima.store import epay, timeline
from zaima.store.delivery import deliver
from zaima.store.epay import EpayError
from zaima.store.orders import OrderRow, claim, order_for_payment, save, transition

log = structlog.get_logger("zaima.payments")

REQUERY_AFTER_MINUTES = (2, 5, 10, 30, 60)  # since order creation


PaymentRow = sql.row_type(Payment)
_PAYMENT_OF = sql.Prepared(select(*Payment.__table__.columns)
                           .where(Payment.provider == "epay", Payment.out_trade_no == bindparam("order_no")))


async def payment_of(session: AsyncSession, order) -> PaymentRow | None:
    row = await sql.fetch_one(session, _PAYMENT_OF, order_no=order.order_no)
    return PaymentRow.of(row) if row is not None else None


async def apply_payment(session: AsyncSession, ctx, order: Order | OrderRow, *, trade_no: str, amount_fen: int,
                        pay_type: str, via: str, raw: dict, actor: Actor = GATEWAY, product=None) -> str:
    """Record the payment and start delivery. Returns 'accepted' or 'duplicate'.

    Only this function creates payments, and it moves the order out of pending_payment / expired
    in the same transaction; the unique (provider, out_trade_no) key and the order's version
    column make a concurrent second attempt fail and retry into the duplicate branch.

    The gateway's own values are stored as they fit (its trade number is informational, the order is
    ours): refusing a genuine payment over the length of a field would lose the customer's money.
    `product` is the order's product when the caller has it already.
    """
    trade_no, pay_type = storable_text(trade_no, 64), storable_text(pay_type, 16)
    if order.status not in ("pending_payment", "expired"):
        existing = await payment_of(session, order)
        if existing is not None and trade_no and trade_no != existing.trade_no:
            await _flag_extra_payment(session, ctx, order, trade_no, amount_fen, actor)
        return "duplicate"
    with session.no_autoflush:  # the order's changes in one UPDATE at the end (its version checked there)
        await _record_payment(session, ctx, order, trade_no, amount_fen, pay_type, via, raw, actor)
        await deliver(session, ctx, order, product=product)
        await save(session, order)
    return "accepted"


async def _record_payment(session: AsyncSession, ctx, order: Order | OrderRow, trade_no: str, amount_fen: int,
                          pay_type: str, via: str, raw: dict, actor: Actor) -> None:
    now = ctx.clock.now()
    late = order.status == "expired"
    transition(order, "paid")
    order.paid_at = now
    # The unique (provider, out_trade_no) key makes a concurrent second payment fail here, and retry.
    await append_row(session, Payment, order_id=order.id, provider="epay", out_trade_no=order.order_no,
                     trade_no=trade_no, pay_type=pay_type, amount_fen=amount_fen, received_via=via, raw=raw,
                     created_at=now)
    kind = "payment_recovered" if via == "query" else ("late_payment" if late else "paid")
    await timeline.record(session, order, kind, actor, now, trade_no=trade_no, amount=amount_fen, via=via)
    await cancel(session, f"expire:{order.id}", f"requery:{order.id}")  # paid: nothing left to watch


async def _flag_extra_payment(session: AsyncSession, ctx, order: Order | OrderRow, trade_no: str, amount_fen: int,
                              actor: Actor) -> None:
    """A second, different gateway trade for an order already paid: the customer paid twice.

    It is still the customer's money, so it goes on the order's timeline for staff to refund (once
    per trade, however often the gateway repeats it).
    """
    events = await timeline.events_for(session, order.id)
    if any(e.kind == "extra_payment" and e.data.get("trade_no") == trade_no for e in events):
        return
    await timeline.record(session, order, "extra_payment", actor, ctx.clock.now(), trade_no=trade_no,
                          amount=amount_fen, reason="重复付款，需人工退款")
    await claim(session, order)  # the same trade notified twice at once: the second retries, sees this entry
    log.warning("epay_extra_payment", order_no=order.order_no, trade_no=trade_no)


def _precheck(ctx, params: dict) -> str | None:
    s = ctx.settings
    if not epay.verify(params, s.epay_key):
        return "bad_sign"
    if str(params.get("pid", "")) != s.epay_pid:
        return "wrong_pid"
    if params.get("trade_status") != "TRADE_SUCCESS":
        return "not_success"
    try:
        parse_yuan(str(params.get("money", "")))
    except MoneyFormatError:
        return "bad_amount"
    return None


async def handle_notify(ctx, params: dict[str, str], remote_addr: str = "") -> str:
    """Returns 'accepted', 'duplicate' or 'rejected'. Only the first two are answered `success`."""
    params = {str(k): str(v) for k, v in params.items()}
    reason = None
    if any("\x00" in k or "\x00" in v for k, v in params.items()):
        # No gateway sends NUL, and PostgreSQL text cannot store it: keep the evidence escaped, reject.
        params = {k.replace("\x00", "\\x00"): v.replace("\x00", "\\x00") for k, v in params.items()}
        reason = "bad_params"
    out_trade_no = params.get("out_trade_no", "")[:64]
    reason = reason or _precheck(ctx, params)

    async def apply(session: AsyncSession) -> tuple[str, str]:
        verdict, why = "rejected", reason or ""
        if reason is None:
            order, product = await order_for_payment(session, out_trade_no)
            if order is None:
                why = "unknown_order"
            elif parse_yuan(params["money"]) != order.amount_fen:
                why = "amount_mismatch"
            else:
                verdict = await apply_payment(session, ctx, order, trade_no=params.get("trade_no", ""),
                                              amount_fen=order.amount_fen, pay_type=params.get("type", ""),
                                              via="notify", raw=params, product=product)
                why = ""
        await append_row(session, PaymentNotification, received_at=ctx.clock.now(), out_trade_no=out_trade_no,
                         verdict=verdict, reason=why, params=params, remote_addr=remote_addr[:64])
        return verdict, why

    verdict, why = await ctx.transact(apply, lean=True)
    if verdict == "rejected":
        log.warning("epay_notify_rejected", out_trade_no=out_trade_no, reason=why, remote_addr=remote_addr)
    else:
        log.debug("epay_notify", out_trade_no=out_trade_no, verdict=verdict)  # the table keeps every notify
    return verdict


async def recover_payment(ctx, order_id: int, actor: Actor = GATEWAY) -> bool:
    """Ask the gateway whether an unpaid-looking order was paid; apply it if so. True if applied."""
    if ctx.epay is None:
        return False
    async with ctx.sessions() as session:
        order = await session.get(Order, order_id)
        if order is None or order.status not in ("pending_payment", "expired"):
            return False
        order_no, amount = order.order_no, order.amount_fen
    try:
        status = await ctx.epay.query(order_no)
    except EpayError as exc:
        log.warning("epay_query_failed", order_no=order_no, error=str(exc))
        raise
    if status is None or not status.paid:
        return False
    try:
        paid_fen = parse_yuan(status.money)
    except MoneyFormatError:
        paid_fen = -1
    if paid_fen != amount:
        log.warning("epay_query_amount_mismatch", order_no=order_no, money=status.money, expected=format_yuan(amount))
        return False

    async def apply(session: AsyncSession) -> str:
        fresh = await session.get(Order, order_id)
        return await apply_payment(session, ctx, fresh, trade_no=status.trade_no, amount_fen=amount,
                                   pay_type=status.pay_type, via="query", raw=status.raw, actor=actor)

    return await ctx.transact(apply) == "accepted"


@handler("requery_payment")
async def requery_payment_job(ctx, payload: dict) -> None:
    try:
        await recover_payment(ctx, payload["order_id"])
    except EpayError:
        pass  # the gateway is down now; the next round (and expiry) ask again
    async with ctx.sessions() as session:
        order = await session.get(Order, payload["order_id"])
        if order is None or order.status not in ("pending_payment", "expired"):
            return
        created = order.created_at
    now = ctx.clock.now()
    # The next round still in the future (rounds missed while the worker was down are not replayed).
    upcoming = [i for i, m in enumerate(REQUERY_AFTER_MINUTES) if created + timedelta(minutes=m) > now]
    if upcoming:
        at = created + timedelta(minutes=REQUERY_AFTER_MINUTES[upcoming[0]])
        raise RetryLater(at, f"requery round {upcoming[0]}", payload={**payload, "round": upcoming[0]})
