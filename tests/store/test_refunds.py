"""Refunds of what was not delivered, on SQLite and PostgreSQL: whole and partial, idempotent,
never more than the undelivered part, through the 易支付 gateway's refund API or by hand."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import free_port
from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima import jobs
from zaima.context import build_context
from zaima.core.audit import Actor
from zaima.core.errors import DomainError, ValidationFailed
from zaima.db import unit_of_work
from zaima.models import CardKey, DemoGatewayTrade, Job, Order, Refund
from zaima.staff import create_staff
from zaima.store import delivery, payments, stock, timeline
from zaima.store.api import checkout_links
from zaima.store.epay import EpayClient
from zaima.store.refunds import GATEWAY_CONNECT_RETRIES_SECONDS, NotRefundable, refund_undelivered

AGENT = Actor("agent", "xiaomei")
PRICE = 3000  # fen


async def paid_order(ctx, product, quantity: int = 1):
    order = await make_order(ctx, product, quantity)
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    return order


async def pay_through_gateway(server, ctx, order) -> None:
    """Open the trade at the demo gateway's cashier and pay it; the gateway notifies us over HTTP."""
    async with httpx.AsyncClient() as http:
        assert (await http.get(checkout_links(ctx, order, "测试")["pay_url"])).status_code == 200
        paid = await http.post(f"{server.url}/demo-gateway/test/pay", json={"out_trade_no": order.order_no})
        assert paid.json()["code"] == 1


async def refund(ctx, order, key: str, quantity: int | None = None, actor: Actor = AGENT):
    async def run(session):
        fresh = await session.get(Order, order.id)
        return await refund_undelivered(
            session, ctx, fresh, actor=actor, reason="客户申请退款", idempotency_key=key, quantity=quantity
        )

    return await ctx.transact(run)


async def snapshot(ctx, order):
    async with ctx.sessions() as session:
        fresh = await session.get(Order, order.id)
        refunds = list(
            await session.scalars(select(Refund).where(Refund.order_id == order.id).order_by(Refund.id))
        )
        events = await timeline.events_for(session, order.id)
        keys = list(
            await session.scalars(
                select(CardKey).where(CardKey.product_id == order.product_id).order_by(CardKey.id)
            )
        )
        refund_jobs = list(
            await session.scalars(select(Job).where(Job.kind == "gateway_refund").order_by(Job.id))
        )
        return fresh, refunds, events, keys, refund_jobs


async def gateway_trade(ctx, order) -> DemoGatewayTrade:
    async with ctx.sessions() as session:
        return await session.scalar(
            select(DemoGatewayTrade).where(DemoGatewayTrade.out_trade_no == order.order_no)
        )


# Whole and partial refunds ------------------------------------------------------------------------


async def test_refund_of_an_order_awaiting_stock_refunds_it_and_releases_its_reserved_keys(ctx, clock):
    product = await make_product(ctx, price_fen=PRICE)
    order = await paid_order(ctx, product, quantity=2)
    assert (await snapshot(ctx, order))[0].status == "awaiting_stock"
    # Keys held for the waiting order (stock that arrived and was set aside for it).
    await add_stock(ctx, product, ["HELD-0001"])
    async with unit_of_work(ctx.sessions) as session:
        assert await stock.reserve_keys(session, product.id, order.id, 1, clock.now()) == 1

    made = await refund(ctx, order, "refund-awaiting-1")
    fresh, refunds, events, keys, refund_jobs = await snapshot(ctx, order)
    assert fresh.status == "refunded"
    assert fresh.refunded_quantity == 2 and fresh.refunded_fen == 2 * PRICE and fresh.delivered_quantity == 0
    assert [(r.id, r.quantity, r.amount_fen, r.status) for r in refunds] == [
        (made.id, 2, 2 * PRICE, "processing")
    ]
    assert [(k.status, k.order_id, k.reserved_at) for k in keys] == [("available", None, None)]
    [entry] = [e for e in events if e.kind == "refunded"]
    assert entry.actor_kind == "agent" and entry.actor_id == "xiaomei" and entry.reason == "客户申请退款"
    assert entry.data == {"amount": 2 * PRICE, "quantity": 2, "refund_id": made.id}
    assert [j.payload for j in refund_jobs] == [{"refund_id": made.id}]

    # Stock arriving later is not sent to a refunded order.
    async with unit_of_work(ctx.sessions) as session:
        assert await delivery.fulfil_backorders(session, ctx, product.id) == 0
    assert (await snapshot(ctx, order))[0].delivered_quantity == 0


