"""Helpers for queue, routing and SLA tests: agents on duty, tickets handed off, the service pass."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from tests.conversations.helpers import make_conversation, make_customer
from zaima.conversations.conversations import get_conversation
from zaima.db import unit_of_work
from zaima.models import StaffUser
from zaima.service import queue, tickets
from zaima.service.calendar import save_service_hours
from zaima.service.loop import run_pass
from zaima.staff import create_staff

SHANGHAI = ZoneInfo("Asia/Shanghai")
ALL_DAY = {"timezone": "Asia/Shanghai", "weekly": {d: [["00:00", "24:00"]] for d in
                                                  ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}
LONG_TTL = 10 ** 7  # presence that outlives any frozen-clock jump in a test


def local(*args) -> datetime:
    """A Shanghai wall-clock time as the UTC instant the services use."""
    return datetime(*args, tzinfo=SHANGHAI).astimezone(UTC)


async def set_hours(ctx, hours: dict) -> None:
    async with unit_of_work(ctx.sessions) as session:
        await save_service_hours(session, hours)


async def make_agent(ctx, username: str, *, capacity: int = 5, skills=(), languages=("zh",), role: str = "agent"):
    async with unit_of_work(ctx.sessions) as session:
        user = await create_staff(session, ctx.clock, username, "password-123", role=role, display_name=username)
        user.max_concurrent, user.skills, user.languages = capacity, list(skills), list(languages)
    return user


async def go_online(ctx, agent: StaffUser):
    return await ctx.hub.hold_presence("agent", agent.username, "online", ttl_seconds=LONG_TTL)


async def ticket(ctx, *, priority: str = "normal", order=None, device: str | None = None):
    """A new conversation handed off to people (as the bot does on 转人工)."""
    customer = await make_customer(ctx, device)
    conversation = await make_conversation(ctx, customer, order)

    async def run(session):
        conv = await get_conversation(session, conversation.id)
        await queue.hand_off(session, ctx, conv, priority=priority)
        return conv

    return await ctx.transact(run)


async def conv(ctx, conversation_id: int):
    async with unit_of_work(ctx.sessions) as session:
        return await get_conversation(session, conversation_id)


async def set_status(ctx, conversation_id: int, status: str):
    async def run(session):
        conversation = await get_conversation(session, conversation_id)
        await tickets.change_status(session, ctx, conversation, status)
        return conversation

    return await ctx.transact(run)


async def service_pass(ctx) -> None:
    await run_pass(ctx)

