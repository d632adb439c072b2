"""One simulated service day through the real queue, routing and SLA code, on a real database.

Simulated time (a FrozenClock moved from event to event), real code: every hand-off is
`zaima.service.queue.hand_off` in a unit of work, the customer's prediction is read the way the widget
gets it (`queue.queue_status` → `expected_wait_seconds`, in the hand-off's transaction, as the bot's
hand-off notice does), every event is followed by one `zaima.service.loop.run_pass` (release absent
agents, SLA sweep, routing, positions), agents reply through `zaima.web.agent_socket.agent_reply` and
resolve through `zaima.service.tickets.change_status`. Agents' presence is real hub presence
(InProcessHub on the FrozenClock; see PRESENCE_TTL below).

Events (a heap over simulated time): arrival (customer + conversation in `bot`, one customer message,
hand-off), agent shift start (presence online) and end (presence released, then `release_conversations`
as the console does when an agent picks offline: assigned conversations not yet answered go back to the
front of the queue; answered ones stay with the agent, who resolves them after the end of the shift),
the agent's first reply, the resolve, a periodic sweep (the service loop's timer) and an hourly log line.

    .venv/bin/python bench/queue_sim.py                      # SQLite temp file, seed 1
    .venv/bin/python bench/queue_sim.py --seed 7 --scale 1.5
    .venv/bin/python bench/queue_sim.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/zaima_qsim

Human-readable progress on stderr; the last line of stdout is one JSON object. See docs/benchmarks.md,
"Queue: expected wait", for the definitions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import heapq
import json
import logging
import math
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import log  # noqa: E402

TZ = ZoneInfo("Asia/Shanghai")
# Hand-offs per local hour 00..23 (≈ 480 a day): a card shop's curve, quiet at night, a lunch peak
# 12-14 and the evening peak 20-23 (after school / work, when games are played).
DEFAULT_CURVE = "16,10,6,3,2,2,3,5,9,14,18,24,32,34,28,22,20,20,24,30,40,44,42,30"
DEFAULT_SHIFTS = "morning:2:09:00-15:00,evening:3:15:00-23:00,night:1:23:00-02:00"
# The hub's heartbeat runs on real time (asyncio.sleep(10)) while presence expiry reads the injected
# clock: with the default 30 s ttl an agent vanishes once the FrozenClock jumps more than 30 s between
# two heartbeats, i.e. after almost every event. Leases are therefore held with a ttl longer than the run.
PRESENCE_TTL = 7 * 24 * 3600
PROPOSAL_RUNS = 200
WAIT_THRESHOLD = 30  # seconds: a conversation assigned sooner had no wait to predict
WHAT_IFS = ("true_mean_handle", "sampled_residuals", "ideal_distribution", "known_present", "ignoring_skills")

# Tie order at one instant: agents come on before anything else, leave last.
ORDER = {"shift_start": 0, "resolve": 1, "reply": 2, "arrival": 3, "sweep": 4, "hour": 5, "shift_end": 6}


@dataclass
class Rec:
    """What the simulation knows of one handed-off conversation."""

    cid: int
    n: int  # arrival number
    priority: str
    vip: bool
    handoff_at: datetime
    predicted: int | None  # expected_wait_seconds as the widget showed it at hand-off
    position: int
    queue_len: int
    agents_online: int
    open_now: bool
    what_if: dict = field(default_factory=dict)  # analysis only: other estimators' predictions (seconds)
    kind: str | None = None  # the product kind of the ticket's order (--recharge-share), else no order
    first_assigned_at: datetime | None = None
    assignee: int | None = None
    assigned_at: datetime | None = None  # the current assignment (token for its reply / resolve events)
    assignments: int = 0
    releases: int = 0
    replied: bool = False
    resolved_at: datetime | None = None
    handle_s: float = 0.0


@dataclass
class Agent:
    username: str
    shift: str
    start: tuple[int, int]
    end: tuple[int, int]
    staff_id: int = 0
    user: object = None
    lease: object = None
    holding: set[int] = field(default_factory=set)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def hm(text: str) -> tuple[int, int]:
    h, m = text.split(":")
    return int(h), int(m)


def parse_shifts(text: str) -> list[tuple[str, int, tuple[int, int], tuple[int, int]]]:
    shifts = []
    for part in text.split(","):
        name, count, span = part.strip().split(":", 2)
        start, end = span.split("-")
        shifts.append((name, int(count), hm(start), hm(end)))
    return shifts


def parse_skills(text: str) -> dict[str, list[str]]:
    """`morning1=recharge,evening1=recharge+card_key` → {agent username: product kinds}."""
    out: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, kinds = item.partition("=")
        chosen = [k for k in kinds.split("+") if k]
        if not name or not chosen or any(k not in ("card_key", "recharge", "account", "license") for k in chosen):
            raise SystemExit(f"--skills: cannot read {item!r} (agent=kind[+kind], kinds card_key/recharge/…)")
        out[name] = chosen
    return out


async def kind_orders(ctx) -> dict[str, int]:
    """One card-key and one recharge order (unpaid, so nobody is VIP by spending) that the simulated tickets
    are about: the hand-off reads the ticket's skill from its order's product, as it does in the shop."""
    from zaima.db import unit_of_work
    from zaima.models import Order
    from zaima.store import catalog

    out = {}
    async with unit_of_work(ctx.sessions) as session:
        now = ctx.clock.now()
        for n, (kind, extra) in enumerate((("card_key", {}), ("recharge", {"input_fields": [
                {"name": "uid", "label": "游戏UID", "pattern": "^[0-9]{6,12}$"}]}))):
            product = await catalog.create_product(session, ctx.clock, f"sim-{kind}", kind=kind, name=f"模拟 {kind}",
                                                   price_fen=100, **extra)
            order = Order(order_no=f"SIMORDER{n:04d}", product_id=product.id, quantity=1, unit_price_fen=100,
                          amount_fen=100, contact=f"sim{n}@example.com", contact_kind="email", created_at=now,
                          expires_at=now + timedelta(minutes=15))
            session.add(order)
            await session.flush()
            out[kind] = order.id
    return out


def local(day: date, at: tuple[int, int], plus_days: int = 0) -> datetime:
    wall = datetime(day.year, day.month, day.day, at[0], at[1], tzinfo=TZ)
    return wall.astimezone(UTC) + timedelta(days=plus_days)


def arrivals(rng: random.Random, curve: list[float], day: date, scale: float, complaint: float, vip: float,
             urgent: float) -> list[tuple[datetime, str, bool]]:
    """A non-homogeneous Poisson process: exponential gaps at each hour's rate (piecewise constant)."""
    out = []
    for hour, rate in enumerate(curve):
        rate *= scale
        if rate <= 0:
            continue
        t = rng.expovariate(rate)
        while t < 1.0:
            at = local(day, (hour, 0)) + timedelta(seconds=round(t * 3600, 3))
            r = rng.random()
            priority = "urgent" if r < urgent else "high" if r < urgent + complaint else "normal"
            out.append((at, priority, rng.random() < vip))
            t += rng.expovariate(rate)
    return sorted(out)


