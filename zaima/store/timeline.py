"""The order timeline (audit log): every change to an order appends one entry here."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima import sql
from zaima.core.audit import Actor
from zaima.db import append_rows
from zaima.models import OrderEvent

# What each entry means to a person, zh-CN first.
EVENT_TEXT: dict[str, tuple[str, str]] = {
    "created": ("订单已创建", "Order created"),
    "stock_reserved": ("已为订单预留库存", "Stock reserved for the order"),
    "paid": ("已收到付款", "Payment received"),
    "payment_recovered": ("主动查询支付平台，确认已付款", "Payment confirmed by querying the gateway"),
    "delivered": ("已发货", "Delivered"),
    "partially_delivered": ("部分发货，其余等待补货", "Partly delivered; the rest awaits stock"),
    "awaiting_stock": ("库存不足，补货后自动发货", "Out of stock; will deliver automatically when restocked"),
    "supplier_submitted": ("已提交供应商充值", "Recharge submitted to the supplier"),
    "supplier_accepted": ("供应商已受理", "Supplier accepted the recharge"),
    "supplier_pending": ("供应商处理中", "Supplier still processing"),
    "supplier_succeeded": ("充值成功", "Recharge succeeded"),
    "supplier_failed": ("充值失败", "Recharge failed"),
    "supplier_gave_up": ("供应商长时间无结果，转人工核实", "No result from the supplier; staff will check"),
    "supplier_conflict": ("供应商回调与已确认结果不一致，已忽略", "Supplier report contradicts the final result; ignored"),
    "expired": ("订单超时未支付，已关闭", "Order expired unpaid"),
    "stock_released": ("预留库存已释放", "Reserved stock released"),
    "refunded": ("已退款", "Refunded"),
    "refund_succeeded": ("退款已原路退回", "Refund returned to the payment account"),
    "refund_manual": ("退款待人工处理", "Refund to be paid back manually"),
    "refund_failed": ("退款接口失败，转人工处理", "Gateway refund failed; handed to staff"),
    "key_quarantined": ("卡密已标记为异常", "Card key quarantined"),
    "keys_revealed": ("卡密被查看", "Card keys revealed"),
    "key_replaced": ("已补发新卡密，原卡密作废", "Replacement key delivered; the old one is void"),
    "codes_resent": ("已在会话中重新提供卡密", "Keys shown again in the conversation"),
    "handoff": ("已转人工客服处理", "Handed to a person"),
    "problem_report": ("已提交问题反馈，客服会尽快处理", "Problem reported; support will follow up"),
    "payment_checked": ("已向支付平台查询付款状态", "Payment status checked with the gateway"),
    "extra_payment": ("收到重复付款，待人工退款", "A second payment arrived; staff will refund it"),
    "late_payment": ("订单关闭后收到付款", "Payment received after the order expired"),
    "evidence_exported": ("客服导出了工单证据包", "Ticket evidence bundle exported by staff"),
}

# Staff-side audit entries: kept in the order's audit log for staff, not shown to the buyer.
STAFF_ONLY_KINDS = frozenset({"keys_revealed", "evidence_exported"})


def entry(order, kind: str, actor: Actor, at, reason: str = "", **data) -> dict:
    """One timeline row, for `record_all` (the order must already have its id)."""
    assert order.id is not None, "flush the order before recording on its timeline"
    return dict(order_id=order.id, at=at, kind=kind, actor_kind=actor.kind, actor_id=actor.id, reason=reason,
                data=data, conversation_id=actor.conversation_id)


async def record_all(session: AsyncSession, entries: list[dict]) -> None:
    """Append several entries now, in one statement."""
    await append_rows(session, OrderEvent, entries)


async def record(session: AsyncSession, order, kind: str, actor: Actor, at, reason: str = "",
                 **data) -> None:
    """Append an entry now (the order must already have its id)."""
    await record_all(session, [entry(order, kind, actor, at, reason, **data)])


OrderEventRow = sql.row_type(OrderEvent)
_EVENTS_FOR = sql.Prepared(select(*OrderEvent.__table__.columns).where(OrderEvent.order_id == bindparam("for_order"))
                           .order_by(OrderEvent.id))


async def events_for(session: AsyncSession, order_id: int) -> list[OrderEventRow]:
    """The order's timeline, oldest first (rows: the timeline is append-only)."""
    return [OrderEventRow.of(r) for r in await sql.fetch(session, _EVENTS_FOR, for_order=order_id)]
