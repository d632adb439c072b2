"""After-sales actions on a delivered order, shared by agents and the bot: quarantine a reported key,
replace it from stock. Each writes the order's audit log with its actor (and conversation)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from zaima import sql
from zaima.core.audit import Actor
from zaima.models import CardKey, OrderEvent
from zaima.store import stock, timeline


@dataclass
class Replacement:
    old_key_id: int
    new_key_id: int | None  # None: no stock for a replacement (the old key is quarantined anyway)


_QUARANTINE = sql.Prepared(update(CardKey).where(CardKey.id == bindparam("key_id"),
                                                  CardKey.status != "quarantined", CardKey.status != "void")
                           .values(status="quarantined", status_reason=bindparam("reason")))


async def quarantine(session: AsyncSession, order, key: CardKey | stock.CardKeyRow, actor: Actor, reason: str,
                     now) -> None:
    """Mark a key reported invalid (compare-and-set: a key already quarantined or void stays as it is)."""
    if not await sql.execute(session, _QUARANTINE, key_id=key.id, reason=reason[:300]):
        return
    sql.assign(key, status="quarantined", status_reason=reason[:300])
    await timeline.record(session, order, "key_quarantined", actor, now, reason=reason, key_id=key.id)


async def times_replaced(session: AsyncSession, order_id: int) -> int:
    return await session.scalar(select(func.count()).select_from(OrderEvent).where(
        OrderEvent.order_id == order_id, OrderEvent.kind == "key_replaced")) or 0


async def replace_key(session: AsyncSession, order, key: CardKey | stock.CardKeyRow, actor: Actor, reason: str,
                      now) -> Replacement:
    """Quarantine `key` (sold to `order`) and sell the order one fresh key from stock, compare-and-set
    like any sale. Without stock the old key stays quarantined and new_key_id is None."""
    if key.order_id != order.id:
        raise ValueError("the key does not belong to the order")
    await quarantine(session, order, key, actor, reason, now)
    before = {k.id for k in await stock.keys_of_order(session, order.id)}
    got = await stock.sell_keys(session, order.product_id, order.id, 1, now)
    if not got:
        return Replacement(key.id, None)
    new_id = next(k.id for k in await stock.keys_of_order(session, order.id) if k.id not in before)
    await timeline.record(session, order, "key_replaced", actor, now, reason=reason, old_key_id=key.id,
                          new_key_id=new_id)
    return Replacement(key.id, new_id)
