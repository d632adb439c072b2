"""The evidence bundle (证据包) of a ticket, for disputes (chargebacks, platform complaints): the ticket, the
customer, the order with its payment, delivery and supplier records and timeline, the attachments, the full
transcript (internal notes flagged) and the bot's actions, in one JSON-serialisable dict.

The bundle is for staff, but it leaves the system (it is printed, mailed to a payment platform), so nothing in
it may hand over the goods: card keys appear only masked, and the order-page links the bot wrote into the chat
lose their access token (it opens the order page with the keys, and it never expires). Both are scrubbed from
every string in the bundle, including what a customer or agent pasted into the chat.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.conversations.events import attachment_view
from zaima.core.ids import display_order_no
from zaima.core.money import format_yuan
from zaima.core.signing import order_access_token
from zaima.models import (
    Attachment,
    BotAction,
    CardKey,
    Conversation,
    Customer,
    DeliveryAttempt,
    Message,
    Order,
    Payment,
    PaymentNotification,
    Product,
    Refund,
    StaffUser,
    SupplierOrder,
)
from zaima.store import stock, timeline
from zaima.store.views import mask

FORMAT = "zaima.evidence/1"
REDACTED = "[已隐去 redacted]"
# A secret shorter than this is not scrubbed from free text: it would also hit ordinary text (a four-digit PIN
# of a "card----password" pair is also an amount, a year, a part of a timestamp). It is still only shown masked.
MIN_SCRUB_CHARS = 6


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC ("2026-03-01T08:00:00+00:00")."""
    return value.astimezone(UTC).isoformat() if value is not None else None


def _yuan(fen: int | None) -> str | None:
    return format_yuan(fen) if fen is not None else None


def _scrub(value, replacements: list[tuple[str, str]]):
    """Every string in a JSON-like value, with each secret replaced (longest first)."""
    if isinstance(value, str):
        for secret, shown in replacements:
            if secret in value:
                value = value.replace(secret, shown)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, replacements) for v in value]
    return value


def _key_replacements(plain: str) -> list[tuple[str, str]]:
    secrets = [plain]
    if "----" in plain:  # an account----password pair: each half is a secret too
        secrets += plain.split("----")
    return [(secret, mask(secret)) for secret in secrets if len(secret) >= MIN_SCRUB_CHARS]


async def _order_section(session: AsyncSession, order: Order, keys: list[CardKey], masked: dict[int, str]) -> dict:
    product = await session.get(Product, order.product_id)
    return {
        "order_no": order.order_no,
        "display_no": display_order_no(order.order_no),
        "status": order.status,
        "product": {"id": product.id, "sku": product.sku, "name": product.name, "kind": product.kind},
        "quantity": order.quantity,
        "delivered_quantity": order.delivered_quantity,
        "refunded_quantity": order.refunded_quantity,
        "currency": "CNY",
        "unit_price": format_yuan(order.unit_price_fen),
        "amount": format_yuan(order.amount_fen),
        "refunded_amount": format_yuan(order.refunded_fen),
        "pay_type": order.pay_type,
        "contact": order.contact,
        "contact_kind": order.contact_kind,
        "recharge_inputs": dict(order.recharge_inputs or {}),
        "client_ip": order.client_ip,
        "created_at": iso(order.created_at),
        "expires_at": iso(order.expires_at),
        "paid_at": iso(order.paid_at),
        "delivered_at": iso(order.delivered_at),
        # Delivered goods, masked: enough to tell which key a complaint is about, never the key itself.
        "keys": {
            "count": len(keys),
            "items": [{"id": k.id, "status": k.status, "masked": masked[k.id], "sold_at": iso(k.sold_at),
                       "status_reason": k.status_reason} for k in keys],
        },
    }


async def _order_records(session: AsyncSession, order: Order) -> dict:
    def rows(model, *where, order_by):
        return session.scalars(select(model).where(*where).order_by(order_by))

    payments = await rows(Payment, Payment.order_id == order.id, order_by=Payment.id)
    notifications = await rows(PaymentNotification, PaymentNotification.out_trade_no == order.order_no,
                               order_by=PaymentNotification.id)
    refunds = await rows(Refund, Refund.order_id == order.id, order_by=Refund.id)
    attempts = await rows(DeliveryAttempt, DeliveryAttempt.order_id == order.id, order_by=DeliveryAttempt.id)
    supplier_orders = await rows(SupplierOrder, SupplierOrder.order_id == order.id, order_by=SupplierOrder.id)
    events = await timeline.events_for(session, order.id)
    return {
        "payments": [
            {"provider": p.provider, "out_trade_no": p.out_trade_no, "trade_no": p.trade_no, "pay_type": p.pay_type,
             "amount": format_yuan(p.amount_fen), "received_via": p.received_via, "at": iso(p.created_at),
             "raw": dict(p.raw or {})}
            for p in payments
        ],
        # Every notify the gateway sent for this order, accepted or not, with our verdict.
        "payment_notifications": [
            {"received_at": iso(n.received_at), "verdict": n.verdict, "reason": n.reason,
             "params": dict(n.params or {}), "remote_addr": n.remote_addr}
            for n in notifications
        ],
        "refunds": [
            {"amount": format_yuan(r.amount_fen), "quantity": r.quantity, "status": r.status, "reason": r.reason,
             "actor_kind": r.actor_kind, "actor_id": r.actor_id, "created_at": iso(r.created_at),
             "finished_at": iso(r.finished_at), "gateway_response": r.gateway_response}
            for r in refunds
        ],
        "delivery_attempts": [
            {"at": iso(a.at), "method": a.method, "result": a.result, "quantity": a.quantity, "detail": a.detail}
            for a in attempts
        ],
        "supplier_orders": [
            {"supplier": s.supplier, "request_id": s.request_id, "supplier_order_no": s.supplier_order_no,
             "status": s.status, "message": s.message, "attempts": s.attempts, "created_at": iso(s.created_at),
             "submitted_at": iso(s.submitted_at), "finished_at": iso(s.finished_at),
             "last_checked_at": iso(s.last_checked_at), "log": list(s.log or [])}
            for s in supplier_orders
        ],
        "timeline": [
            {"at": iso(e.at), "kind": e.kind, "text": timeline.EVENT_TEXT.get(e.kind, (e.kind, e.kind))[0],
             "text_en": timeline.EVENT_TEXT.get(e.kind, (e.kind, e.kind))[1], "actor_kind": e.actor_kind,
             "actor_id": e.actor_id, "reason": e.reason, "data": dict(e.data or {}),
             "conversation_id": e.conversation_id}
            for e in events
        ],
    }


