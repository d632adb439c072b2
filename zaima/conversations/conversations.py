"""Conversations (= tickets): opening one, finding one safely, the guarded status machine, assignment,
labels, priority, and the agents' inbox.

Status machine (anything not listed is refused; setting the current status again is a no-op):

    bot               the bot is answering; no human involved yet
      → queued          handed off (转人工), waiting for an agent
      → open            an agent took it directly
      → resolved        the bot solved it
      → closed
    queued            → open, resolved, closed
    open              → pending_customer (waiting for the customer's answer), queued (released back to
                        the queue), resolved, closed
    pending_customer  → open, queued, resolved, closed
    resolved          → open, queued (reopened), closed
    closed            final. A customer who writes again gets a new conversation (open_conversation).

A customer message on a `resolved` or `pending_customer` conversation reopens it: to `open` when it has
an assignee, else to `queued` (done atomically in zaima.conversations.messages.post_message).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.conversations import events as ev
from zaima.conversations.events import Event
from zaima.core.errors import Conflict, NotFound, ValidationFailed
from zaima.models import Conversation, Customer, Message, Order, StaffUser
from zaima.models.conversations import CHANNELS, CONVERSATION_STATUSES, PRIORITIES, TICKET_OFFSET

TRANSITIONS: dict[str, set[str]] = {
    "bot": {"queued", "open", "resolved", "closed"},
    "queued": {"open", "resolved", "closed"},
    "open": {"pending_customer", "queued", "resolved", "closed"},
    "pending_customer": {"open", "queued", "resolved", "closed"},
    "resolved": {"open", "queued", "closed"},
    "closed": set(),
}
REOPENED_BY_CUSTOMER = ("resolved", "pending_customer")
ACTIVE_STATUSES = tuple(s for s in CONVERSATION_STATUSES if s != "closed")
INBOX_VIEWS = ("all", "mine", "unassigned")
MAX_LABELS = 20
LABEL_MAX_CHARS = 32

_TICKET = re.compile(r"^T?-?([0-9]{5,12})$")


class InvalidTransition(Conflict):
    code = "invalid_conversation_transition"


class ConversationClosed(Conflict):
    code = "conversation_closed"
    message_zh = "该会话已关闭，请发起新的咨询"
    message_en = "This conversation is closed; start a new one"


class ConversationNotFound(NotFound):
    code = "conversation_not_found"
    message_zh = "未找到该会话"
    message_en = "Conversation not found"


# --- finding --------------------------------------------------------------------------------------------------


def parse_ticket_no(text: str | None) -> int | None:
    """The conversation id behind a ticket number as people type it: "T-10001", "t10001", "10001",
    full-width "Ｔ－１０００１". None when it cannot be one."""
    cleaned = re.sub(r"\s", "", unicodedata.normalize("NFKC", text or "")).upper()
    match = _TICKET.match(cleaned)
    if not match:
        return None
    conversation_id = int(match.group(1)) - TICKET_OFFSET
    return conversation_id if conversation_id > 0 else None


async def get_conversation(session: AsyncSession, conversation_id: int) -> Conversation:
    """For staff: any conversation by id."""
    conversation = await session.get(Conversation, conversation_id) if isinstance(conversation_id, int) else None
    if conversation is None:
        raise ConversationNotFound()
    return conversation


async def get_by_ticket_no(session: AsyncSession, ticket_no: str) -> Conversation:
    conversation_id = parse_ticket_no(ticket_no)
    if conversation_id is None:
        raise ConversationNotFound()
    return await get_conversation(session, conversation_id)


async def get_for_customer(session: AsyncSession, customer_id: int, conversation_id: int) -> Conversation:
    """The customer's own conversation. Someone else's gives the same answer as a missing one."""
    conversation = await session.get(Conversation, conversation_id) if isinstance(conversation_id, int) else None
    if conversation is None or conversation.customer_id != customer_id:
        raise ConversationNotFound()
    return conversation


async def list_for_customer(session: AsyncSession, customer_id: int, limit: int = 20) -> list[Conversation]:
    """The customer's conversations, newest first (the widget's history)."""
    rows = await session.scalars(select(Conversation).where(Conversation.customer_id == customer_id)
                                 .order_by(Conversation.id.desc()).limit(max(1, min(limit, 100))))
    return list(rows)


async def order_no_of(session: AsyncSession, conversation: Conversation) -> str | None:
    if conversation.order_id is None:
        return None
    order = await session.get(Order, conversation.order_id)
    return order.order_no if order else None


# --- opening --------------------------------------------------------------------------------------------------


@dataclass
class Opened:
    conversation: Conversation
    created: bool
    events: list[Event]


async def open_conversation(session: AsyncSession, clock, customer: Customer, order: Order | None = None,
                            channel: str = "web") -> Opened:
    """The customer's latest conversation about `order` (or about no order) that is not closed; else a
    new one in status 'bot'. The customer row is locked first (PostgreSQL; SQLite writes are serial
    anyway), so two tabs opening at once get the same conversation, not two."""
    if channel not in CHANNELS:
        raise ValidationFailed("不支持的渠道", "unsupported channel", field="channel")
    await session.execute(select(Customer.id).where(Customer.id == customer.id).with_for_update())
    order_match = Conversation.order_id == order.id if order is not None else Conversation.order_id.is_(None)
    existing = await session.scalar(
        select(Conversation)
        .where(Conversation.customer_id == customer.id, order_match, Conversation.status != "closed")
        .order_by(Conversation.id.desc()).limit(1))
    if existing is not None:
        return Opened(existing, False, [])
    now = clock.now()
    conversation = Conversation(customer_id=customer.id, order_id=order.id if order is not None else None,
                                channel=channel, status="bot", priority="normal", labels=[], created_at=now,
                                updated_at=now, last_seq=0, customer_read_seq=0, agent_read_seq=0)
    session.add(conversation)
    await session.flush()
    order_no = order.order_no if order is not None else None
    item = ev.inbox_item_view(conversation, customer, order_no, None, 0)
    return Opened(conversation, True, [ev.inbox_event(item)])


# --- changes --------------------------------------------------------------------------------------------------


async def changed_events(session: AsyncSession, conversation: Conversation, *, public: bool = True) -> list[Event]:
    """Conversation events (public and staff, or staff only) plus the inbox row, after a change."""
    await session.flush()
    order_no = await order_no_of(session, conversation)
    item = await inbox_item(session, conversation)
    return [*ev.conversation_events(conversation, order_no, public=public), ev.inbox_event(item.to_dict())]


def check_transition(current: str, new: str) -> None:
    if new not in CONVERSATION_STATUSES:
        raise ValidationFailed("未知的会话状态", f"unknown status {new!r}", field="status")
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"会话当前状态为「{current}」，不能变为「{new}」",
                                f"conversation is {current}; cannot become {new}")


def _apply_status(conversation: Conversation, new: str, now) -> None:
    check_transition(conversation.status, new)
    if new == "resolved":
        conversation.resolved_at = now
    elif new != "closed":
        conversation.resolved_at = None  # reopened: the earlier resolution no longer stands
    conversation.status = new
    conversation.updated_at = now


async def set_status(session: AsyncSession, clock, conversation: Conversation, status: str) -> list[Event]:
    if status == conversation.status:
        return []
    _apply_status(conversation, status, clock.now())
    return await changed_events(session, conversation)


async def assign(session: AsyncSession, clock, conversation: Conversation, staff: StaffUser | None) -> list[Event]:
    """Give the conversation to an agent (or take it back with None).

    Assigning a conversation that waits in the bot or the queue opens it; unassigning an open one puts
    it back in the queue, so a conversation with a human status always has a human or a queue.
    """
    if conversation.status == "closed":
        raise ConversationClosed()
    if staff is not None and not staff.active:
        raise ValidationFailed("该客服账号已停用", "this agent account is disabled", field="assignee")
    new_id = staff.id if staff is not None else None
    if new_id == conversation.assignee_id:
        return []
    now = clock.now()
    conversation.assignee_id = new_id
    conversation.updated_at = now
    status_changed = False
    if staff is not None and conversation.status in ("bot", "queued"):
        _apply_status(conversation, "open", now)
        status_changed = True
    elif staff is None and conversation.status in ("open", "pending_customer"):
        _apply_status(conversation, "queued", now)
        status_changed = True
    return await changed_events(session, conversation, public=status_changed)


def normalize_label(label: str) -> str:
    value = " ".join(unicodedata.normalize("NFKC", label or "").split()).casefold()
    if not value or len(value) > LABEL_MAX_CHARS or not value.isprintable():
        raise ValidationFailed(f"标签需为 1–{LABEL_MAX_CHARS} 个可见字符", f"a label must be 1–{LABEL_MAX_CHARS} "
                               "visible characters", field="labels")
    return value


async def add_labels(session: AsyncSession, clock, conversation: Conversation, labels: Iterable[str]) -> list[Event]:
    current = list(conversation.labels or [])
    for label in labels:
        value = normalize_label(label)
        if value not in current:
            current.append(value)
    if len(current) > MAX_LABELS:
        raise ValidationFailed(f"每个会话最多 {MAX_LABELS} 个标签", f"at most {MAX_LABELS} labels per conversation",
                               field="labels")
    if current == list(conversation.labels or []):
        return []
    conversation.labels = current  # a new list: the JSON column only notices assignment
    conversation.updated_at = clock.now()
    return await changed_events(session, conversation, public=False)


async def remove_labels(session: AsyncSession, clock, conversation: Conversation,
                        labels: Iterable[str]) -> list[Event]:
    drop = {normalize_label(label) for label in labels}
    current = [label for label in conversation.labels or [] if label not in drop]
    if current == list(conversation.labels or []):
        return []
    conversation.labels = current
    conversation.updated_at = clock.now()
    return await changed_events(session, conversation, public=False)


async def set_priority(session: AsyncSession, clock, conversation: Conversation, priority: str) -> list[Event]:
    if priority not in PRIORITIES:
        raise ValidationFailed("优先级必须是 low、normal、high 或 urgent", "priority must be low, normal, high or urgent",
                               field="priority")
    if priority == conversation.priority:
        return []
    conversation.priority = priority
    conversation.updated_at = clock.now()
    return await changed_events(session, conversation, public=False)


# --- inbox ----------------------------------------------------------------------------------------------------


@dataclass
class InboxItem:
    conversation: Conversation
    customer: Customer
    order_no: str | None
    last_message: Message | None  # the last customer-visible message
    unread: int  # customer messages after the agents' read marker

    def to_dict(self) -> dict:
        return ev.inbox_item_view(self.conversation, self.customer, self.order_no, self.last_message, self.unread)


async def _last_public_messages(session: AsyncSession, ids: list[int]) -> dict[int, Message]:
    if not ids:
        return {}
    last = (select(Message.conversation_id, func.max(Message.seq).label("seq"))
            .where(Message.conversation_id.in_(ids), Message.internal.is_(False))
            .group_by(Message.conversation_id).subquery())
    rows = await session.scalars(select(Message).join(
        last, and_(Message.conversation_id == last.c.conversation_id, Message.seq == last.c.seq)))
    return {m.conversation_id: m for m in rows}


async def list_inbox(session: AsyncSession, *, view: str = "all", staff_id: int | None = None,
                     status: str | Iterable[str] | None = None, limit: int = 50, offset: int = 0) -> list[InboxItem]:
    """The agents' inbox, newest activity first (last customer-visible message, else creation).

    view: 'all' | 'mine' (assigned to `staff_id`) | 'unassigned'. status: one status, several, or None
    for every status (pass ACTIVE_STATUSES to hide closed ones).
    """
    if view not in INBOX_VIEWS:
        raise ValidationFailed("视图必须是 all、mine 或 unassigned", "view must be all, mine or unassigned",
                               field="view")
    query = (select(Conversation, Customer, Order.order_no)
             .join(Customer, Customer.id == Conversation.customer_id)
             .outerjoin(Order, Order.id == Conversation.order_id))
    if view == "mine":
        if staff_id is None:
            raise ValidationFailed("查看“我的会话”需要客服身份", "the 'mine' view needs a staff id", field="view")
        query = query.where(Conversation.assignee_id == staff_id)
    elif view == "unassigned":
        query = query.where(Conversation.assignee_id.is_(None))
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        unknown = [s for s in statuses if s not in CONVERSATION_STATUSES]
        if unknown:
            raise ValidationFailed("未知的会话状态", f"unknown status {unknown[0]!r}", field="status")
        query = query.where(Conversation.status.in_(statuses))
    # A visitor who opened the chat and has not written yet is not a conversation for agents: no row until
    # their first message (the bot has it meanwhile).
    query = query.where(or_(Conversation.status != "bot", Conversation.last_message_at.is_not(None)))
    activity = func.coalesce(Conversation.last_message_at, Conversation.created_at)
    query = query.order_by(activity.desc(), Conversation.id.desc())
    query = query.limit(max(1, min(limit, 200))).offset(max(0, offset))
    rows = (await session.execute(query)).all()
    ids = [conversation.id for conversation, _, _ in rows]
    last = await _last_public_messages(session, ids)
    return [InboxItem(conversation, customer, order_no, last.get(conversation.id), conversation.agent_unread)
            for conversation, customer, order_no in rows]


_CUSTOMERS = select(Customer).where(Customer.id.in_(bindparam("ids", expanding=True)))
_ORDER_NOS = select(Order.id, Order.order_no).where(Order.id.in_(bindparam("ids", expanding=True)))


async def inbox_items(session: AsyncSession, conversations: list[Conversation],
                      last_messages: dict[int, Message] | None = None) -> dict[int, InboxItem]:
    """The inbox rows of several conversations by id, read together. `last_messages` holds messages
    just posted (the last public one of their conversation), to save looking them up."""
    if not conversations:
        return {}
    ids = [c.id for c in conversations]
    customers = {c.id: c for c in await session.scalars(
        _CUSTOMERS, {"ids": list({c.customer_id for c in conversations})})}
    order_ids = list({c.order_id for c in conversations if c.order_id is not None})
    order_nos = dict((await session.execute(_ORDER_NOS, {"ids": order_ids})).all()) if order_ids else {}
    last = dict(last_messages or {})
    last.update(await _last_public_messages(session, [i for i in ids if i not in last]))
    return {c.id: InboxItem(c, customers[c.customer_id], order_nos.get(c.order_id), last.get(c.id), c.agent_unread)
            for c in conversations}


async def inbox_item(session: AsyncSession, conversation: Conversation,
                     last_message: Message | None = None) -> InboxItem:
    """The inbox row of one conversation (for an 'inbox' event after it changed). Pass the public
    message just posted as `last_message` to save looking it up."""
    known = {conversation.id: last_message} if last_message is not None else None
    return (await inbox_items(session, [conversation], known))[conversation.id]