def configure_quiet_logging() -> None:
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


async def simulate(args) -> dict:
    from sqlalchemy import func, select

    from zaima.config import Settings
    from zaima.context import build_context
    from zaima.conversations import conversations, identity, messages
    from zaima.conversations.senders import Sender
    from zaima.core.clock import FrozenClock
    from zaima.db import unit_of_work
    from zaima.migrate import upgrade
    from zaima.models import Conversation, Order, SlaEvent, StaffUser
    from zaima.realtime import InProcessHub
    from zaima.realtime.publish import AGENT, forget_online_count, publish_after_commit
    from zaima.service import loop, queue, tickets
    from zaima.service.calendar import save_service_hours
    from zaima.staff import create_staff
    from zaima.web.agent_socket import agent_reply, release_conversations

    wall0 = time.perf_counter()
    rng = random.Random(args.seed)
    day = date.fromisoformat(args.date)
    curve = [float(x) for x in args.arrivals.split(",")]
    if len(curve) != 24:
        raise SystemExit("--arrivals takes 24 comma-separated rates (hand-offs per local hour 00..23)")
    kinds = random.Random(args.seed + 10_000)  # its own stream: the other draws stay those of a run without skills
    start = local(day, (0, 0))
    day_end = local(day, (0, 0), 1)
    clock = FrozenClock(start - timedelta(minutes=1))

    workdir = Path(tempfile.mkdtemp(prefix="zaima-queuesim-"))
    url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'queue.db'}"
    settings = Settings(env="test", var_dir=workdir, database_url=url, redis_url="",
                        secret_key=secrets.token_urlsafe(24),
                        card_key_encryption_key=base64.b64encode(secrets.token_bytes(32)).decode(),
                        worker_enabled=False, bot_enabled=False, log_level="WARNING")
    ctx = build_context(settings, clock=clock, hub=InProcessHub(clock))
    await upgrade(ctx.engine)

    async with unit_of_work(ctx.sessions) as session:
        if await session.scalar(select(func.count()).select_from(Conversation)):
            raise SystemExit("the database already holds conversations: give --database-url a fresh database")
        open_at, close_at = args.service_hours.split("-")
        await save_service_hours(session, {"timezone": "Asia/Shanghai",
                                           "weekly": {d: [[open_at, close_at]] for d in
                                                      ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}})
    skills = parse_skills(args.skills)
    agents: list[Agent] = []
    for name, count, s, e in parse_shifts(args.shifts):
        for i in range(1, count + 1):
            agents.append(Agent(f"{name}{i}", name, s, e))
    async with unit_of_work(ctx.sessions) as session:
        for agent in agents:
            user = await create_staff(session, ctx.clock, agent.username, "sim-password-123",
                                      display_name=f"{agent.shift} {agent.username[-1]}")
            user.max_concurrent = args.max_concurrent
            user.skills = skills.get(agent.username, [])
            await session.flush()
            agent.staff_id, agent.user = user.id, user
    by_id = {a.staff_id: a for a in agents}
    unknown = set(skills) - {a.username for a in agents}
    if unknown:
        raise SystemExit(f"--skills names agents the shifts do not have: {', '.join(sorted(unknown))}")
    if not 0 <= args.recharge_share <= 1:
        raise SystemExit("--recharge-share is a share between 0 and 1")
    orders_by_kind = await kind_orders(ctx) if args.recharge_share > 0 else {}

    # --- the event heap ------------------------------------------------------------------------------------
    heap: list = []
    counter = iter(range(10**9))

    def push(at: datetime, kind: str, payload=None) -> None:
        heapq.heappush(heap, (at, ORDER[kind], next(counter), kind, payload))

    plan = arrivals(rng, curve, day, args.scale, args.complaint_share, args.vip_share, args.urgent_share)
    for n, (at, priority, vip) in enumerate(plan):
        kind = ("recharge" if kinds.random() < args.recharge_share else "card_key") if args.recharge_share > 0 else None
        push(at, "arrival", (n, priority, vip, kind))
    for offset in (-1, 0, 1, 2):  # yesterday's night shift runs into today; tomorrow's drains the backlog
        for agent in agents:
            s = local(day, agent.start, offset)
            e = local(day, agent.end, offset)
            if e <= s:
                e += timedelta(days=1)
            if e <= start:
                continue
            push(max(s, start), "shift_start", agent)
            push(e, "shift_end", agent)
    push(start, "sweep")
    for h in range(1, 25):
        push(start + timedelta(hours=h), "hour", h)

    recs: dict[int, Rec] = {}
    handle_mu = math.log(args.handle_mean * 60) - args.handle_sigma ** 2 / 2
    mc = random.Random(0)  # the generator's true mean handling time (with the first-reply floor), for what-ifs
    true_mean = statistics.fmean(max(mc.lognormvariate(handle_mu, args.handle_sigma),
                                     mc.uniform(args.reply_min, args.reply_max) + 10) for _ in range(200_000))
    ideal_sample = [max(mc.lognormvariate(handle_mu, args.handle_sigma),
                        mc.uniform(args.reply_min, args.reply_max) + 10) for _ in range(2000)]
    stats = {"passes": 0, "sweeps": 0, "stale_events": 0, "released": 0, "assignments": 0}
    online_names: set[str] = set()

    async def detect() -> None:
        """Assignments (and releases back to the queue) made by the pass, read from the conversation rows."""
        rows = await ctx_read(select(Conversation.id, Conversation.status, Conversation.assignee_id,
                                     Conversation.assigned_at).where(Conversation.status.in_(("queued", "open")))
                              .order_by(Conversation.id))
        for cid, status, assignee, assigned_at in rows:
            rec = recs.get(cid)
            if rec is None:
                continue
            if status == "open" and assignee is not None and assigned_at is not None and (
                    assignee != rec.assignee or assigned_at != rec.assigned_at):
                if rec.assignee is not None:  # released and taken by someone else within one pass
                    by_id[rec.assignee].holding.discard(cid)
                    rec.releases += 1
                    stats["released"] += 1
                rec.assignee, rec.assigned_at = assignee, assigned_at
                rec.assignments += 1
                stats["assignments"] += 1
                rec.first_assigned_at = rec.first_assigned_at or assigned_at
                by_id[assignee].holding.add(cid)
                reply = rng.uniform(args.reply_min, args.reply_max)
                handle = max(rng.lognormvariate(handle_mu, args.handle_sigma), reply + 10)
                rec.handle_s = handle
                push(assigned_at + timedelta(seconds=reply), "reply", (cid, assignee, assigned_at))
                push(assigned_at + timedelta(seconds=handle), "resolve", (cid, assignee, assigned_at))
            elif status == "queued" and rec.assignee is not None:
                by_id[rec.assignee].holding.discard(cid)
                rec.assignee, rec.assigned_at = None, None
                rec.releases += 1
                stats["released"] += 1

    async def ctx_read(statement):
        async with unit_of_work(ctx.sessions) as session:
            return (await session.execute(statement)).all()

    async def routing_pass() -> None:
        await loop.run_pass(ctx)
        stats["passes"] += 1
        await detect()

    async def arrive(n: int, priority: str, vip: bool, kind: str | None) -> None:
        async def work(session):
            customer = await identity.customer_for_device(session, ctx.clock, None)
            order = await session.get(Order, orders_by_kind[kind]) if kind else None
            opened = await conversations.open_conversation(session, ctx.clock, customer, order)
            conversation = opened.conversation
            posted = await messages.post_message(session, ctx.clock, settings, conversation,
                                                 Sender.customer(customer), "转人工")
            if vip:  # what zaima.service.policy.is_vip concludes for a big spender (no orders in this sim)
                conversation.vip = True
            events = opened.events + posted.events
            events += await queue.hand_off(session, ctx, conversation, priority=priority)
            view = await queue.queue_status(session, ctx, conversation)  # the widget's `ready` / notice
            what_if = await what_ifs(session, conversation.id) if (
                args.what_if and view["expected_wait_seconds"] is not None) else {}
            publish_after_commit(session, ctx.hub, events)
            return conversation.id, conversation.handoff_at, view, what_if

        cid, handoff_at, view, what_if = await ctx.transact(work)
        recs[cid] = Rec(cid, n, priority, vip, handoff_at, view["expected_wait_seconds"], view["position"],
                        view["waiting"], view["agents_online"], view["open_now"], what_if, kind=kind)

    async def what_ifs(session, cid: int) -> dict:
        """Analysis only (the measured prediction is queue_status above): the same real Snapshot.waits fed
        (a) the true mean handling time of the generator instead of the recent-sample mean, through the
        real queue.snapshot; (b) in addition the true remaining time of every busy slot (what a perfect
        view of the present would give: the rest of the error comes from the future - later arrivals in
        higher lanes, shift changes, the handling times of conversations not yet started); (c) with
        --skills, the real snapshot with the tickets' needs dropped (every slot taken as serving every
        ticket)."""
        now = ctx.clock.now()
        online = await queue.online_agents(ctx)
        snap = await queue.snapshot(session, online, now)
        out = {}
        if args.skills:  # (c) the same estimate blind to skills and languages: any slot takes any ticket
            blind = queue.Snapshot(now, snap.queued, slots=snap.slots, durations=snap.durations)
            out["ignoring_skills"] = blind.waits()[cid].total_seconds()
        snap.durations = [true_mean] * queue.MIN_HISTORY  # the generator's true mean, nothing else changed
        out["true_mean_handle"] = snap.waits()[cid].total_seconds()
        ends = []
        for agent in agents:
            if agent.username not in online:
                continue
            held = sorted(recs[c].assigned_at + timedelta(seconds=recs[c].handle_s) for c in agent.holding)
            ends += [max((end - now).total_seconds(), 0.0) for end in held[:args.max_concurrent]]
            ends += [0.0] * max(0, args.max_concurrent - len(held))
        heapq.heapify(ends)  # the true remaining time of every slot: a perfect view of the present
        for _ in range(snap.queued.index(cid)):
            heapq.heappush(ends, heapq.heappop(ends) + true_mean)
        out["known_present"] = ends[0] if ends else None
        out.update(await sampled_residuals(session, online, now, snap.queued, cid))
        return out

    async def sampled_residuals(session, online: set[str], now: datetime, queued: list[int], cid: int) -> dict:
        """The proposal (analysis only): the same inputs as queue.snapshot (the recent handling times, the
        online agents' open conversations and their assignment times), but each busy slot frees after a
        residual drawn from the recent handling times longer than what it has already taken (h - elapsed,
        h > elapsed), each later conversation takes a drawn handling time, and the answer is the median over
        PROPOSAL_RUNS such draws of when this conversation's slot frees. `ideal_distribution` does the same
        with 2,000 draws from the generator's own distribution instead of the last 50 handling times: the
        best a snapshot-based estimate can do here."""
        durations = [(r - a).total_seconds() for a, r in (await session.execute(
            select(Conversation.assigned_at, Conversation.resolved_at)
            .where(Conversation.resolved_at.is_not(None), Conversation.assigned_at.is_not(None),
                   Conversation.resolved_at >= now - timedelta(days=7),
                   Conversation.resolved_at > Conversation.assigned_at)
            .order_by(Conversation.resolved_at.desc()).limit(queue.HANDLE_SAMPLE))).all()]
        if len(durations) < 3:
            durations = [queue.DEFAULT_HANDLE.total_seconds()]
        mean = statistics.fmean(durations)
        elapsed: list[float | None] = []  # None: a free slot
        rows = (await session.execute(select(StaffUser.id, StaffUser.max_concurrent)
                                      .where(StaffUser.username.in_(online), StaffUser.active.is_(True)))).all()
        for staff_id, capacity in rows:
            started = sorted((await session.scalars(select(Conversation.assigned_at).where(
                Conversation.status == "open", Conversation.assignee_id == staff_id))).all())[:capacity]
            elapsed += [(now - a).total_seconds() for a in started] + [None] * max(0, capacity - len(started))
        if not elapsed:
            return {}
        index = queued.index(cid)
        out = {}
        for name, sample in (("sampled_residuals", durations), ("ideal_distribution", ideal_sample)):
            draw = random.Random(cid)
            floor = [mean / queue.MIN_REMAINING_SHARE]
            residuals = [[0.0] if a is None else [h - a for h in sample if h > a] or floor for a in elapsed]
            results = []
            for _ in range(PROPOSAL_RUNS):
                heap = [draw.choice(options) for options in residuals]
                heapq.heapify(heap)
                for _ in range(index):
                    heapq.heappush(heap, heapq.heappop(heap) + draw.choice(sample))
                results.append(heap[0])
            out[name] = statistics.median(results)
        return out

    def current(cid: int, assignee: int, token: datetime) -> Rec | None:
        rec = recs[cid]
        if rec.assignee != assignee or rec.assigned_at != token or rec.resolved_at is not None:
            stats["stale_events"] += 1  # released back to the queue since (its new owner has own events)
            return None
        return rec

    async def reply(cid: int, assignee: int, token: datetime) -> None:
        rec = current(cid, assignee, token)
        if rec is None:
            return
        await agent_reply(ctx, by_id[assignee].user, cid, "你好，我来帮你看一下这个订单。", False,
                          f"sim-{cid}-{rec.assignments}")
        rec.replied = True

    async def resolve(cid: int, assignee: int, token: datetime) -> None:
        rec = current(cid, assignee, token)
        if rec is None:
            return

        async def work(session):
            conversation = await conversations.get_conversation(session, cid)
            events = await tickets.change_status(session, ctx, conversation, "resolved")
            publish_after_commit(session, ctx.hub, events)

        await ctx.transact(work)
        rec.resolved_at = ctx.clock.now()
        by_id[assignee].holding.discard(cid)

    async def shift_start(agent: Agent) -> None:
        if agent.lease is None:
            agent.lease = await ctx.hub.hold_presence(AGENT, agent.username, "online", ttl_seconds=PRESENCE_TTL)
            forget_online_count(ctx.hub)
            online_names.add(agent.username)

    async def shift_end(agent: Agent) -> None:
        if agent.lease is not None:
            await agent.lease.release()
            agent.lease = None
            forget_online_count(ctx.hub)
            online_names.discard(agent.username)
            await release_conversations(ctx, agent.staff_id)  # as the console's "offline" does

    def all_done() -> bool:
        return len(recs) == len(plan) and all(r.resolved_at is not None for r in recs.values())

    while heap:
        at, _, _, kind, payload = heapq.heappop(heap)
        if at > clock.now():
            clock.set(at)
        if kind == "arrival":
            await arrive(*payload)
        elif kind == "reply":
            await reply(*payload)
        elif kind == "resolve":
            await resolve(*payload)
        elif kind == "shift_start":
            await shift_start(payload)
        elif kind == "shift_end":
            await shift_end(payload)
        elif kind == "sweep":
            stats["sweeps"] += 1
            if not all_done():
                push(at + timedelta(seconds=args.sweep_seconds), "sweep")
        elif kind == "hour":
            queued = sum(1 for r in recs.values() if r.first_assigned_at is None or (
                r.assignee is None and r.resolved_at is None))
            busy = sum(1 for r in recs.values() if r.assignee is not None and r.resolved_at is None)
            async with unit_of_work(ctx.sessions) as session:
                estimate = (await queue.mean_handling_time(session, at)).total_seconds()
            resolved = sum(1 for r in recs.values() if r.resolved_at)
            log(f"{(at.astimezone(TZ)).strftime('%H:%M')} hand-offs {len(recs):4d}  queued {queued:3d}  "
                f"held by agents {busy:3d}  online {','.join(sorted(online_names)) or '-':28s}  "
                f"resolved {resolved:4d}  handle est. {estimate:4.0f} s  passes {stats['passes']:5d}  "
                f"wall {time.perf_counter() - wall0:6.1f} s")
            continue  # a log line is not an event of the system
        await routing_pass()
        if all_done() and at >= day_end:
            break
        if clock.now() > day_end + timedelta(days=2):
            raise SystemExit("the backlog did not drain within two days after the simulated day")
    # --- results ---------------------------------------------------------------------------------------------
    async with unit_of_work(ctx.sessions) as session:
        sla_rows = (await session.execute(select(SlaEvent.conversation_id, SlaEvent.metric, SlaEvent.kind,
                                                 SlaEvent.late))).all()
        conv_rows = {cid: (handoff, first_reply) for cid, handoff, first_reply in (await session.execute(
            select(Conversation.id, Conversation.handoff_at, Conversation.first_human_reply_at))).all()}
        handled_mean = await queue.mean_handling_time(session, ctx.clock.now())
    await ctx.close()
    if not args.database_url:
        shutil.rmtree(workdir, ignore_errors=True)
    sim_seconds = time.perf_counter() - wall0
    log(f"true mean handling time of the generator: {true_mean:.0f} s")

    if args.dump_csv:
        import csv

        with open(args.dump_csv, "w", newline="") as f:
            out = csv.writer(f)
            keys = WHAT_IFS
            out.writerow(["seed", "conversation_id", "handoff_local", "priority", "vip", "position", "waiting",
                          "agents_online", "open_now", "predicted_s", "actual_wait_s", "releases",
                          *(f"what_if_{k}_s" for k in keys)])
            for r in sorted(recs.values(), key=lambda r: r.handoff_at):
                out.writerow([args.seed, r.cid, r.handoff_at.astimezone(TZ).isoformat(), r.priority, int(r.vip),
                              r.position, r.queue_len, r.agents_online, int(r.open_now),
                              "" if r.predicted is None else r.predicted,
                              round((r.first_assigned_at - r.handoff_at).total_seconds(), 1), r.releases,
                              *(round(r.what_if[k], 1) if k in r.what_if else "" for k in keys)])
    result = summarize(args, recs, sla_rows, conv_rows, stats, sim_seconds)
    result["details"]["mean_handling_time_at_end_s"] = round(handled_mean.total_seconds(), 1)
    result["details"]["true_mean_handling_time_s"] = round(true_mean, 1)
    return result


