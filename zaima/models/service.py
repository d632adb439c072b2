"""Service records: SLA hits and misses, satisfaction ratings and structured problem reports."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from zaima.db import Base, UTCDateTime

SLA_METRICS = ("first_response", "next_response", "resolution")
SLA_EVENT_KINDS = ("warning", "breach", "met")


class SlaEvent(Base):
    """One hit or miss of an SLA target (for reports), and each 80 % warning."""

    __tablename__ = "sla_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    metric: Mapped[str] = mapped_column(String(16))  # first_response | next_response | resolution
    kind: Mapped[str] = mapped_column(String(8))  # warning | breach | met
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    late: Mapped[bool] = mapped_column(default=False)  # a "met" after the due time (breached, answered late)
    priority: Mapped[str] = mapped_column(String(8))
    vip: Mapped[bool] = mapped_column(default=False)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))


class CsatRating(Base):
    """A customer's 1–5 stars (and comment) for one resolution of a ticket; a reopened ticket asks again."""

    __tablename__ = "csat_ratings"
    __table_args__ = (UniqueConstraint("conversation_id", "round"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"), index=True)
    channel: Mapped[str] = mapped_column(String(8), default="web")  # web | email
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ProblemReport(Base):
    """A structured problem report (「提交问题」): it opens a ticket whose first message holds it all."""

    __tablename__ = "problem_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    problem_type: Mapped[str] = mapped_column(String(24))
    wants: Mapped[str] = mapped_column(String(16))  # resend | refund | repair_account | other
    description: Mapped[str] = mapped_column(Text)
    contact: Mapped[str | None] = mapped_column(String(200))
    attachment_ids: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MailOptOut(Base):
    """An address that asked for no more mail of one kind (today: satisfaction surveys), from the link in
    such a mail or its one-click List-Unsubscribe header (RFC 8058). Only a keyed digest of the address is
    kept: the table answers "may we send this kind of mail here?" and nothing else."""

    __tablename__ = "mail_optouts"
    __table_args__ = (UniqueConstraint("address_digest", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    address_digest: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    via: Mapped[str] = mapped_column(String(16))  # page | one_click
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
