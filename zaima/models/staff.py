"""Store staff: operators and agents (roles agent, supervisor, admin)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from zaima.db import Base, UTCDateTime


class StaffUser(Base):
    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default="agent")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Routing: how many open conversations the agent handles at once, which product kinds (empty: all)
    # and which languages. Fairness: among equally loaded agents the one assigned longest ago goes first.
    max_concurrent: Mapped[int] = mapped_column(Integer, default=5)
    skills: Mapped[list] = mapped_column(JSON, default=list)
    languages: Mapped[list] = mapped_column(JSON, default=lambda: ["zh"])
    last_assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
