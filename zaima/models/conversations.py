"""Customers, conversations (= tickets, 工单), their messages, image attachments and canned responses."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from zaima.db import Base, UTCDateTime

CUSTOMER_KINDS = ("device", "order", "external")
CHANNELS = ("web", "email", "phone", "webhook")  # only "web" is served today
CONVERSATION_STATUSES = ("bot", "queued", "open", "pending_customer", "resolved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")
SENDER_KINDS = ("customer", "bot", "agent", "system")

# Ticket numbers are the id shifted so that the first ticket reads T-10001, not T-1.
TICKET_OFFSET = 10000


class Customer(Base):
    """Someone who talks to the store: an anonymous device, an order's contact, or a host-site user."""

    __tablename__ = "customers"
    __table_args__ = (UniqueConstraint("kind", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # device | order | external
    external_id: Mapped[str] = mapped_column(String(200))  # device id | order contact | host user id
    display_name: Mapped[str] = mapped_column(String(100))
    contact: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Conversation(Base):
    """One conversation is one ticket: numbered, with a status, an owner and a priority."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_assignee_status", "assignee_id", "status"),
                      Index("ix_conversations_queue", "status", "queue_front", "queue_rank", "queued_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16), default="web")
    status: Mapped[str] = mapped_column(String(24), default="bot", index=True)
    priority: Mapped[str] = mapped_column(String(8), default="normal")
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    # Replaced, never mutated in place (a plain JSON column does not track in-place changes).
    labels: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last customer-visible message
    first_human_reply_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Per-conversation message counter, advanced by one atomic UPDATE … RETURNING per message.
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    customer_read_seq: Mapped[int] = mapped_column(Integer, default=0)
    agent_read_seq: Mapped[int] = mapped_column(Integer, default=0)
    # The customer's messages after agent_read_seq (the inbox's unread badge), kept by the same statements
    # that move the sequence and the agents' marker (zaima.conversations.messages).
    agent_unread: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Queue (see zaima.service.queue): when the conversation entered the queue (its place, kept while the
    # customer is away), its rank (complaints and VIPs first) and whether it was returned to the front.
    handoff_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # first hand-off to people (FRT start)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queue_rank: Mapped[int] = mapped_column(Integer, default=0)
    queue_front: Mapped[bool] = mapped_column(Boolean, default=False)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    vip: Mapped[bool] = mapped_column(Boolean, default=False)
    skill: Mapped[str | None] = mapped_column(String(16))  # the order's product kind
    language: Mapped[str] = mapped_column(String(8), default="zh")
    # SLA (see zaima.service.sla): the due times of the running targets; paused while pending_customer.
    sla_policy: Mapped[str | None] = mapped_column(String(16))
    first_response_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_response_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolution_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sla_paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    awaiting_reply_since: Mapped[datetime | None] = mapped_column(UTCDateTime)  # customer waits for a person
    sla_warned: Mapped[list] = mapped_column(JSON, default=list)  # metrics warned at 80 % (current targets)
    sla_breached: Mapped[list] = mapped_column(JSON, default=list)  # metrics breached (current targets)
    # Off hours: the e-mail address told when a person answers; cleared once it was notified.
    notify_email: Mapped[str | None] = mapped_column(String(200))
    csat_round: Mapped[int] = mapped_column(Integer, default=0)  # advanced at each resolve; 0: never asked

    # Optimistic lock: a status change decided on a stale read fails and is retried (zaima.db.transact).
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}

    @property
    def ticket_no(self) -> str:
        return f"T-{TICKET_OFFSET + self.id}"


class Attachment(Base):
    """An image a customer or agent uploaded; the type comes from the bytes, never from the name."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    uploader_kind: Mapped[str] = mapped_column(String(16))  # customer | agent
    uploader_id: Mapped[str | None] = mapped_column(String(64))
    original_name: Mapped[str] = mapped_column(String(200), default="")
    content_type: Mapped[str] = mapped_column(String(32))
    byte_size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    # Relative to settings.var_dir / "attachments"; identical bytes share one file.
    storage_path: Mapped[str] = mapped_column(String(200))
    thumbnail_path: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq"),
        # A resent message (same client id) is stored once. NULLs never collide.
        UniqueConstraint("conversation_id", "client_msg_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    seq: Mapped[int] = mapped_column(Integer)
    sender_kind: Mapped[str] = mapped_column(String(16))  # customer | bot | agent | system
    sender_id: Mapped[str | None] = mapped_column(String(64))
    sender_name: Mapped[str] = mapped_column(String(100), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    internal: Mapped[bool] = mapped_column(Boolean, default=False)  # agent-only note
    client_msg_id: Mapped[str | None] = mapped_column(String(64))
    attachment_id: Mapped[int | None] = mapped_column(ForeignKey("attachments.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    # Loaded together with the message (one extra SELECT … IN per batch), never lazily: async safe.
    attachment: Mapped[Attachment | None] = relationship(lazy="selectin")


class CannedResponse(Base):
    """A prepared reply an agent inserts by typing "/" and its shortcut in the console."""

    __tablename__ = "canned_responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    shortcut: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
