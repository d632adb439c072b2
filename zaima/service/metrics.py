"""Service-level metrics over a window, as defined in docs/metrics.md (the status page and reports use
these, so there is one definition of each number)."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.models import Conversation, CsatRating, SlaEvent
from zaima.service.calendar import BusinessCalendar
from zaima.service.policy import METRICS


def _median_seconds(values: list[timedelta]) -> int | None:
    return round(statistics.median(v.total_seconds() for v in values)) if values else None


def _durations(rows, calendar: BusinessCalendar) -> dict:
    wall = [end - start for start, end in rows]
    business = [calendar.elapsed(start, end) for start, end in rows]
    return {"count": len(rows), "median_seconds": _median_seconds(wall),
            "median_business_seconds": _median_seconds(business)}


async def service_metrics(session: AsyncSession, calendar: BusinessCalendar, since: datetime,
                          until: datetime) -> dict:
    """First response, resolution, resolution rate, satisfaction and SLA attainment for [since, until)."""
    first = (await session.execute(
        select(Conversation.handoff_at, Conversation.first_human_reply_at)
        .where(Conversation.handoff_at >= since, Conversation.handoff_at < until,
               Conversation.first_human_reply_at.is_not(None),
               Conversation.first_human_reply_at >= Conversation.handoff_at))).all()
    resolved = (await session.execute(
        select(Conversation.created_at, Conversation.resolved_at)
        .where(Conversation.resolved_at >= since, Conversation.resolved_at < until))).all()
    handed_off, handed_off_resolved = (await session.execute(
        select(func.count(), func.count().filter(Conversation.resolved_at.is_not(None)))
        .where(Conversation.handoff_at >= since, Conversation.handoff_at < until))).one()
    rated = (await session.execute(select(CsatRating.rating, CsatRating.agent_id)
                                   .where(CsatRating.created_at >= since, CsatRating.created_at < until))).all()
    ratings = [rating for rating, _ in rated]
    by_agent: dict[int, list[int]] = {}
    for rating, agent_id in rated:
        if agent_id is not None:
            by_agent.setdefault(agent_id, []).append(rating)
    within_60 = sum(1 for start, end in first if end - start <= timedelta(seconds=60))
    sla_rows = (await session.execute(
        select(SlaEvent.metric, SlaEvent.kind, func.count())
        .where(and_(SlaEvent.at >= since, SlaEvent.at < until))
        .group_by(SlaEvent.metric, SlaEvent.kind, SlaEvent.late)
        .add_columns(SlaEvent.late))).all()
    attainment = {}
    for metric in METRICS:
        on_time = sum(n for m, kind, n, late in sla_rows if m == metric and kind == "met" and not late)
        missed = sum(n for m, kind, n, late in sla_rows if m == metric and kind == "breach")
        attainment[metric] = round(on_time / (on_time + missed), 4) if on_time + missed else None
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "handed_off": handed_off,
        "first_response": {**_durations(first, calendar),
                           "within_60s_share": round(within_60 / len(first), 4) if first else None},
        "resolution": _durations(resolved, calendar),
        "resolution_rate": round(handed_off_resolved / handed_off, 4) if handed_off else None,
        "csat": {"count": len(ratings),
                 "average": round(sum(ratings) / len(ratings), 2) if ratings else None,
                 "satisfied_share": round(sum(1 for r in ratings if r >= 4) / len(ratings), 4) if ratings else None,
                 "by_agent": {str(agent): {"count": len(values), "average": round(sum(values) / len(values), 2)}
                              for agent, values in sorted(by_agent.items())}},
        "sla_attainment": attainment,
    }
