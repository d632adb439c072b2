"""The support bot's tables: knowledge-base articles, the official contact registry, per-conversation
multi-turn state, and the record of every automatic action (what makes a bot action idempotent)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from zaima.db import Base, UTCDateTime

# The intent labels of the bot contract (docs: bot-policy-and-eval.md), in its order.
INTENT_LABELS = (
    "greeting", "order_status", "not_received", "invalid_code", "refund", "payment_issue", "account_issue",
    "usage_howto", "policy_question", "contact_verify", "human", "complaint", "thanks", "other",
)
CONTACT_KINDS = ("phone", "qq", "wechat", "email", "url")
BOT_ACTIONS = ("refund", "replace", "redeliver", "resend", "query_payment", "handoff")


class KbArticle(Base):
    """One answer in the knowledge base (知识库), with the ways customers ask for it."""

    __tablename__ = "kb_articles"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    questions: Mapped[list] = mapped_column(JSON, default=list)  # question variants, at least one
    answer: Mapped[str] = mapped_column(Text)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    intents: Mapped[list] = mapped_column(JSON, default=list)  # INTENT_LABELS this article answers
    product_skus: Mapped[list] = mapped_column(JSON, default=list)  # empty: store-wide
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Bumped on every update: a concurrent edit decided on a stale read fails (and the retrieval cache
    # of every process notices the change, see zaima.bot.knowledge).
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class OfficialContact(Base):
    """A phone number, QQ, WeChat id, e-mail address or URL that really belongs to the store."""

    __tablename__ = "official_contacts"
    __table_args__ = (UniqueConstraint("kind", "normalized"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # CONTACT_KINDS
    value: Mapped[str] = mapped_column(String(300))  # as the operator entered it
    normalized: Mapped[str] = mapped_column(String(300))  # zaima.bot.contacts.normalize_contact
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BotState(Base):
    """The bot's multi-turn memory for one conversation (pending offers, misses in a row, …)."""

    __tablename__ = "bot_states"

    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), primary_key=True)
    # Replaced, never mutated in place (a plain JSON column does not track in-place changes).
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Optimistic lock: two messages handled at once cannot both act on the same state.
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class BotAction(Base):
    """One automatic action the bot took; the unique key makes the same request twice act once."""

    __tablename__ = "bot_actions"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    action: Mapped[str] = mapped_column(String(24))  # BOT_ACTIONS
    idempotency_key: Mapped[str] = mapped_column(String(100), unique=True)
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
