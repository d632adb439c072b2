"""Ticket changes as the service sees them: the conversation change itself (zaima.conversations) plus
what follows from it — SLA targets, the queue, routing, satisfaction and the off-hours e-mail.

Web routes call these instead of the bare conversation functions, so every entry point (console,
agent socket, customer socket, bot) keeps the tickets' service fields in step.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from zaima.conversations import conversations as convs
from zaima.conversations.events import Event
from zaima.conversations.messages import Posted
from zaima.core.errors import Conflict
from zaima.core.signing import order_access_token
from zaima.models import Conversation, Order, StaffUser
from zaima.service import csat, mail, queue, sla
from zaima.service.policy import rank_of

STATUSES_FREEING_A_SLOT = ("pending_customer", "resolved", "closed", "queued")


async def change_status(session: AsyncSession, ctx, conversation: Conversation, status: str) -> list[Event]:
    """A person changed the status (console). `queued` releases the ticket back to the queue."""
    old = conversation.status
    if status == old:
        return []
    if status == "queued":
        events = await queue.hand_off(session, ctx, conversation) if old in ("bot", "resolved") else []
        if old in ("open", "pending_customer"):
            now = ctx.clock.now()
            events += await queue.requeue(session, ctx, conversation, since=now)
            sla.on_status(session, await sla.load_config(session), conversation, old, "queued", now)  # unpause
        return events
    if status == "open" and conversation.assignee_id is None:
        raise Conflict("会话还没有处理人：请先分配或直接回复（回复即接手）",
                       "nobody has this conversation yet: assign it or reply (replying takes it)")
    convs.check_transition(old, status)
    cfg = await sla.load_config(session)
    await convs.set_status(session, ctx.clock, conversation, status)
    sla.on_status(session, cfg, conversation, old, status, ctx.clock.now())
    events: list[Event] = []
    if status == "resolved":
        events += await csat.request_rating(session, ctx, conversation)
    if old == "open" and status in STATUSES_FREEING_A_SLOT:
        queue.schedule_routing(session, ctx)
    return await convs.changed_events(session, conversation) + events


async def assign(session: AsyncSession, ctx, conversation: Conversation, staff: StaffUser | None) -> list[Event]:
    """A person (re)assigned the ticket: to an agent, or back to the queue with None."""
    if staff is None:
        return await change_status(session, ctx, conversation, "queued") if conversation.status in (
            "open", "pending_customer") else await convs.assign(session, ctx.clock, conversation, None)
    old = conversation.status
    events = await queue.take(session, ctx, conversation, staff)
    if events:
        now = ctx.clock.now()
        if old == "bot":
            conversation.handoff_at = conversation.handoff_at or now
            sla.start(await sla.load_config(session), conversation, now)
        queue.schedule_routing(session, ctx)  # the previous owner's slot freed; positions moved
        events = await convs.changed_events(session, conversation)
    return events


async def after_post(session: AsyncSession, ctx, conversation: Conversation, posted: Posted) -> list[Event]:
    """Service consequences of a stored message; extra events to publish (staff fields changed)."""
    message, status_before = posted.message, posted.status_before
    if posted.duplicate or message.internal or message.sender_kind in ("bot", "system"):
        return []
    if conversation.status == "bot" and status_before == "bot":
        return []  # the bot's conversation: nothing for people yet
    now = ctx.clock.now()
    before = _service_fields(conversation)
    if message.sender_kind == "agent":
        sla.on_human_reply(session, conversation, now)
        if conversation.notify_email:
            await _notify_reply(session, ctx, conversation, message.body)
        return await _changed(session, conversation, before)
    cfg = await sla.load_config(session)
    if conversation.status != status_before:  # the customer's message reopened the ticket
        sla.on_status(session, cfg, conversation, status_before, conversation.status, now)
        if conversation.status == "queued":
            conversation.queued_at = now
            conversation.queue_rank = rank_of(conversation.priority, conversation.vip)
            queue.schedule_routing(session, ctx)
    sla.on_customer_message(cfg, conversation, now)
    return await _changed(session, conversation, before)


def _service_fields(conversation: Conversation) -> tuple:
    return (conversation.status, conversation.first_response_due_at, conversation.next_response_due_at,
            conversation.resolution_due_at, conversation.sla_paused_at, conversation.queued_at)


async def _changed(session: AsyncSession, conversation: Conversation, before: tuple) -> list[Event]:
    """The staff view again, only when a service field moved (most messages move none)."""
    if _service_fields(conversation) == before:
        return []
    return await convs.changed_events(session, conversation, public=False)


async def _notify_reply(session: AsyncSession, ctx, conversation: Conversation, body: str) -> None:
    """The customer was promised a notice when a person answers: e-mail them once, with the reply."""
    to = conversation.notify_email
    conversation.notify_email = None
    order = await session.get(Order, conversation.order_id) if conversation.order_id else None
    link = ctx.settings.base_url
    if order is not None and to.casefold() == order.contact.casefold():  # the token opens the keys: owner only
        token = order_access_token(ctx.settings.secret_key, order.order_no)
        link = f"{ctx.settings.base_url}/orders/{order.order_no}?t={token}"
    excerpt = body if len(body) <= 500 else body[:499] + "…"
    text = (f"您好，\n\n您的工单 {conversation.ticket_no} 已有客服回复：\n\n{excerpt}\n\n"
            f"查看并继续对话：{link}\n\n— 在吗 客服\n\n"
            f"Hello, an agent has answered your ticket {conversation.ticket_no}. Continue here: {link}\n")
    await mail.queue_mail(session, ctx, to=to, subject=f"您的工单 {conversation.ticket_no} 已有客服回复",
                          text=text, dedupe_key=f"reply-notice:{conversation.id}:{conversation.handoff_at}")

