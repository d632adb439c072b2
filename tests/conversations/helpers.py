"""Helpers for conversation tests: customers, agents and conversations made through the real services."""

from __future__ import annotations

from zaima.conversations import identity
from zaima.conversations.conversations import get_conversation, open_conversation
from zaima.conversations.messages import post_message
from zaima.conversations.senders import Sender
from zaima.db import unit_of_work
from zaima.models import Conversation
from zaima.staff import create_staff


async def make_customer(ctx, device_id: str | None = None):
    async with unit_of_work(ctx.sessions) as session:
        return await identity.customer_for_device(session, ctx.clock, device_id)


async def make_agent(ctx, username: str = "agent1", display_name: str = "小王"):
    async with unit_of_work(ctx.sessions) as session:
        return await create_staff(session, ctx.clock, username, "password-123", display_name=display_name)


async def make_conversation(ctx, customer, order=None) -> Conversation:
    async with unit_of_work(ctx.sessions) as session:
        return (await open_conversation(session, ctx.clock, customer, order)).conversation


async def post(ctx, conversation_id: int, sender: Sender, body: str = "", **kwargs):
    """Post in its own unit of work (retried by transact like a real request would be)."""

    async def run(session):
        conversation = await get_conversation(session, conversation_id)
        return await post_message(session, ctx.clock, ctx.settings, conversation, sender, body, **kwargs)

    return await ctx.transact(run)


async def load(ctx, conversation_id: int) -> Conversation:
    async with unit_of_work(ctx.sessions) as session:
        return await get_conversation(session, conversation_id)


async def change(ctx, conversation_id: int, fn):
    """Run `fn(session, conversation)` in its own unit of work and return what it returns."""

    async def run(session):
        return await fn(session, await get_conversation(session, conversation_id))

    return await ctx.transact(run)