async def test_the_same_idempotency_key_twice_is_one_refund(ctx):
    product = await make_product(ctx, price_fen=PRICE)
    order = await paid_order(ctx, product, quantity=2)
    first = await refund(ctx, order, "double-click-0001", quantity=1)
    second = await refund(ctx, order, "double-click-0001", quantity=1)
    assert first.id == second.id
    fresh, refunds, events, _, refund_jobs = await snapshot(ctx, order)
    assert len(refunds) == 1 and len(refund_jobs) == 1
    assert fresh.refunded_quantity == 1 and fresh.refunded_fen == PRICE
    assert [e.kind for e in events].count("refunded") == 1

    other = await paid_order(ctx, product)
    with pytest.raises(ValidationFailed) as info:
        await refund(ctx, other, "double-click-0001")
    assert info.value.message_zh == "幂等键已被其他订单使用"


async def test_partial_refund_of_the_undelivered_part_of_a_quantity_3_order(ctx):
    product = await make_product(ctx, price_fen=1999)
    await add_stock(ctx, product, ["ONLY-ONE-KEY"])
    order = await paid_order(ctx, product, quantity=3)
    fresh, *_ = await snapshot(ctx, order)
    assert fresh.status == "awaiting_stock" and fresh.delivered_quantity == 1

    made = await refund(ctx, order, "partial-0001")
    fresh, refunds, _, keys, _ = await snapshot(ctx, order)
    assert fresh.status == "partially_refunded"
    assert made.quantity == 2 and made.amount_fen == 2 * 1999 == 3998
    assert isinstance(made.amount_fen, int) and isinstance(fresh.refunded_fen, int)
    assert fresh.refunded_fen == 3998 and fresh.refunded_quantity == 2 and fresh.delivered_quantity == 1
    assert [(k.status, k.order_id) for k in keys] == [("sold", order.id)]  # the delivered key stays delivered

    with pytest.raises(NotRefundable) as info:
        await refund(ctx, order, "partial-0002")
    assert info.value.message_zh == "该订单已退款"


async def test_refunding_part_of_a_backorder_leaves_the_rest_to_be_delivered(ctx):
    product = await make_product(ctx, price_fen=PRICE)
    order = await paid_order(ctx, product, quantity=3)
    with pytest.raises(ValidationFailed) as info:
        await refund(ctx, order, "too-many-0001", quantity=4)
    assert info.value.message_zh == "可退数量为 1–3"
    await refund(ctx, order, "part-0001", quantity=2)
    fresh, *_ = await snapshot(ctx, order)
    assert fresh.status == "awaiting_stock" and fresh.undelivered_quantity == 1

    await add_stock(ctx, product, ["K-1", "K-2", "K-3"])
    async with unit_of_work(ctx.sessions) as session:
        await delivery.fulfil_backorders(session, ctx, product.id)
    fresh, _, _, keys, _ = await snapshot(ctx, order)
    assert fresh.status == "delivered" and fresh.delivered_quantity == 1 and fresh.refunded_quantity == 2
    assert sorted(k.status for k in keys) == ["available", "available", "sold"]


async def test_refund_of_a_delivered_card_key_order_is_refused_and_changes_nothing(ctx):
    product = await make_product(ctx, price_fen=PRICE)
    await add_stock(ctx, product, ["SOLD-KEY-0001"])
    order = await paid_order(ctx, product)
    before = await snapshot(ctx, order)
    assert before[0].status == "delivered"

    with pytest.raises(NotRefundable) as info:
        await refund(ctx, order, "delivered-0001")
    assert info.value.message_zh == "已发货的商品不能自动退款，如有问题请联系客服"
    assert info.value.status == 409

    after = await snapshot(ctx, order)
    assert after[0].status == "delivered" and after[0].version == before[0].version
    assert after[0].refunded_fen == 0 and after[1] == [] and after[4] == []
    assert [e.kind for e in after[2]] == [e.kind for e in before[2]]
    assert [(k.status, k.order_id) for k in after[3]] == [("sold", order.id)]