async def build_bundle(session: AsyncSession, conversation: Conversation, *, generated_by: str, now,
                       ctx) -> dict:
    """The ticket's evidence bundle. Datetimes are ISO-8601 UTC; money is yuan strings ("12.50").

    `ctx` is required: its SecretBox decrypts the order's keys so they can be masked and recognised (and
    scrubbed) wherever they were pasted, its secret key recognises order-page tokens, and its base URL makes
    the attachment links absolute.
    """
    customer = await session.get(Customer, conversation.customer_id)
    assignee = await session.get(StaffUser, conversation.assignee_id) if conversation.assignee_id else None
    order = await session.get(Order, conversation.order_id) if conversation.order_id else None
    messages = list(await session.scalars(select(Message).where(Message.conversation_id == conversation.id)
                                          .order_by(Message.seq)))
    attachments = list(await session.scalars(select(Attachment).where(Attachment.conversation_id == conversation.id)
                                             .order_by(Attachment.id)))
    actions = list(await session.scalars(select(BotAction).where(BotAction.conversation_id == conversation.id)
                                         .order_by(BotAction.id)))

    # Every order this ticket touches: its own, and any the bot acted on.
    order_ids = {order.id} if order else set()
    order_ids |= {a.order_id for a in actions if a.order_id is not None}
    orders = {o.id: o for o in await session.scalars(select(Order).where(Order.id.in_(order_ids)))} if order_ids else {}
    keys = list(await session.scalars(select(CardKey).where(CardKey.order_id.in_(order_ids))
                                      .order_by(CardKey.id))) if order_ids else []
    replacements: list[tuple[str, str]] = []
    masked: dict[int, str] = {}
    for key in keys:
        plain = stock.reveal(ctx.box, key)
        masked[key.id] = mask(plain)
        replacements += _key_replacements(plain)
    replacements += [(order_access_token(ctx.settings.secret_key, o.order_no), REDACTED) for o in orders.values()]
    replacements.sort(key=lambda pair: len(pair[0]), reverse=True)

    order_keys = [k for k in keys if order is not None and k.order_id == order.id]
    records = await _order_records(session, order) if order is not None else {
        "payments": [], "payment_notifications": [], "refunds": [], "delivery_attempts": [], "supplier_orders": [],
        "timeline": []}
    base = ctx.settings.base_url.rstrip("/")

    def attachment_entry(a: Attachment) -> dict:
        view = attachment_view(a)
        return {"id": a.id, "name": a.original_name, "content_type": a.content_type, "byte_size": a.byte_size,
                "sha256": a.sha256, "width": a.width, "height": a.height, "uploader_kind": a.uploader_kind,
                "uploaded_at": iso(a.created_at), "url": base + view["url"], "thumb_url": base + view["thumb_url"]}

    bundle = {
        "format": FORMAT,
        "ticket": {
            "ticket_no": conversation.ticket_no,
            "conversation_id": conversation.id,
            "status": conversation.status,
            "priority": conversation.priority,
            "channel": conversation.channel,
            "labels": list(conversation.labels or []),
            "created_at": iso(conversation.created_at),
            "updated_at": iso(conversation.updated_at),
            "first_human_reply_at": iso(conversation.first_human_reply_at),
            "resolved_at": iso(conversation.resolved_at),
            "assignee": None if assignee is None else {"id": assignee.id, "username": assignee.username,
                                                       "display_name": assignee.display_name},
        },
        "customer": {"id": customer.id, "kind": customer.kind, "display_name": customer.display_name,
                     "contact": customer.contact, "first_seen_at": iso(customer.created_at),
                     "last_seen_at": iso(customer.last_seen_at)},
        "order": await _order_section(session, order, order_keys, masked) if order is not None else None,
        **records,
        "attachments": [attachment_entry(a) for a in attachments],
        "transcript": [
            {"seq": m.seq, "at": iso(m.created_at), "sender_kind": m.sender_kind, "sender_id": m.sender_id,
             "sender_name": m.sender_name, "body": m.body, "internal": m.internal, "attachment_id": m.attachment_id}
            for m in messages
        ],
        "bot_actions": [
            {"at": iso(a.created_at), "action": a.action,
             "order_no": orders[a.order_id].order_no if a.order_id in orders else None, "result": dict(a.result or {})}
            for a in actions
        ],
        "generated_at": iso(now),
        "generated_by": generated_by,
    }
    return _scrub(bundle, replacements)
