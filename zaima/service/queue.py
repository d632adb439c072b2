"""The human queue: hand-off into it, its order, each customer's live position and an honest wait.

Order: conversations returned to the queue by an agent who left come first (they had their turn), then
by rank (urgent > high/complaint/VIP > normal > low), then by the time they entered the queue. The
place is the conversation's, not the socket's: leaving and coming back keeps it.

Expected wait (see docs/metrics.md): every online agent has `max_concurrent` slots. A free slot takes
a conversation now; an occupied slot is expected to free when its conversation has been handled for
the recent mean handling time (at least a fifth of it from now). Routing is played forward: whenever
slots are free, a pass walks the queue in order and gives each conversation the free slot of the agent
routing would pick among those who serve it (skills, languages; anyone after the skill fallback); the
slot frees again one handling time later. The wait of a conversation is when it gets its slot, so a
recharge ticket behind card-key tickets waits for the agents who take recharges. With nobody online
there is no honest number: the customer is told when service opens and by when the SLA promises a reply.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.conversations import conversations as convs
from zaima.conversations import events as ev
from zaima.conversations.events import Event
from zaima.db import on_commit
from zaima.models import Conversation, Customer, Order, Product, StaffUser
from zaima.service import mail, sla
from zaima.service.calendar import describe_time
from zaima.service.policy import RANKS, is_vip, rank_of
from zaima.service.sla import ServiceConfig

DEFAULT_HANDLE = timedelta(minutes=8)  # until there is history to learn from
HANDLE_SAMPLE = 50
MIN_HISTORY = 3  # resolved tickets needed before the recent handling times are used
MIN_REMAINING_SHARE = 5  # an occupied slot frees in at least 1/5 of a handling time


def queue_order():
    return (Conversation.queue_front.desc(), Conversation.queue_rank.desc(), Conversation.queued_at,
            Conversation.id)


def routable(online: set[str]) -> tuple:
    """Who takes conversations automatically: active agents and supervisors who are online. Admins (the
    store's operators) are never routed to; they can still take a conversation by hand."""
    return StaffUser.username.in_(online), StaffUser.active.is_(True), StaffUser.role != "admin"


def schedule_routing(session: AsyncSession, ctx) -> None:
    """Once this unit of work commits, let the service loop route and refresh positions now."""
    on_commit(session, ctx.kick_service)


async def take(session: AsyncSession, ctx, conversation: Conversation, agent: StaffUser) -> list[Event]:
    """A person takes the ticket (routing, the console, a reply): it leaves the queue; the agent's turn
    for fairness is now."""
    if agent.id == conversation.assignee_id:
        return []
    now = ctx.clock.now()
    conversation.assigned_at, conversation.queued_at, conversation.queue_front = now, None, False
    agent.last_assigned_at = now
    return await convs.assign(session, ctx.clock, conversation, agent)


async def requeue(session: AsyncSession, ctx, conversation: Conversation, *, since: datetime,
                  front: bool = False) -> list[Event]:
    """A person lets go of an open ticket: back in the queue in its lane, waiting since `since` (at the
    front when its agent left without answering)."""
    conversation.queued_at, conversation.queue_front, conversation.assigned_at = since, front, None
    conversation.queue_rank = rank_of(conversation.priority, conversation.vip)
    schedule_routing(session, ctx)
    return await convs.assign(session, ctx.clock, conversation, None)  # open / pending_customer → queued


async def _facts(session: AsyncSession, conversation: Conversation) -> tuple[str | None, str | None]:
    """The product kind (for skills) and the buyer's contact (for VIP and e-mail) of the ticket."""
    if conversation.order_id is not None:
        row = (await session.execute(select(Product.kind, Order.contact).join(Order, Order.product_id == Product.id)
                                     .where(Order.id == conversation.order_id))).first()
        if row is not None:
            return row[0], row[1]
    contact = await session.scalar(select(Customer.contact).where(Customer.id == conversation.customer_id))
    return None, contact


async def hand_off(session: AsyncSession, ctx, conversation: Conversation, *, priority: str = "normal",
                   cfg: ServiceConfig | None = None, online: int | None = None) -> list[Event]:
    """Put the conversation in the queue for a person (转人工): always honoured at once.

    Sets its lane (priority, VIP), its place, its SLA targets and, when no one can answer now (off
    hours or nobody online) and the buyer left an e-mail address, the address told when a person
    answers. Routing runs after commit. `online` (agents online) may be passed when already known.
    """
    cfg = cfg or await sla.load_config(session)
    now = ctx.clock.now()
    old = conversation.status
    if RANKS.get(priority, 1) > RANKS.get(conversation.priority, 1):
        await convs.set_priority(session, ctx.clock, conversation, priority)
    if old in ("open", "pending_customer"):
        return await convs.changed_events(session, conversation, public=False)  # a person already has it
    skill, contact = await _facts(session, conversation)
    conversation.skill = skill
    conversation.vip = conversation.vip or await is_vip(session, cfg.vip, contact, now)
    conversation.handoff_at = conversation.handoff_at or now
    if old != "queued" or conversation.queued_at is None:
        conversation.queued_at = now
        conversation.queue_front = False
    conversation.queue_rank = rank_of(conversation.priority, conversation.vip)
    if old != "queued":
        conversation.assignee_id = None  # a resolved ticket keeps its last owner; the queue is for nobody's
        conversation.assigned_at = None
        await convs.set_status(session, ctx.clock, conversation, "queued")
    sla.start(cfg, conversation, now)
    sla.retarget(cfg, conversation)
    if mail.is_email(contact) and await _nobody_can_answer_soon(session, ctx, conversation, cfg, now, online):
        conversation.notify_email = contact
    events = await convs.changed_events(session, conversation)
    schedule_routing(session, ctx)
    return events


async def _nobody_can_answer_soon(session: AsyncSession, ctx, conversation: Conversation, cfg: ServiceConfig,
                                  now: datetime, online: int | None) -> bool:
    """Off hours, nobody online, or the turn would come after closing time: the customer will be away."""
    if not cfg.calendar.is_open(now):
        return True
    if online is None:
        online = len(await online_agents(ctx))
    if online == 0:
        return True
    await session.flush()
    view = await queue_status(session, ctx, conversation)
    return bool(view and view["closing_soon"])


async def online_agents(ctx) -> set[str]:
    """Usernames of agents whose presence is 'online' on any node (away and offline take nothing)."""
    from zaima.realtime.publish import AGENT

    return {name for name, state in (await ctx.hub.get_presence(AGENT)).items() if state == "online"}


# --- positions and the expected wait -------------------------------------------------------------------------


SKILL_FALLBACK = timedelta(minutes=5)  # after this long in the queue, any agent may take a conversation


def serves(skills: list | tuple | None, languages: list | tuple | None, skill: str | None, language: str) -> bool:
    """Whether an agent with these product kinds (none: every kind) and languages takes the conversation
    before its skill fallback: the one rule routing and the expected wait share."""
    return (not skills or skill is None or skill in skills) and language in (languages or ("zh",))


@dataclass(frozen=True)
class Need:
    """What a queued conversation asks of an agent, and when any agent may take it (seconds from now)."""

    skill: str | None
    language: str
    anyone_in: float


@dataclass
class Slot:
    """One of an online agent's `max_concurrent` places: free (age None) or handling a conversation for
    `age` seconds. The rest is the agent's: what routing matches (skills, languages) and ranks by (load
    out of `capacity`, then `last_assigned` in seconds relative to now, then the id)."""

    age: float | None
    skills: tuple = ()
    languages: tuple = ("zh",)
    agent: int = 0
    capacity: int = 1
    last_assigned: float = float("-inf")  # never assigned: first among equals, as routing's epoch


@dataclass
class Snapshot:
    """The queue and the online agents' slots at one instant."""

    now: datetime
    queued: list[int]  # conversation ids in queue order
    slots: list[Slot] = field(default_factory=list)
    needs: dict[int, Need] = field(default_factory=dict)  # per queued id; a missing one suits every agent
    durations: list[float] = field(default_factory=list)  # recent handling times, seconds, ascending
    agents_online: int = 0

    @property
    def handle(self) -> timedelta:
        """Mean recent handling time (the default until there are enough tickets to learn from)."""
        if len(self.durations) < MIN_HISTORY:
            return DEFAULT_HANDLE
        return timedelta(seconds=sum(self.durations) / len(self.durations))

    def waits(self) -> dict[int, timedelta | None]:
        """Expected wait of every queued conversation (None when no agent is online), by playing routing
        forward. Every occupied slot frees one mean handling time after it started (at least a fifth of one
        from now) and again one handling time after each conversation it takes. Whenever slots are free, a
        routing pass walks the queue in order and gives each conversation the free slot of the agent
        routing would choose among those who serve it (skills, languages; anyone once the conversation
        has waited past the skill fallback): least loaded, then assigned longest ago, then by id. Without
        skills or languages in play this is simply: the n-th in the queue takes the n-th slot to free."""
        if not self.slots:
            return {cid: None for cid in self.queued}
        handle = self.handle.total_seconds()
        floor = handle / MIN_REMAINING_SHARE
        heap = [(0.0 if slot.age is None else max(handle - slot.age, floor), n) for n, slot in enumerate(self.slots)]
        heapq.heapify(heap)
        classes = {(need.skill, need.language) for need in self.needs.values()}
        profiles = {(slot.skills, slot.languages) for slot in self.slots}
        served = {(p, c): serves(*p, *c) for p in profiles for c in classes}
        if all(served.values()):  # every slot takes every ticket: which slot does not change any wait
            taken = {}
            for cid in self.queued:
                at, n = heap[0]
                taken[cid] = at
                heapq.heapreplace(heap, (at + handle, n))
            return {cid: timedelta(seconds=at) for cid, at in taken.items()}
        return self._play(heap, handle, served)

    def _play(self, heap: list, handle: float, served: dict) -> dict[int, timedelta]:
        slots = self.slots
        last = {slot.agent: slot.last_assigned for slot in slots}
        pending = list(self.queued)
        taken: dict[int, float] = {}
        while pending:
            at = heap[0][0]
            free: list[int] = []
            while heap and heap[0][0] <= at:
                free.append(heapq.heappop(heap)[1])
            free_of: dict[int, int] = {}  # agent -> free slots in this pass (routing's load is capacity - that)
            for n in free:
                free_of[slots[n].agent] = free_of.get(slots[n].agent, 0) + 1
            open_to = {c for (p, c), ok in served.items() if ok and any((slots[n].skills, slots[n].languages) == p
                                                                         for n in free)}
            left: list[int] = []
            for i, cid in enumerate(pending):  # one routing pass at `at`
                if not free:
                    left += pending[i:]
                    break
                need = self.needs.get(cid)
                anyone = need is None or at >= need.anyone_in
                if not anyone and (need.skill, need.language) not in open_to:  # a quick no (may go stale: checked)
                    left.append(cid)
                    continue
                options = free if anyone else [n for n in free if served[(slots[n].skills, slots[n].languages),
                                                                         (need.skill, need.language)]]
                if not options:
                    left.append(cid)
                    continue
                n = min(options, key=lambda n: (slots[n].capacity - free_of[slots[n].agent], last[slots[n].agent],
                                                 slots[n].agent))
                free.remove(n)
                free_of[slots[n].agent] -= 1
                last[slots[n].agent] = at
                taken[cid] = at
                heapq.heappush(heap, (at + handle, n))
            pending = left
            if pending and free:  # nobody left that these agents serve: idle until the next skill fallback
                later = min(self.needs[cid].anyone_in for cid in pending)
                for n in free:
                    heapq.heappush(heap, (later, n))
        return {cid: timedelta(seconds=taken[cid]) for cid in self.queued}


async def recent_handling_times(session: AsyncSession, now: datetime) -> list[float]:
    """Assignment-to-resolution times (seconds, ascending) of the last 50 tickets resolved in 7 days."""
    rows = (await session.execute(
        select(Conversation.assigned_at, Conversation.resolved_at)
        .where(Conversation.resolved_at.is_not(None), Conversation.assigned_at.is_not(None),
               Conversation.resolved_at >= now - timedelta(days=7), Conversation.resolved_at > Conversation.assigned_at)
        .order_by(Conversation.resolved_at.desc()).limit(HANDLE_SAMPLE))).all()
    return sorted((resolved - assigned).total_seconds() for assigned, resolved in rows)


async def mean_handling_time(session: AsyncSession, now: datetime) -> timedelta:
    return Snapshot(now, [], durations=await recent_handling_times(session, now)).handle


async def snapshot(session: AsyncSession, online: set[str], now: datetime) -> Snapshot:
    rows = (await session.execute(select(Conversation.id, Conversation.skill, Conversation.language,
                                         Conversation.queued_at)
                                  .where(Conversation.status == "queued").order_by(*queue_order()))).all()
    snap = Snapshot(now, [row.id for row in rows], durations=await recent_handling_times(session, now))
    if not online:
        return snap
    for cid, skill, language, queued_at in rows:
        anyone_at = (queued_at or now) + SKILL_FALLBACK
        snap.needs[cid] = Need(skill, language, max(0.0, (anyone_at - now).total_seconds()))
    agents = (await session.execute(select(StaffUser.id, StaffUser.max_concurrent, StaffUser.skills,
                                           StaffUser.languages, StaffUser.last_assigned_at)
                                    .where(*routable(online)))).all()
    snap.agents_online = len(agents)
    busy: dict[int, list[datetime]] = {}
    if agents:
        rows = await session.execute(select(Conversation.assignee_id, Conversation.assigned_at)
                                     .where(Conversation.status == "open",
                                            Conversation.assignee_id.in_([a.id for a in agents])))
        for assignee, assigned_at in rows:
            busy.setdefault(assignee, []).append(assigned_at or now)
    for agent_id, capacity, skills, languages, last_assigned_at in agents:
        started = sorted(busy.get(agent_id, []))[:capacity]
        ages = [max(0.0, (now - assigned_at).total_seconds()) for assigned_at in started]
        ages += [None] * max(0, capacity - len(started))
        last = float("-inf") if last_assigned_at is None else (last_assigned_at - now).total_seconds()
        snap.slots += [Slot(age, tuple(skills or ()), tuple(languages or ("zh",)), agent_id, capacity, last)
                       for age in ages]
    return snap


def status_view(conversation: Conversation, position: int, waiting: int, wait: timedelta | None,
                cfg: ServiceConfig, agents_online: int, now: datetime) -> dict:
    """What the customer's widget shows while queued (see docs/realtime.md, frame `queue`)."""
    calendar = cfg.calendar
    open_now = calendar.is_open(now)
    next_open = None if open_now else calendar.next_open(now)
    closing_soon = False
    if open_now and wait is not None:
        closes = calendar.period_end(now)
        if closes is not None and now + wait > closes:
            # The turn would come after closing: no number we could keep; say when service is back instead.
            closing_soon, wait, next_open = True, None, calendar.next_open(closes)
    reply_by = conversation.first_response_due_at or conversation.next_response_due_at
    return {
        "ticket_no": conversation.ticket_no,
        "position": position,
        "waiting": waiting,
        "expected_wait_seconds": None if wait is None or not open_now else int(wait.total_seconds()),
        "agents_online": agents_online,
        "open_now": open_now,
        "closing_soon": closing_soon,
        "next_open_at": next_open.isoformat() if next_open else None,
        "next_open_text": describe_time(calendar, next_open, now, "zh") if next_open else None,
        "next_open_text_en": describe_time(calendar, next_open, now, "en") if next_open else None,
        "reply_by": reply_by.isoformat() if reply_by else None,
        "reply_by_text": describe_time(calendar, reply_by, now, "zh") if reply_by else None,
        "reply_by_text_en": describe_time(calendar, reply_by, now, "en") if reply_by else None,
    }


async def queue_events(session: AsyncSession, ctx, cfg: ServiceConfig | None = None,
                       online: set[str] | None = None, limit: int = 500) -> list[Event]:
    """A `queue` event for each queued conversation's customer (its position may have moved)."""
    cfg = cfg or await sla.load_config(session)
    online = await online_agents(ctx) if online is None else online
    now = ctx.clock.now()
    snap = await snapshot(session, online, now)
    if not snap.queued:
        return []
    waits = snap.waits()
    ids = snap.queued[:limit]
    rows = {c.id: c for c in await session.scalars(select(Conversation).where(Conversation.id.in_(ids)))}
    events = []
    for position, cid in enumerate(ids, start=1):
        view = status_view(rows[cid], position, len(snap.queued), waits[cid], cfg, snap.agents_online, now)
        events.append(Event(ev.public_topic(cid), {"type": "queue", "conversation_id": cid, "queue": view}))
    return events


async def queue_status(session: AsyncSession, ctx, conversation: Conversation) -> dict | None:
    """The queue view of one conversation (the socket's `ready` frame); None when it is not queued."""
    if conversation.status != "queued":
        return None
    cfg = await sla.load_config(session)
    now = ctx.clock.now()
    snap = await snapshot(session, await online_agents(ctx), now)
    if conversation.id not in snap.queued:
        return None
    wait = snap.waits()[conversation.id]
    return status_view(conversation, snap.queued.index(conversation.id) + 1, len(snap.queued), wait, cfg,
                       snap.agents_online, now)


def _mask_email(address: str) -> str:
    name, _, domain = address.partition("@")
    return f"{name[:2]}***@{domain}"


async def handoff_notice(session: AsyncSession, ctx, conversation: Conversation) -> str:
    """What the customer is told right after the hand-off, honestly: the place and wait when people are
    on duty; otherwise when service opens and by when a reply is promised (and where it will be sent)."""
    view = await queue_status(session, ctx, conversation)
    if view is None:
        return ""
    mailed = f"客服回复后会发邮件通知到 {_mask_email(conversation.notify_email)}。" if conversation.notify_email else ""
    reply_by = f"我们承诺在 {view['reply_by_text']} 前回复您。" if view["reply_by_text"] else ""
    if not view["open_now"]:
        return f"\n现在是非服务时间，人工客服将于 {view['next_open_text']} 上线，{reply_by}{mailed}"
    if view["closing_soon"]:
        return (f"\n今天的服务时间快结束了，可能轮不到您；人工客服将于 {view['next_open_text']} 再上线，"
                f"{reply_by}{mailed}")
    if not view["agents_online"]:
        return f"\n目前暂无客服在线，{reply_by}{mailed}"
    ahead = view["position"] - 1
    wait = view["expected_wait_seconds"]
    waiting = f"预计等待约 {max(1, round(wait / 60))} 分钟。" if wait else "马上为您接入。"
    return f"\n您前面还有 {ahead} 位，{waiting}" if ahead else f"\n{waiting}"
