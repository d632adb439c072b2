"""The service loop: route the queue, release absent agents' waiting conversations, check SLA targets
and refresh every queued customer's position. Runs on every node (one routing pass at a time across
nodes); woken at once by hand-offs, resolves and presence changes, and every few seconds regardless.
"""

from __future__ import annotations

import asyncio

import structlog

from zaima.conversations import conversations as convs
from zaima.models import Conversation
from zaima.realtime.publish import publish_after_commit
from zaima.service import queue, routing, sla

log = structlog.get_logger("zaima.service")


async def run_pass(ctx) -> None:
    """One pass, in one transaction; its events are published after it commits."""
    online = await queue.online_agents(ctx)

    async def work(session):
        cfg = await sla.load_config(session)
        events = await routing.release_absent(session, ctx, online)
        alerts = await sla.check(session, cfg, ctx.clock.now())
        events += [alert.event() for alert in alerts]
        for conversation_id in sorted({a.conversation_id for a in alerts if a.kind == "breach"}):
            # the priority went up: every console's copy of the ticket must hear of it
            conversation = await session.get(Conversation, conversation_id)
            events += await convs.changed_events(session, conversation, public=False)
        events += await routing.route(session, ctx, online)
        events += await queue.queue_events(session, ctx, cfg, online)
        publish_after_commit(session, ctx.hub, events)

    await ctx.transact(work)


async def service_loop(ctx, stop: asyncio.Event) -> None:
    log.info("service_loop_started")
    while not stop.is_set():
        ctx.service_wakeup.clear()
        try:
            await run_pass(ctx)
        except Exception as exc:  # noqa: BLE001 - the loop must outlive one bad pass
            log.error("service_pass_failed", error=repr(exc))
        try:
            await asyncio.wait_for(ctx.service_wakeup.wait(), timeout=ctx.settings.service_sweep_seconds)
        except TimeoutError:
            pass
    log.info("service_loop_stopped")