@pytest.mark.parametrize("status_setup", ["pending_payment", "expired"])
async def test_an_unpaid_order_cannot_be_refunded(ctx, clock, status_setup):
    product = await make_product(ctx, price_fen=PRICE)
    order = await make_order(ctx, product)
    if status_setup == "expired":
        clock.advance(minutes=ctx.settings.order_ttl_minutes + 1)
        async with ctx.sessions() as session:
            await session.execute(Job.__table__.delete().where(Job.kind == "requery_payment"))
            await session.commit()
        await jobs.run_due(ctx)
    with pytest.raises(NotRefundable) as info:
        await refund(ctx, order, "unpaid-0001")
    assert info.value.message_zh == "订单未付款，无需退款"
    assert (await snapshot(ctx, order))[0].status == status_setup


# Concurrency --------------------------------------------------------------------------------------


async def test_concurrent_refunds_never_refund_more_than_the_undelivered_part(ctx):
    product = await make_product(ctx, price_fen=PRICE)
    await add_stock(ctx, product, ["DELIVERED-1"])
    order = await paid_order(ctx, product, quantity=4)  # 1 delivered, 3 undelivered
    asks = [None, 2, 2, 1, 1, None, 3, 1]
    results = await asyncio.gather(
        *(refund(ctx, order, f"concurrent-{i:04d}", quantity=q) for i, q in enumerate(asks)),
        return_exceptions=True,
    )
    for result in results:
        assert isinstance(result, Refund | DomainError), repr(result)  # refused cleanly, never a crash
    made = [r for r in results if isinstance(r, Refund)]
    fresh, refunds, events, _, refund_jobs = await snapshot(ctx, order)
    assert sum(r.quantity for r in refunds) == fresh.refunded_quantity <= 3
    assert sum(r.amount_fen for r in refunds) == fresh.refunded_fen == fresh.refunded_quantity * PRICE
    assert {r.id for r in refunds} == {r.id for r in made}
    assert fresh.refunded_quantity + fresh.delivered_quantity <= fresh.quantity
    assert len(refund_jobs) == len(refunds) == [e.kind for e in events].count("refunded")


async def test_concurrent_refunds_with_one_key_make_one_refund(ctx):
    product = await make_product(ctx, price_fen=PRICE)
    order = await paid_order(ctx, product, quantity=2)
    results = await asyncio.gather(*(refund(ctx, order, "same-key-0001") for _ in range(6)))
    assert len({r.id for r in results}) == 1
    fresh, refunds, *_ = await snapshot(ctx, order)
    assert len(refunds) == 1 and fresh.refunded_fen == 2 * PRICE and fresh.status == "refunded"


# Manual refunds and the gateway refund API ---------------------------------------------------------


async def test_without_gateway_refunds_the_refund_is_manual_pending(ctx, monkeypatch):
    monkeypatch.setattr(ctx.settings, "epay_refund_enabled", False)
    product = await make_product(ctx, price_fen=PRICE)
    order = await paid_order(ctx, product)
    made = await refund(ctx, order, "manual-0001")
    fresh, refunds, events, _, refund_jobs = await snapshot(ctx, order)
    assert made.status == "manual_pending" and fresh.status == "refunded"
    assert refund_jobs == []
    assert [e.kind for e in events][-2:] == ["refunded", "refund_manual"]
    assert events[-1].actor_kind == "system" and events[-1].data == {"refund_id": made.id, "amount": PRICE}


