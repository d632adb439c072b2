"""SLA: each ticket carries the due times of its running targets, counted in service hours (or around
the clock), paused while waiting on the customer; a sweep warns the assignee at 80 % and escalates a
breach. Every warning, breach and hit is an `SlaEvent` row, the raw material of the reports.

Targets and when they run:
- first response  from the hand-off (bot time excluded) to the first public reply of a person.
- next response   from a customer message that waits for a person (after the first reply) to the next
                  public reply of a person.
- resolution      from the hand-off to `resolved`; paused while `pending_customer` (the due time moves
                  by the paused time), restarted when the ticket is reopened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.conversations import events as ev
from zaima.conversations.events import Event
from zaima.models import Conversation, SlaEvent
from zaima.service.calendar import BusinessCalendar, load_calendar
from zaima.service.policy import SlaPolicy, VipRules, load_sla, load_vip, rank_of

DUE_FIELDS = {"first_response": "first_response_due_at", "next_response": "next_response_due_at",
              "resolution": "resolution_due_at"}
ESCALATE = {"low": "normal", "normal": "high", "high": "urgent", "urgent": "urgent"}
HUMAN_STATUSES = ("queued", "open", "pending_customer")


@dataclass(frozen=True)
class ServiceConfig:
    """What the queue and the SLA need from the operator's settings, loaded once per unit of work."""

    calendar: BusinessCalendar
    sla: SlaPolicy
    vip: VipRules

    @property
    def sla_calendar(self) -> BusinessCalendar:
        return self.calendar if self.sla.business_hours else BusinessCalendar.around_the_clock(
            self.calendar.to_dict().get("timezone", "Asia/Shanghai"))

    def due(self, start: datetime, target: timedelta) -> datetime:
        return self.sla_calendar.add(start, target)

    def remaining(self, now: datetime, due: datetime) -> timedelta:
        return self.sla_calendar.elapsed(now, due)


async def load_config(session: AsyncSession) -> ServiceConfig:
    return ServiceConfig(await load_calendar(session), await load_sla(session), await load_vip(session))


def _targets(cfg: ServiceConfig, conversation: Conversation):
    name, targets = cfg.sla.targets_for(conversation.priority, conversation.vip)
    conversation.sla_policy = name
    return targets


def _forget(conversation: Conversation, metric: str) -> None:
    setattr(conversation, DUE_FIELDS[metric], None)
    conversation.sla_warned = [m for m in conversation.sla_warned or [] if m != metric]
    conversation.sla_breached = [m for m in conversation.sla_breached or [] if m != metric]


def _record(session: AsyncSession, conversation: Conversation, metric: str, kind: str, due: datetime,
            now: datetime) -> None:
    session.add(SlaEvent(conversation_id=conversation.id, metric=metric, kind=kind, due_at=due, at=now,
                         late=kind == "met" and now > due, priority=conversation.priority, vip=conversation.vip,
                         assignee_id=conversation.assignee_id))


def start(cfg: ServiceConfig, conversation: Conversation, now: datetime) -> None:
    """The ticket reached people (hand-off, or reopened into the queue): start its targets."""
    targets = _targets(cfg, conversation)
    if conversation.first_human_reply_at is None and conversation.first_response_due_at is None:
        conversation.first_response_due_at = cfg.due(conversation.handoff_at or now, targets.get("first_response"))
    if conversation.resolution_due_at is None:
        conversation.resolution_due_at = cfg.due(now, targets.get("resolution"))
    conversation.sla_paused_at = None


def retarget(cfg: ServiceConfig, conversation: Conversation) -> None:
    """Priority or VIP changed: recompute the running, not yet breached targets from their starts."""
    targets = _targets(cfg, conversation)
    breached = set(conversation.sla_breached or [])
    starts = {"first_response": conversation.handoff_at, "next_response": conversation.awaiting_reply_since}
    for metric, start_at in starts.items():
        if getattr(conversation, DUE_FIELDS[metric]) is not None and start_at is not None and metric not in breached:
            setattr(conversation, DUE_FIELDS[metric], cfg.due(start_at, targets.get(metric)))


def on_human_reply(session: AsyncSession, conversation: Conversation, now: datetime) -> None:
    """A person answered the customer in public: the response targets are met (late or not)."""
    for metric in ("first_response", "next_response"):
        due = getattr(conversation, DUE_FIELDS[metric])
        if due is not None:
            _record(session, conversation, metric, "met", due, now)
            _forget(conversation, metric)
    conversation.awaiting_reply_since = None