def summarize(args, recs: dict[int, Rec], sla_rows, conv_rows, stats, sim_seconds) -> dict:
    threshold = args.wait_threshold
    actual = {cid: (r.first_assigned_at - r.handoff_at).total_seconds() for cid, r in recs.items()}
    waited = [r for r in recs.values() if actual[r.cid] >= threshold]
    scored = [r for r in waited if r.predicted is not None]
    no_estimate = [r for r in recs.values() if r.predicted is None]
    errors = [abs(r.predicted - actual[r.cid]) / actual[r.cid] * 100 for r in scored]
    signed = [(r.predicted - actual[r.cid]) / actual[r.cid] * 100 for r in scored]
    at_once = [r for r in recs.values() if actual[r.cid] < threshold and r.predicted is not None]

    def pct(values, q):
        v = percentile(values, q)
        return None if v is None else round(v, 1)

    def breakdown(key) -> dict:
        groups: dict[str, list[Rec]] = {}
        for r in scored:
            groups.setdefault(key(r), []).append(r)
        out = {}
        for name, rows in sorted(groups.items()):
            errs = [abs(r.predicted - actual[r.cid]) / actual[r.cid] * 100 for r in rows]
            sgn = [(r.predicted - actual[r.cid]) / actual[r.cid] * 100 for r in rows]
            out[name] = {"n": len(rows), "median_abs_error_pct": pct(errs, 0.5),
                         "median_signed_error_pct": pct(sgn, 0.5),
                         "median_predicted_s": pct([r.predicted for r in rows], 0.5),
                         "median_actual_s": pct([actual[r.cid] for r in rows], 0.5)}
        return out

    # Overtaken: a conversation handed off later (into a higher lane) was assigned before this one.
    order = sorted(recs.values(), key=lambda r: r.handoff_at)
    overtaken = set()
    for i, r in enumerate(order):
        for later in order[i + 1:]:
            if later.handoff_at >= r.first_assigned_at:
                break
            if later.first_assigned_at < r.first_assigned_at:
                overtaken.add(r.cid)
                break

    what_if = {}
    for key in WHAT_IFS:
        rows = [r for r in scored if key in r.what_if]
        errs = [abs(r.what_if[key] - actual[r.cid]) / actual[r.cid] * 100 for r in rows]
        sgn = [(r.what_if[key] - actual[r.cid]) / actual[r.cid] * 100 for r in rows]
        what_if[key] = {"n": len(rows), "median_abs_error_pct": pct(errs, 0.5), "p90_abs_error_pct": pct(errs, 0.9),
                        "median_signed_error_pct": pct(sgn, 0.5)}

    per_metric: dict[str, dict] = {}
    for cid, metric, kind, late in sla_rows:
        if kind == "warning":
            continue
        state = per_metric.setdefault(metric, {}).setdefault(cid, "on_time")
        if kind == "breach" or late:
            per_metric[metric][cid] = "missed"
        else:
            per_metric[metric][cid] = state
    breaches = sum(1 for _, _, kind, _ in sla_rows if kind == "breach")

    def attainment(metric: str) -> float | None:
        seen = per_metric.get(metric, {})
        return round(sum(1 for s in seen.values() if s == "on_time") / len(seen), 4) if seen else None

    within = [cid for cid, (handoff, first_reply) in conv_rows.items()
              if handoff is not None and first_reply is not None and (first_reply - handoff).total_seconds() <= 60]
    handed = [cid for cid, (handoff, _) in conv_rows.items() if handoff is not None]
    all_waits = list(actual.values())
    return {
        "bench": "queue_sim",
        "database": "postgresql" if args.database_url else "sqlite",
        "seed": args.seed,
        "conversations": len(recs),
        "queued_with_wait": len(scored),
        "no_estimate": len(no_estimate),
        "expected_wait": {
            "median_abs_error_pct": pct(errors, 0.5),
            "p90_abs_error_pct": pct(errors, 0.9),
            "median_signed_error_pct": pct(signed, 0.5),
            "within_25pct": round(sum(1 for e in errors if e <= 25) / len(errors), 3) if errors else None,
            "target_median_abs_error_pct": 25,
            "definition": (f"over handed-off conversations whose actual wait (first assignment minus hand-off) "
                           f"was >= {threshold} s and whose prediction (queue_status expected_wait_seconds in the "
                           f"hand-off transaction) was not null: |predicted - actual| / actual, in %; nearest-rank "
                           f"percentiles. Null predictions (off hours, nobody online) are counted in no_estimate."),
        },
        "wait_seconds": {"p50": pct(all_waits, 0.5), "p90": pct(all_waits, 0.9),
                         "max": round(max(all_waits), 1) if all_waits else None},
        "sla": {"first_response_attainment": attainment("first_response"),
                "resolution_attainment": attainment("resolution"), "breaches": breaches},
        "answered_within_60s": round(len(within) / len(handed), 4) if handed else None,
        "sim_seconds": round(sim_seconds, 1),
        "details": {
            "waited_without_estimate": sum(1 for r in waited if r.predicted is None),
            "assigned_at_once": len(at_once),
            "assigned_at_once_but_predicted_ge_60s": sum(1 for r in at_once if r.predicted >= 60),
            "overtaken_share_of_scored": round(sum(1 for r in scored if r.cid in overtaken) / len(scored), 3)
            if scored else None,
            "releases_at_shift_end": stats["released"],
            "routing_passes": stats["passes"],
            "what_if": what_if,
            "by_lane": breakdown(lambda r: "vip" if r.vip else r.priority),
            "by_hour": breakdown(lambda r: f"{r.handoff_at.astimezone(TZ).hour:02d}"),
            "by_overtaken": breakdown(lambda r: "overtaken" if r.cid in overtaken else "not_overtaken"),
            "by_position": breakdown(lambda r: "1" if r.position == 1 else "2-3" if r.position <= 3
                                     else "4-8" if r.position <= 8 else "9+"),
        },
    }