async def test_gateway_refund_job_refunds_at_the_gateway_over_http(live_server, ctx):
    product = await make_product(ctx, price_fen=PRICE)
    order = await make_order(ctx, product, 3)
    await pay_through_gateway(live_server, ctx, order)
    made = await refund(ctx, order, "gateway-0001", quantity=1)
    assert made.status == "processing"
    assert await jobs.run_due(ctx) == 1
    fresh, refunds, events, _, refund_jobs = await snapshot(ctx, order)
    assert refunds[0].status == "succeeded" and refunds[0].finished_at is not None
    assert events[-1].kind == "refund_succeeded" and events[-1].data["amount"] == PRICE
    assert refund_jobs[0].status == "done"
    trade = await gateway_trade(ctx, order)
    assert trade.money == "90.00" and trade.refunded_money == "30.00"

    await refund(ctx, order, "gateway-0002")  # the other two
    await jobs.run_due(ctx)
    assert (await gateway_trade(ctx, order)).refunded_money == "90.00"
    assert (await snapshot(ctx, order))[0].status == "refunded"


async def test_gateway_refusing_the_refund_hands_it_to_staff(live_server, ctx):
    product = await make_product(ctx, price_fen=PRICE)
    order = await paid_order(ctx, product, 2)  # paid by notify only: the gateway has no such trade
    made = await refund(ctx, order, "refused-0001")
    await jobs.run_due(ctx)
    _, refunds, events, _, _ = await snapshot(ctx, order)
    assert refunds[0].id == made.id and refunds[0].status == "manual_pending"
    assert refunds[0].gateway_response == "订单号不存在"
    assert events[-1].kind == "refund_failed" and events[-1].data["gateway_message"] == "订单号不存在"


class LoseTheAnswer(httpx.AsyncBaseTransport):
    """Delivers the request to the real gateway, then the answer is lost on the way back."""

    def __init__(self):
        self.inner = httpx.AsyncHTTPTransport()
        self.sent = 0

    async def handle_async_request(self, request):
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.sent += 1
        raise httpx.ReadTimeout("answer lost", request=request)


async def test_a_refund_whose_gateway_answer_was_lost_is_not_sent_twice(live_server, ctx, clock):
    product = await make_product(ctx, price_fen=PRICE)
    order = await make_order(ctx, product, 3)
    await pay_through_gateway(live_server, ctx, order)
    await refund(ctx, order, "lost-answer-0001", quantity=1)
    real = ctx.epay
    lossy = LoseTheAnswer()
    ctx.epay = EpayClient(
        ctx.settings.epay_gateway, ctx.settings.epay_pid, ctx.settings.epay_key, transport=lossy
    )
    for _ in range(jobs.MAX_ATTEMPTS):
        await jobs.run_due(ctx)
        clock.advance(hours=1)
    ctx.epay = real
    await jobs.run_due(ctx)
    # The gateway really refunded once; 易支付's refund API has no idempotency key, so a blind retry
    # would refund the same money again. The refund goes to staff to check instead.
    assert lossy.sent == 1
    assert (await gateway_trade(ctx, order)).refunded_money == "30.00"
    _, refunds, events, _, _ = await snapshot(ctx, order)
    assert refunds[0].status == "manual_pending"
    assert events[-1].kind == "refund_failed"


async def test_a_refund_that_could_not_connect_to_the_gateway_is_retried(live_server, ctx, clock):
    product = await make_product(ctx, price_fen=PRICE)
    order = await make_order(ctx, product, 1)
    await pay_through_gateway(live_server, ctx, order)
    await refund(ctx, order, "unreachable-0001")
    real = ctx.epay
    ctx.epay = EpayClient(f"http://127.0.0.1:{free_port()}/", ctx.settings.epay_pid, ctx.settings.epay_key)
    await jobs.run_due(ctx)
    _, refunds, *_ = await snapshot(ctx, order)
    assert refunds[0].status == "processing"  # never sent: safe to try again
    ctx.epay = real
    clock.advance(hours=1)
    await jobs.run_due(ctx)
    _, refunds, events, _, _ = await snapshot(ctx, order)
    assert refunds[0].status == "succeeded" and events[-1].kind == "refund_succeeded"
    assert (await gateway_trade(ctx, order)).refunded_money == "30.00"


