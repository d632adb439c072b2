"""Staff quarantine a reported key through the admin API: a sold key gets an entry on its order's
timeline, unsold stock is simply taken out of sale, and repeating it changes nothing."""

from __future__ import annotations

from sqlalchemy import select

from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima.db import unit_of_work
from zaima.models import CardKey, OrderEvent
from zaima.staff import create_staff
from zaima.store import payments, stock

AGENT = ("agent-q", "agent-password-q")


async def test_quarantine_sold_and_unsold_keys(ctx, client):
    product = await make_product(ctx, sku="q-card")
    await add_stock(ctx, product, ["Q-KEY-0001", "Q-KEY-0002"])
    order = await make_order(ctx, product)
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    async with unit_of_work(ctx.sessions) as session:
        await create_staff(session, ctx.clock, AGENT[0], AGENT[1], role="agent")
        [sold] = await stock.keys_of_order(session, order.id)
        spare = await session.scalar(select(CardKey.id).where(CardKey.status == "available"))
    for _ in range(2):  # the second time is a no-op
        r = await client.post(f"/api/v1/admin/keys/{sold.id}/quarantine", json={"reason": "客户反馈已被使用"},
                              auth=AGENT)
        assert r.status_code == 200 and r.json()["status"] == "quarantined"
    r = await client.post(f"/api/v1/admin/keys/{spare}/quarantine", json={"reason": "批次有问题"}, auth=AGENT)
    assert r.status_code == 200 and r.json()["status"] == "quarantined"
    async with unit_of_work(ctx.sessions) as session:
        events = list(await session.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id,
                                                                     OrderEvent.kind == "key_quarantined")))
        assert await stock.available_count(session, product.id) == 0
    assert len(events) == 1 and events[0].actor_id == AGENT[0] and events[0].reason == "客户反馈已被使用"