def on_customer_message(cfg: ServiceConfig, conversation: Conversation, now: datetime) -> None:
    """The customer wrote to a ticket a person already answered: a next response is now due."""
    if conversation.status not in ("queued", "open") or conversation.first_human_reply_at is None:
        return
    if conversation.awaiting_reply_since is None:
        conversation.awaiting_reply_since = now
        conversation.next_response_due_at = cfg.due(now, _targets(cfg, conversation).get("next_response"))


def on_status(session: AsyncSession, cfg: ServiceConfig, conversation: Conversation, old: str, new: str,
              now: datetime) -> None:
    """Keep the targets in step with a status change (called after the change)."""
    if new == "pending_customer" and conversation.sla_paused_at is None:
        conversation.sla_paused_at = now
    elif old == "pending_customer" and conversation.sla_paused_at is not None:
        due, paused = conversation.resolution_due_at, conversation.sla_paused_at
        if due is not None and due > paused and "resolution" not in (conversation.sla_breached or []):
            conversation.resolution_due_at = cfg.due(now, cfg.remaining(paused, due))
        conversation.sla_paused_at = None
    if new == "resolved":
        due = conversation.resolution_due_at
        if due is not None:
            _record(session, conversation, "resolution", "met", due, now)
        for metric in DUE_FIELDS:
            _forget(conversation, metric)
        conversation.awaiting_reply_since = None
    elif new == "closed":
        for metric in DUE_FIELDS:
            _forget(conversation, metric)
        conversation.awaiting_reply_since = None
        conversation.sla_paused_at = None
    elif old in ("resolved", "bot") and new in ("queued", "open"):
        start(cfg, conversation, now)


@dataclass(frozen=True)
class Alert:
    """A warning or breach to announce: to the assignee (warning) or the supervisors (breach)."""

    conversation_id: int
    ticket_no: str
    metric: str
    kind: str  # warning | breach
    due_at: datetime
    assignee_id: int | None

    def event(self) -> Event:
        return Event(ev.INBOX_TOPIC, {"type": "sla", "kind": self.kind, "metric": self.metric,
                                      "conversation_id": self.conversation_id, "ticket_no": self.ticket_no,
                                      "due_at": self.due_at.isoformat(), "assignee_id": self.assignee_id})


async def _running(session: AsyncSession, batch: int = 500):
    """Every ticket with a running target, in batches (an unbounded backlog is still checked whole)."""
    last_id = 0
    while True:
        rows = list(await session.scalars(
            select(Conversation)
            .where(Conversation.status.in_(HUMAN_STATUSES), Conversation.id > last_id)
            .where(or_(*(getattr(Conversation, f).is_not(None) for f in DUE_FIELDS.values())))
            .order_by(Conversation.id).limit(batch)))
        for conversation in rows:
            yield conversation
        if len(rows) < batch:
            return
        last_id = rows[-1].id


async def check(session: AsyncSession, cfg: ServiceConfig, now: datetime) -> list[Alert]:
    """Warn at `warn_percent` of a target and escalate a breach (raise the priority — and the queue lane
    of a ticket still waiting; the ticket becomes reassignable by any agent). Each alert happens once per
    target; paused resolution targets wait."""
    alerts: list[Alert] = []
    async for conversation in _running(session):
        targets = _targets(cfg, conversation)
        for metric, field in DUE_FIELDS.items():
            due = getattr(conversation, field)
            if due is None or (metric == "resolution" and conversation.sla_paused_at is not None):
                continue
            if metric in (conversation.sla_breached or []):
                continue
            if now > due:
                _record(session, conversation, metric, "breach", due, now)
                conversation.sla_breached = [*(conversation.sla_breached or []), metric]
                conversation.priority = ESCALATE[conversation.priority]
                conversation.queue_rank = max(conversation.queue_rank, rank_of(conversation.priority,
                                                                              conversation.vip))
                conversation.updated_at = now
                alerts.append(Alert(conversation.id, conversation.ticket_no, metric, "breach", due,
                                    conversation.assignee_id))
            elif metric not in (conversation.sla_warned or []):
                left = cfg.remaining(now, due)
                if left * 100 <= targets.get(metric) * (100 - cfg.sla.warn_percent):
                    _record(session, conversation, metric, "warning", due, now)
                    conversation.sla_warned = [*(conversation.sla_warned or []), metric]
                    alerts.append(Alert(conversation.id, conversation.ticket_no, metric, "warning", due,
                                        conversation.assignee_id))
    await session.flush()
    return alerts
