"""The service loop: route the queue, release absent agents' waiting conversations, check SLA targets
and refresh every queued customer's position. Runs on every node (one routing pass at a time across
nodes); woken at once by hand-offs, resolves and presence changes, and every few seconds regardless.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from zaima.conversations import conversations as convs
from zaima.db import on_commit
from zaima.models import Conversation
from zaima.realtime.publish import publish_after_commit
from zaima.service import queue, routing, sla

log = structlog.get_logger("zaima.service")


def _moved(ctx, session, events: list) -> list:
    """The queue events whose view moved since this node last told the customer (positions are re-sent
    only when they change; the socket's `ready` frame gives the current view in any case). What was told
    is remembered only once the pass commits, so a retried pass tells again."""
    told: dict[int, tuple] = ctx.service_state.setdefault("told", {})
    fresh, updates = [], {}
    for event in events:
        view, cid = event.payload["queue"], event.payload["conversation_id"]
        wait = view["expected_wait_seconds"]
        key = (view["position"], view["waiting"], None if wait is None else wait // 60, view["agents_online"],
               view["open_now"], view["closing_soon"], view["reply_by"])
        if told.get(cid) != key:
            updates[cid] = key
            fresh.append(event)
    gone = set(told) - {event.payload["conversation_id"] for event in events}

    def remember() -> None:
        told.update(updates)
        for cid in gone:
            told.pop(cid, None)

    on_commit(session, remember)
    return fresh


async def run_pass(ctx, check_sla: bool = True) -> None:
    """One pass, in one transaction; its events are published after it commits. `check_sla=False` for
    the passes a hand-off or presence change asks for (the timer's passes check the targets)."""

    async def work(session):
        await routing.lock(session)  # first: one pass at a time, before any row is touched
        online = await queue.online_agents(ctx)  # read under the lock: an agent who just left takes nothing
        cfg = await sla.load_config(session)
        events = await routing.release_absent(session, ctx, online)
        alerts = await sla.check(session, cfg, ctx.clock.now()) if check_sla else []
        events += [alert.event() for alert in alerts]
        for conversation_id in sorted({a.conversation_id for a in alerts if a.kind == "breach"}):
            # the priority went up: every console's copy of the ticket must hear of it
            conversation = await session.get(Conversation, conversation_id)
            events += await convs.changed_events(session, conversation, public=False)
        events += await routing.route(session, ctx, online)
        events += _moved(ctx, session, await queue.queue_events(session, ctx, cfg, online))
        publish_after_commit(session, ctx.hub, events)

    await ctx.transact(work)


async def service_loop(ctx, stop: asyncio.Event) -> None:
    log.info("service_loop_started")
    sweep = ctx.settings.service_sweep_seconds
    checked = float("-inf")
    while not stop.is_set():
        ctx.service_wakeup.clear()
        due = time.monotonic() - checked >= sweep
        try:
            await run_pass(ctx, check_sla=due)
            if due:
                checked = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - the loop must outlive one bad pass
            log.error("service_pass_failed", error=repr(exc))
        try:
            await asyncio.wait_for(ctx.service_wakeup.wait(), timeout=sweep)
        except TimeoutError:
            pass
    log.info("service_loop_stopped")
