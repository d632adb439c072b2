"""Messages: persisted with the next per-conversation sequence number before anything is broadcast,
idempotent on the client's message id, listed by sequence, and read markers that only move forward.

The sequence is allocated by one statement, UPDATE conversations SET last_seq = last_seq + 1 …
RETURNING last_seq (SQLite ≥ 3.35 and PostgreSQL), which row-locks the conversation until commit: two
posters never get the same number, and a rolled-back post gives its number back, so there are no gaps.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from sqlalchemy import bindparam, case, func, insert, literal, null, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from zaima.conversations import events as ev
from zaima.conversations.conversations import (
    REOPENED_BY_CUSTOMER,
    ConversationClosed,
    changed_events,
    inbox_item,
    inbox_items,
)
from zaima.conversations.events import Event
from zaima.conversations.senders import Sender
from zaima.conversations.text import clean_text
from zaima.core.errors import Forbidden, NotFound, ValidationFailed
from zaima.db import UTCDateTime
from zaima.models import Attachment, Conversation, Message

CLIENT_MSG_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
LIST_MAX = 500
READERS = ("customer", "agent")

# Conversation columns the sequence UPDATE may change, copied back onto the loaded object afterwards.
_SYNCED = ("last_seq", "status", "version", "updated_at", "last_message_at", "first_human_reply_at",
           "resolved_at", "customer_read_seq", "agent_read_seq", "agent_unread")


class ConversationBusy(Exception):
    """post_many skipped this draft: another transaction holds its conversation. Post it on its own."""


@dataclass
class Posted:
    message: Message
    duplicate: bool  # True: this client_msg_id was already stored; `message` is the stored one
    events: list[Event]
    status_before: str | None = None  # the conversation's status before this message (None: duplicate)


def _check_client_msg_id(client_msg_id: str | None) -> None:
    if client_msg_id is not None and (not isinstance(client_msg_id, str) or not CLIENT_MSG_ID.match(client_msg_id)):
        raise ValidationFailed("消息标识无效", "client_msg_id must be 1–64 letters, digits or _ . : -",
                               field="client_msg_id")


async def _stored(session: AsyncSession, conversation_id: int, client_msg_id: str) -> Message | None:
    return await session.scalar(select(Message).where(Message.conversation_id == conversation_id,
                                                      Message.client_msg_id == client_msg_id))


@functools.cache
def _next_seq_statement(sender_kind: str, internal: bool, many: bool = False):
    """The sequence UPDATE for one kind of writer, built once: parameters :conversation_id and :now; with
    `many`, :ids (a list) instead of :conversation_id, and the id first in each returned row."""
    table = Conversation.__table__
    c = table.c
    now = bindparam("now", type_=UTCDateTime())
    values = {"last_seq": c.last_seq + 1, "updated_at": now, "version": c.version + 1}
    if not internal:
        values["last_message_at"] = now
    if sender_kind == "customer":
        # The writer has read everything up to their own message.
        values["customer_read_seq"] = c.last_seq + 1
        values["agent_unread"] = c.agent_unread + 1
        # SET expressions see the row as it was, so both CASEs test the old status.
        reopen = c.status.in_(REOPENED_BY_CUSTOMER)
        values["status"] = case((reopen, case((c.assignee_id.is_(None), "queued"), else_="open")), else_=c.status)
        values["resolved_at"] = case((reopen, null()), else_=c.resolved_at)
    elif sender_kind == "agent":
        values["agent_read_seq"] = c.last_seq + 1
        values["agent_unread"] = 0
        if not internal:
            values["first_human_reply_at"] = func.coalesce(c.first_human_reply_at, now)
    which = c.id.in_(bindparam("ids", expanding=True)) if many else c.id == bindparam("conversation_id")
    returned = [c[name] for name in _SYNCED]
    return (update(table).where(which, c.status != "closed").values(**values)
            .returning(*([c.id, *returned] if many else returned)))


def _numbered(conversation: Conversation, row, sender: Sender, body: str, internal: bool, client_msg_id: str | None,
              attachment: Attachment | None, now) -> Message:
    """The new message, numbered by the sequence UPDATE that returned `row` (copied onto the conversation)."""
    for name, value in zip(_SYNCED, row, strict=True):
        set_committed_value(conversation, name, value)
    return Message(conversation_id=conversation.id, seq=conversation.last_seq, sender_kind=sender.kind,
                   sender_id=sender.id, sender_name=sender.name[:100], body=body, internal=internal,
                   client_msg_id=client_msg_id, attachment=attachment,
                   attachment_id=attachment.id if attachment is not None else None, created_at=now)


async def _insert(session: AsyncSession, conversation: Conversation, sender: Sender, body: str, internal: bool,
                  client_msg_id: str | None, attachment: Attachment | None, now) -> Message:
    statement = _next_seq_statement(sender.kind, internal)
    row = (await session.execute(statement, {"conversation_id": conversation.id, "now": now})).one_or_none()
    if row is None:
        raise ConversationClosed()  # closed by someone else since it was loaded
    message = _numbered(conversation, row, sender, body, internal, client_msg_id, attachment, now)
    session.add(message)
    await session.flush()
    return message


async def post_message(session: AsyncSession, clock, settings, conversation: Conversation, sender: Sender,
                       body: str | None = "", *, internal: bool = False, client_msg_id: str | None = None,
                       attachment: Attachment | None = None) -> Posted:
    """Store a message with the next sequence number and return it with the events to broadcast.

    Idempotent on `client_msg_id`: a resend (also a concurrent one) returns the stored message with
    duplicate=True and no events. A customer message on a 'resolved' or 'pending_customer' conversation
    reopens it; on a 'closed' one it raises ConversationClosed (the caller opens a new conversation).
    """
    if internal and sender.kind != "agent":
        raise Forbidden("只有客服可以添加内部备注", "only agents can write internal notes")
    _check_client_msg_id(client_msg_id)
    if client_msg_id is not None:
        stored = await _stored(session, conversation.id, client_msg_id)
        if stored is not None:
            return Posted(stored, True, [])
    text = clean_text(body, settings.message_max_chars, allow_empty=attachment is not None)
    if attachment is not None and attachment.conversation_id != conversation.id:
        raise NotFound("附件不存在", "attachment not found", field="attachment")
    if conversation.status == "closed":
        raise ConversationClosed()
    await session.flush()  # pending ORM changes first: the UPDATE below bypasses the unit of work
    status_before = conversation.status
    now = clock.now()
    if client_msg_id is None:
        message = await _insert(session, conversation, sender, text, internal, None, attachment, now)
    else:
        try:
            async with session.begin_nested():
                message = await _insert(session, conversation, sender, text, internal, client_msg_id, attachment,
                                        now)
        except IntegrityError:
            # A concurrent resend stored it first (PostgreSQL made us wait for its commit). Our sequence
            # number went back with the savepoint; reload the conversation as it really is now.
            stored = await _stored(session, conversation.id, client_msg_id)
            if stored is None:
                raise
            await session.refresh(conversation)
            return Posted(stored, True, [])
    events = ev.message_events(message)
    if conversation.status != status_before:
        events += await changed_events(session, conversation)  # includes the inbox row
    elif not internal and sender.kind != "bot":
        # Bot replies leave the inbox row alone: what agents triage is what customers and agents wrote.
        events.append(ev.inbox_event((await inbox_item(session, conversation, message)).to_dict()))
    return Posted(message, False, events, status_before)


# post_many's statements, built once (building them per batch leaves reference cycles for the collector).
# PostgreSQL: the batch locks its conversations in id order (no deadlock between two nodes' batches),
# skipping any another transaction holds, so one busy conversation never holds up the whole batch.
_CONVERSATIONS = (select(Conversation).where(Conversation.id.in_(bindparam("ids", expanding=True)))
                  .order_by(Conversation.id).with_for_update(skip_locked=True))
_EXISTING = select(Conversation.id).where(Conversation.id.in_(bindparam("ids", expanding=True)))
_STORED = select(Message).where(Message.conversation_id.in_(bindparam("ids", expanding=True)),
                                Message.client_msg_id.in_(bindparam("client_msg_ids", expanding=True)))
_INSERT = insert(Message.__table__).returning(Message.__table__.c.id, Message.__table__.c.conversation_id)


@dataclass
class Draft:
    """One public text message to store with post_many."""

    conversation_id: int
    sender: Sender
    body: str
    client_msg_id: str


async def post_many(session: AsyncSession, clock, settings, drafts: list[Draft]
                    ) -> tuple[dict[int, Conversation], list[Posted | Exception]]:
    """Store public text messages for several conversations in one transaction (the chat's group commit):
    per draft the same rules and events as post_message, for a fraction of the statements — the
    conversations, the stored client ids, the customers, orders and unread counts are read once for all,
    and the messages are inserted together.

    At most one draft per conversation (the caller defers the others to its next batch). Returns the
    loaded conversations and, per draft, its Posted or the error it would have raised on its own
    (ValidationFailed, NotFound, ConversationClosed), or ConversationBusy when another transaction
    holds its conversation (PostgreSQL); the other drafts are unaffected by one's error. The new
    messages are inserted with Core: their objects are not in the session.
    """
    ids = [draft.conversation_id for draft in drafts]
    if len(set(ids)) != len(ids):
        raise ValueError("post_many takes at most one draft per conversation")
    loaded = {c.id: c for c in await session.scalars(_CONVERSATIONS, {"ids": ids})}
    missing = [cid for cid in ids if cid not in loaded]
    busy = set(await session.scalars(_EXISTING, {"ids": missing})) if missing else set()
    stored = {(m.conversation_id, m.client_msg_id): m for m in await session.scalars(
        _STORED, {"ids": ids, "client_msg_ids": [draft.client_msg_id for draft in drafts]})}
    await session.flush()  # pending ORM changes first: the statements below bypass the unit of work
    connection = await session.connection()
    # Per draft: a duplicate or an error (final), or the cleaned text to store.
    results: list = [ConversationBusy() if draft.conversation_id in busy else _check_draft(settings, loaded, stored, draft)
                     for draft in drafts]
    now = clock.now()
    for kind in {draft.sender.kind for draft in drafts}:
        # One sequence UPDATE for all of this kind's conversations (each is in the batch once).
        mine = [i for i, draft in enumerate(drafts) if isinstance(results[i], str) and draft.sender.kind == kind]
        if not mine:
            continue
        ids = [drafts[i].conversation_id for i in mine]
        statement = _next_seq_statement(kind, False, many=True)
        rows = {row[0]: row[1:] for row in await connection.execute(statement, {"ids": ids, "now": now})}
        for i, cid in zip(mine, ids, strict=True):
            row = rows.get(cid)  # none: closed since it was loaded
            results[i] = ConversationClosed() if row is None else _drafted(loaded[cid], drafts[i], results[i], row, now)
    fresh = [p for p in results if isinstance(p, Posted) and not p.duplicate]
    if fresh:  # one INSERT for all the new messages; one per conversation, so its id maps back by that
        table = Message.__table__
        rows = await connection.execute(_INSERT,
                                        [{c.key: getattr(p.message, c.key) for c in table.c if c.key != "id"}
                                         for p in fresh])
        ids_by_conversation = dict((cid, mid) for mid, cid in rows)
        for posted in fresh:
            posted.message.id = ids_by_conversation[posted.message.conversation_id]
    # Bot replies leave the inbox row alone (as in post_message); a status change sends the whole row.
    same = [p.message for p in fresh if p.message.sender_kind != "bot"
            and loaded[p.message.conversation_id].status == p.status_before]
    items = await inbox_items(session, [loaded[m.conversation_id] for m in same],
                              {m.conversation_id: m for m in same})
    for posted in fresh:
        conversation = loaded[posted.message.conversation_id]
        posted.events = ev.message_events(posted.message)
        if conversation.status != posted.status_before:
            posted.events += await changed_events(session, conversation)
        elif conversation.id in items:
            posted.events.append(ev.inbox_event(items[conversation.id].to_dict()))
    return loaded, results


def _check_draft(settings, loaded: dict[int, Conversation], stored: dict, draft: Draft) -> Posted | Exception | str:
    """What post_many answers for a draft before any write: a duplicate, an error, or the text to store."""
    try:
        _check_client_msg_id(draft.client_msg_id)
        duplicate = stored.get((draft.conversation_id, draft.client_msg_id))
        if duplicate is not None:
            return Posted(duplicate, True, [])
        text = clean_text(draft.body, settings.message_max_chars)
        if draft.conversation_id not in loaded:
            raise NotFound("找不到这个会话", "no such conversation", field="conversation_id")
        if loaded[draft.conversation_id].status == "closed":
            raise ConversationClosed()
    except (ValidationFailed, NotFound, ConversationClosed) as exc:
        return exc
    return text


def _drafted(conversation: Conversation, draft: Draft, text: str, row, now) -> Posted:
    """The message of a draft whose sequence UPDATE returned `row` (inserted by post_many afterwards)."""
    status_before = conversation.status
    message = _numbered(conversation, row, draft.sender, text, False, draft.client_msg_id, None, now)
    return Posted(message, False, [], status_before)

async def list_messages(session: AsyncSession, conversation: Conversation, after_seq: int = 0, limit: int = 200,
                        include_internal: bool = False) -> list[Message]:
    """Messages with seq > after_seq in seq order, at most `limit` (≤ 500). Customers get
    include_internal=False (the default), which leaves internal notes out."""
    if not isinstance(after_seq, int) or after_seq < 0:
        raise ValidationFailed("after_seq 必须是非负整数", "after_seq must be a non-negative integer", field="after_seq")
    query = select(Message).where(Message.conversation_id == conversation.id, Message.seq > after_seq)
    if not include_internal:
        query = query.where(Message.internal.is_(False))
    rows = await session.scalars(query.order_by(Message.seq).limit(max(1, min(limit, LIST_MAX))))
    return list(rows)


@dataclass
class ReadMarker:
    seq: int  # the reader's marker after the call
    events: list[Event]  # empty when the marker did not move


async def mark_read(session: AsyncSession, conversation: Conversation, reader: str, seq: int) -> ReadMarker:
    """Move the reader's marker ('customer' | 'agent') forward to `seq`, capped at the last message.
    Never backwards: an older or repeated receipt changes nothing and broadcasts nothing."""
    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValidationFailed("seq 必须是非负整数", "seq must be a non-negative integer", field="seq")
    table = Conversation.__table__
    column = table.c[f"{reader}_read_seq"]
    target = case((table.c.last_seq < seq, table.c.last_seq), else_=literal(seq))
    values = {column: target}
    if reader == "agent":  # the customer's messages the agents have still not read
        # Lock the row first: on PostgreSQL the UPDATE below then counts with a snapshot taken after any
        # customer message that held the row has committed (in one statement the count would miss it).
        await session.execute(select(table.c.id).where(table.c.id == conversation.id).with_for_update())
        values[table.c.agent_unread] = (
            select(func.count()).select_from(Message.__table__)
            .where(Message.conversation_id == table.c.id, Message.sender_kind == "customer", Message.seq > target)
            .scalar_subquery())
    row = (await session.execute(
        update(table).where(table.c.id == conversation.id, column < seq, column < table.c.last_seq)
        .values(values).returning(column, table.c.agent_unread))).one_or_none()
    if row is None:
        current = await session.scalar(select(column).where(table.c.id == conversation.id))
        set_committed_value(conversation, column.name, current)
        return ReadMarker(current, [])
    set_committed_value(conversation, column.name, row[0])
    set_committed_value(conversation, "agent_unread", row[1])
    events = ev.read_events(conversation.id, reader, row[0])
    if reader == "agent":
        events.append(ev.inbox_event((await inbox_item(session, conversation)).to_dict()))
    return ReadMarker(row[0], events)
