"""The operator's service settings: SLA targets by priority (tighter for VIPs) and the VIP rules.

Both live in `store_settings` as JSON, validated on save, merged over the defaults on load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.core.errors import ValidationFailed
from zaima.models import Order
from zaima.models.conversations import PRIORITIES
from zaima.store.settings import read_setting, write_setting

SLA_KEY = "sla"
VIP_KEY = "vip_rules"
METRICS = ("first_response", "next_response", "resolution")
# Orders that count as spending: paid, whatever happened to delivery (refunds are subtracted).
SPENDING_STATES = ("paid", "delivering", "delivered", "awaiting_stock", "delivery_failed", "partially_refunded")


RANKS = {"low": 0, "normal": 1, "high": 2, "urgent": 3}
VIP_RANK = 2  # a VIP waits in the complaint lane at least


def rank_of(priority: str, vip: bool) -> int:
    """The ticket's lane in the queue: urgent > high (complaints, VIPs) > normal > low."""
    rank = RANKS.get(priority, 1)
    return max(rank, VIP_RANK) if vip else rank


@dataclass(frozen=True)
class Targets:
    """Minutes for each metric."""

    first_response: int
    next_response: int
    resolution: int

    def get(self, metric: str) -> timedelta:
        return timedelta(minutes=getattr(self, metric))


DEFAULT_TARGETS = {
    "urgent": Targets(10, 10, 4 * 60),
    "high": Targets(15, 20, 8 * 60),
    "normal": Targets(30, 30, 24 * 60),
    "low": Targets(120, 120, 48 * 60),
}
DEFAULT_VIP_TARGETS = Targets(5, 10, 4 * 60)


@dataclass(frozen=True)
class SlaPolicy:
    business_hours: bool = True  # count targets in service hours (else around the clock)
    warn_percent: int = 80  # the assignee is warned when this share of a target has passed
    targets: dict[str, Targets] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    vip: Targets = DEFAULT_VIP_TARGETS

    def targets_for(self, priority: str, vip: bool) -> tuple[str, Targets]:
        """The policy name and targets of a ticket: VIP targets are never looser than the priority's."""
        base = self.targets.get(priority, self.targets["normal"])
        if not vip:
            return priority, base
        return f"vip-{priority}", Targets(*(min(getattr(base, m), getattr(self.vip, m)) for m in METRICS))

    def to_dict(self) -> dict:
        return {"business_hours": self.business_hours, "warn_percent": self.warn_percent,
                "targets": {p: asdict(t) for p, t in self.targets.items()}, "vip": asdict(self.vip)}


def _targets(value, where: str, default: Targets) -> Targets:
    if value is None:
        return default
    if not isinstance(value, dict) or set(value) - set(METRICS):
        raise ValidationFailed(f"{where} 只能包含 first_response、next_response、resolution",
                               f"{where} may only hold first_response, next_response, resolution", field=where)
    minutes = {}
    for metric in METRICS:
        raw = value.get(metric, getattr(default, metric))
        if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw <= 60 * 24 * 60:
            raise ValidationFailed(f"{where}.{metric} 必须是 1 到 86400 之间的整数（分钟）",
                                   f"{where}.{metric} must be a whole number of minutes from 1 to 86400",
                                   field=f"{where}.{metric}")
        minutes[metric] = raw
    return Targets(**minutes)


def parse_sla(value: dict | None) -> SlaPolicy:
    value = value or {}
    if not isinstance(value, dict):
        raise ValidationFailed("SLA 设置格式不正确", "SLA settings must be an object")
    business_hours = value.get("business_hours", True)
    warn = value.get("warn_percent", 80)
    if not isinstance(business_hours, bool):
        raise ValidationFailed("business_hours 必须是 true 或 false", "business_hours must be true or false",
                               field="business_hours")
    if not isinstance(warn, int) or isinstance(warn, bool) or not 10 <= warn <= 99:
        raise ValidationFailed("预警比例必须在 10 到 99 之间", "warn_percent must be from 10 to 99", field="warn_percent")
    raw_targets = value.get("targets") or {}
    if not isinstance(raw_targets, dict) or set(raw_targets) - set(PRIORITIES):
        raise ValidationFailed("targets 的键必须是 low、normal、high、urgent", "targets keys must be priorities",
                               field="targets")
    targets = {p: _targets(raw_targets.get(p), f"targets.{p}", DEFAULT_TARGETS[p]) for p in PRIORITIES}
    return SlaPolicy(business_hours, warn, targets, _targets(value.get("vip"), "vip", DEFAULT_VIP_TARGETS))


@dataclass(frozen=True)
class VipRules:
    enabled: bool = True
    min_total_spent_fen: int = 50_000  # ¥500 spent in total (net of refunds) …
    min_orders_30d: int = 5  # … or this many paid orders in the last 30 days

    def to_dict(self) -> dict:
        return asdict(self)


def parse_vip(value: dict | None) -> VipRules:
    value = {**asdict(VipRules()), **(value or {})}
    if set(value) - set(asdict(VipRules())):
        raise ValidationFailed("VIP 规则只能包含 enabled、min_total_spent_fen、min_orders_30d",
                               "VIP rules may only hold enabled, min_total_spent_fen, min_orders_30d")
    if not isinstance(value["enabled"], bool):
        raise ValidationFailed("enabled 必须是 true 或 false", "enabled must be true or false", field="enabled")
    for name in ("min_total_spent_fen", "min_orders_30d"):
        if not isinstance(value[name], int) or isinstance(value[name], bool) or value[name] < 0:
            raise ValidationFailed(f"{name} 必须是不小于 0 的整数", f"{name} must be a whole number ≥ 0", field=name)
    return VipRules(**value)


async def load_sla(session: AsyncSession) -> SlaPolicy:
    return parse_sla(await read_setting(session, SLA_KEY))


async def save_sla(session: AsyncSession, value: dict) -> SlaPolicy:
    policy = parse_sla({**(await load_sla(session)).to_dict(), **value})
    await write_setting(session, SLA_KEY, policy.to_dict())
    return policy


async def load_vip(session: AsyncSession) -> VipRules:
    return parse_vip(await read_setting(session, VIP_KEY))


async def save_vip(session: AsyncSession, value: dict) -> VipRules:
    rules = parse_vip({**(await load_vip(session)).to_dict(), **value})
    await write_setting(session, VIP_KEY, rules.to_dict())
    return rules


async def is_vip(session: AsyncSession, rules: VipRules, contact: str | None, now) -> bool:
    """Whether the buyer behind `contact` (an order's e-mail or phone) meets a VIP rule."""
    if not rules.enabled or not contact:
        return False
    spent, recent = (await session.execute(
        select(func.coalesce(func.sum(Order.amount_fen - Order.refunded_fen), 0),
               func.count().filter(Order.paid_at >= now - timedelta(days=30)))
        .where(Order.contact == contact, Order.status.in_(SPENDING_STATES)))).one()
    return (rules.min_total_spent_fen > 0 and spent >= rules.min_total_spent_fen) or (
        rules.min_orders_30d > 0 and recent >= rules.min_orders_30d)
