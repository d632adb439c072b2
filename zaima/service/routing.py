"""Routing: queued conversations go to online agents with free capacity, in queue order.

- Who: online agents and supervisors (admins are operators: never routed to, though they may take one).
- Capacity: an agent holds at most `max_concurrent` conversations in status `open` (a conversation
  waiting on the customer does not occupy a slot).
- Skills: an agent with product kinds in `skills` takes only those kinds (no kinds: every kind); the
  conversation's language must be one of the agent's `languages`. A conversation nobody online
  matches goes to any agent after waiting `SKILL_FALLBACK`, so a skill gap never strands a customer.
- Choice: least loaded first, then the agent assigned longest ago (fair over the day), then by id.
- Backlog: each pass walks the queue from the front, so freed capacity takes the longest-waiting
  conversation of the highest lane first (first in, first out within a lane).
- Leaving: an agent who goes away or offline (or whose connection has been gone for
  `ABSENCE_GRACE`) gives back every conversation still waiting for a reply; they return to the front.

One routing pass at a time across nodes (a transaction-scoped advisory lock on PostgreSQL; SQLite
writes are serial anyway), so two nodes never fill one agent's last slot twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.conversations.events import Event
from zaima.conversations.messages import post_message
from zaima.conversations.senders import Sender
from zaima.models import Conversation, StaffUser
from zaima.service.queue import SKILL_FALLBACK, queue_order, requeue, routable, serves, take

ABSENCE_GRACE = timedelta(seconds=60)
ROUTING_LOCK = 7_232_031  # pg_advisory_xact_lock key
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)



def matches(agent: StaffUser, conversation: Conversation, now: datetime) -> bool:
    if serves(agent.skills, agent.languages, conversation.skill, conversation.language):
        return True
    return now - (conversation.queued_at or now) >= SKILL_FALLBACK


async def lock(session: AsyncSession) -> None:
    """One routing pass at a time across nodes (held until the transaction ends)."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROUTING_LOCK})


async def loads(session: AsyncSession, agent_ids: list[int]) -> dict[int, int]:
    if not agent_ids:
        return {}
    rows = await session.execute(select(Conversation.assignee_id, func.count())
                                 .where(Conversation.status == "open", Conversation.assignee_id.in_(agent_ids))
                                 .group_by(Conversation.assignee_id))
    return {agent_id: count for agent_id, count in rows}


async def assign_to(session: AsyncSession, ctx, conversation: Conversation, agent: StaffUser) -> list[Event]:
    """Give a waiting conversation to `agent`: it leaves the queue, and the customer is told who took it."""
    events = await take(session, ctx, conversation, agent)
    posted = await post_message(session, ctx.clock, ctx.settings, conversation, Sender.system(),
                                f"客服「{agent.display_name}」已接入，会尽快回复您。")
    return events + posted.events


async def route(session: AsyncSession, ctx, online: set[str]) -> list[Event]:
    """One routing pass: assign as much of the queue as the online agents' free capacity allows."""
    if not online:
        return []
    await lock(session)
    now = ctx.clock.now()
    agents = list(await session.scalars(select(StaffUser).where(*routable(online))))
    if not agents:
        return []
    load = await loads(session, [a.id for a in agents])
    free = sum(max(0, a.max_concurrent - load.get(a.id, 0)) for a in agents)
    if free <= 0:
        return []
    waiting = await session.scalars(select(Conversation)
                                    .where(Conversation.status == "queued", Conversation.assignee_id.is_(None))
                                    .order_by(*queue_order()).limit(500))
    events: list[Event] = []
    for conversation in waiting:
        candidates = [a for a in agents if load.get(a.id, 0) < a.max_concurrent and matches(a, conversation, now)]
        if not candidates:
            continue
        agent = min(candidates, key=lambda a: (load.get(a.id, 0), a.last_assigned_at or _EPOCH, a.id))
        events += await assign_to(session, ctx, conversation, agent)
        load[agent.id] = load.get(agent.id, 0) + 1
        free -= 1
        if free <= 0:
            break
    return events


def _unanswered():
    return or_(Conversation.first_human_reply_at.is_(None), Conversation.awaiting_reply_since.is_not(None))


async def release_agent(session: AsyncSession, ctx, agent_id: int) -> list[Event]:
    """The agent left (away, offline, gone): their conversations still waiting for a reply go back to the
    front of the queue, longest waiting first. Answered ones stay theirs until the customer writes again."""
    rows = await session.scalars(select(Conversation).where(Conversation.assignee_id == agent_id,
                                                            Conversation.status == "open", _unanswered()))
    events: list[Event] = []
    for conversation in rows:
        since = conversation.awaiting_reply_since or conversation.handoff_at or ctx.clock.now()
        events += await requeue(session, ctx, conversation, since=since, front=True)
    return events


async def release_absent(session: AsyncSession, ctx, online: set[str]) -> list[Event]:
    """Release the conversations of agents whose connection has been gone for ABSENCE_GRACE (a reload or
    a flaky network must not cost the agent their conversations; a closed laptop must not strand them)."""
    now = ctx.clock.now()
    rows = (await session.execute(
        select(StaffUser.id, StaffUser.username).join(Conversation, Conversation.assignee_id == StaffUser.id)
        .where(Conversation.status == "open", _unanswered()).distinct())).all()
    absent = {agent_id for agent_id, username in rows if username not in online}
    # When this node first saw each such agent absent (staff id → time).
    since: dict[int, datetime] = ctx.service_state.setdefault("absent_since", {})
    for agent_id in set(since) - absent:
        del since[agent_id]
    events: list[Event] = []
    for agent_id in absent:
        if now - since.setdefault(agent_id, now) >= ABSENCE_GRACE:
            events += await release_agent(session, ctx, agent_id)
            del since[agent_id]
    return events