async def test_a_gateway_that_stays_unreachable_hands_the_refund_to_staff(live_server, ctx, clock):
    product = await make_product(ctx, price_fen=PRICE)
    order = await make_order(ctx, product, 1)
    await pay_through_gateway(live_server, ctx, order)
    await refund(ctx, order, "unreachable-0002")
    ctx.epay = EpayClient(f"http://127.0.0.1:{free_port()}/", ctx.settings.epay_pid, ctx.settings.epay_key)
    for _ in range(len(GATEWAY_CONNECT_RETRIES_SECONDS) + 1):
        await jobs.run_due(ctx)
        clock.advance(hours=1)
    _, refunds, events, _, refund_jobs = await snapshot(ctx, order)
    assert refunds[0].status == "manual_pending" and refund_jobs[0].status == "done"
    assert events[-1].kind == "refund_failed" and "人工" in events[-1].data["gateway_message"]
    assert (await gateway_trade(ctx, order)).refunded_money == "0.00"


async def test_concurrent_gateway_refunds_of_one_order_all_reach_the_books(settings, live_server, ctx, clock):
    product = await make_product(ctx, price_fen=PRICE)
    order = await make_order(ctx, product, 6)
    await pay_through_gateway(live_server, ctx, order)
    for i in range(6):
        await refund(ctx, order, f"one-by-one-{i:04d}", quantity=1)
    other_worker = build_context(settings, clock=clock)
    try:
        await asyncio.gather(
            jobs.run_due(ctx), jobs.run_due(other_worker), jobs.run_due(ctx), jobs.run_due(other_worker)
        )
    finally:
        await other_worker.close()
    _, refunds, *_ = await snapshot(ctx, order)
    assert [r.status for r in refunds] == ["succeeded"] * 6
    assert (await gateway_trade(ctx, order)).refunded_money == "180.00"


# The admin API --------------------------------------------------------------------------------------


async def test_admin_api_refund_over_http(live_server, ctx):
    async with unit_of_work(ctx.sessions) as session:
        await create_staff(session, ctx.clock, "xiaomei", "correct-horse-1", role="agent")
    product = await make_product(ctx, price_fen=PRICE)
    await add_stock(ctx, product, ["ONE-KEY"])
    order = await make_order(ctx, product, 3)
    await pay_through_gateway(live_server, ctx, order)
    delivered = await make_order(ctx, product, 1)
    await pay_through_gateway(live_server, ctx, delivered)  # out of stock now: waits
    body = {"reason": "客户不想等补货", "idempotency_key": "admin-refund-0001"}

    async with httpx.AsyncClient(base_url=live_server.url, auth=("xiaomei", "correct-horse-1")) as http:
        url = f"/api/v1/admin/orders/{order.order_no}/refund"
        denied = await http.post(url, json=body, auth=("xiaomei", "wrong-password"))
        assert denied.status_code == 401
        assert (await snapshot(ctx, order))[1] == []

        response = await http.post(url, json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["amount_fen"] == 2 * PRICE and answer["status"] == "processing"
        assert answer["order_status"] == "partially_refunded"
        again = await http.post(url, json=body)
        assert again.json()["refund_id"] == answer["refund_id"]

        refused = await http.post(url, json={**body, "idempotency_key": "admin-refund-0002"})
        assert refused.status_code == 409
        assert refused.json()["error"] == {
            "code": "not_refundable",
            "message": "该订单已退款",
            "message_en": "the order has already been refunded",
        }
        invalid = await http.post(url, json={"reason": "", "idempotency_key": "short"})
        assert invalid.status_code == 422

    fresh, refunds, events, _, _ = await snapshot(ctx, order)
    assert len(refunds) == 1 and refunds[0].actor_kind == "agent" and refunds[0].actor_id == "xiaomei"
    assert [e for e in events if e.kind == "refunded"][0].actor_id == "xiaomei"
    assert await jobs.run_due(ctx) == 1
    assert (await gateway_trade(ctx, order)).refunded_money == "60.00"
    assert (await snapshot(ctx, order))[1][0].status == "succeeded"