def pool(paths: list[str], threshold: float) -> dict:
    """Pooled expected-wait errors over the --dump-csv files of several runs (one JSON object)."""
    import csv

    rows = [row for path in paths for row in csv.DictReader(open(path, newline=""))]
    scored = [r for r in rows if r["predicted_s"] != "" and float(r["actual_wait_s"]) >= threshold]

    def errors(key: str, keep=lambda r: True) -> dict:
        chosen = [r for r in scored if r.get(key, "") != "" and keep(r)]  # older CSVs lack newer what-ifs
        rel = [(float(r[key]) - float(r["actual_wait_s"])) / float(r["actual_wait_s"]) * 100 for r in chosen]
        absolute = [abs(e) for e in rel]
        return {"n": len(chosen), "median_abs_error_pct": percentile(absolute, 0.5),
                "p90_abs_error_pct": percentile(absolute, 0.9), "median_signed_error_pct": percentile(rel, 0.5)}

    def rounded(d: dict) -> dict:
        return {k: round(v, 1) if isinstance(v, float) else v for k, v in d.items()}

    keys = WHAT_IFS
    positions = {"1": (1, 1), "2-3": (2, 3), "4-8": (4, 8), "9+": (9, 10**9)}
    waits = {"30-60": (30, 60), "60-120": (60, 120), "120-300": (120, 300), "300-600": (300, 600),
             "600+": (600, 10**9)}
    return {
        "runs": len(paths), "seeds": sorted({int(r["seed"]) for r in rows}), "conversations": len(rows),
        "queued_with_wait": len(scored), "no_estimate": sum(1 for r in rows if r["predicted_s"] == ""),
        "expected_wait": rounded(errors("predicted_s")),
        "what_if": {k: rounded(errors(f"what_if_{k}_s")) for k in keys},
        "by_position": {name: rounded(errors("predicted_s", lambda r, lo=lo, hi=hi: lo <= int(r["position"]) <= hi))
                        for name, (lo, hi) in positions.items()},
        "by_actual_wait_s": {name: rounded(errors("predicted_s", lambda r, lo=lo, hi=hi:
                                                  lo <= float(r["actual_wait_s"]) < hi))
                             for name, (lo, hi) in waits.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--date", default="2026-11-25", help="the simulated local date (Asia/Shanghai)")
    parser.add_argument("--arrivals", default=DEFAULT_CURVE, help="24 hand-off rates per local hour 00..23")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every hourly rate")
    parser.add_argument("--shifts", default=DEFAULT_SHIFTS,
                        help="name:count:HH:MM-HH:MM,... (an end not after the start runs past midnight)")
    parser.add_argument("--max-concurrent", type=int, default=3)
    parser.add_argument("--handle-mean", type=float, default=7.0,
                        help="mean handling time in minutes, assignment to resolve (lognormal)")
    parser.add_argument("--handle-sigma", type=float, default=0.6, help="sigma of the lognormal (CV ≈ 0.66)")
    parser.add_argument("--reply-min", type=float, default=15.0, help="first reply: seconds after assignment, min")
    parser.add_argument("--reply-max", type=float, default=60.0)
    parser.add_argument("--service-hours", default="09:00-02:00", help="every day; an end before the start "
                                                                        "runs past midnight")
    parser.add_argument("--complaint-share", type=float, default=0.10, help="priority high")
    parser.add_argument("--urgent-share", type=float, default=0.02, help="priority urgent")
    parser.add_argument("--vip-share", type=float, default=0.05)
    parser.add_argument("--recharge-share", type=float, default=0.0,
                        help="share of tickets about a 直充 (recharge) order; the rest about a card-key order "
                             "(0: tickets carry no order, as in the default day)")
    parser.add_argument("--skills", default="", help="agent=kind[+kind],... product kinds an agent takes, e.g. "
                                                     "morning1=recharge,evening1=recharge (others: every kind)")
    parser.add_argument("--sweep-seconds", type=float, default=60.0,
                        help="the service loop's timer: an extra pass this often (simulated)")
    parser.add_argument("--wait-threshold", type=float, default=WAIT_THRESHOLD)
    parser.add_argument("--no-what-if", dest="what_if", action="store_false",
                        help="skip the analysis estimators (details.what_if); the measured numbers do not change")
    parser.add_argument("--dump-csv", default="", help="write one row per hand-off (prediction, actual wait, "
                                                       "what-ifs) to this file, e.g. to pool several seeds")
    parser.add_argument("--database-url", default="", help="a fresh database (migrated here); default: SQLite temp")
    parser.add_argument("--pool", nargs="+", metavar="CSV", help="do not simulate: pool the --dump-csv files of "
                                                                  "earlier runs and print their expected-wait errors")
    args = parser.parse_args()
    if args.pool:
        print(json.dumps(pool(args.pool, args.wait_threshold), ensure_ascii=False))
        return
    configure_quiet_logging()
    result = asyncio.run(simulate(args))
    ew = result["expected_wait"]
    log(f"{result['conversations']} hand-offs; scored {result['queued_with_wait']}, no estimate "
        f"{result['no_estimate']}; median |error| {ew['median_abs_error_pct']} %, p90 {ew['p90_abs_error_pct']} %, "
        f"median signed {ew['median_signed_error_pct']} %; waits p50/p90/max {result['wait_seconds']}; "
        f"SLA {result['sla']}; answered ≤ 60 s {result['answered_within_60s']}; {result['sim_seconds']} s wall")
    for name in ("what_if", "by_lane", "by_position", "by_overtaken", "by_hour"):
        log(f"{name}: {json.dumps(result['details'][name], ensure_ascii=False)}")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
