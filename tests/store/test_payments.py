"""易支付 payments: idempotent notifies, rejected forgeries, lost notifies recovered by asking the gateway,
expiry, and late payments. Money that arrives is never ignored; the same payment is never applied twice."""

import asyncio
import secrets

import httpx
from sqlalchemy import func, select

from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima import jobs
from zaima.core import http
from zaima.db import unit_of_work
from zaima.demo import gateway as demo_gateway
from zaima.models import CardKey, Order, OrderEvent, Payment, PaymentNotification
from zaima.store import payments, stock
from zaima.store.expiry import expire_order_job


async def snapshot(ctx, order_id: int) -> dict:
    """Everything a notify could change about an order."""
    async with unit_of_work(ctx.sessions) as session:
        order = await session.get(Order, order_id)
        keys = list(await session.scalars(select(CardKey).where(CardKey.product_id == order.product_id)
                                          .order_by(CardKey.id)))
        return {
            "status": order.status,
            "version": order.version,
            "paid_at": order.paid_at,
            "delivered_quantity": order.delivered_quantity,
            "payments": await session.scalar(select(func.count()).select_from(Payment)
                                             .where(Payment.order_id == order_id)),
            "events": [e.kind for e in await session.scalars(select(OrderEvent).where(OrderEvent.order_id == order_id)
                                                             .order_by(OrderEvent.id))],
            "keys": [(k.id, k.status, k.order_id) for k in keys],
        }


async def notifications(ctx, out_trade_no: str | None = None) -> list[PaymentNotification]:
    async with unit_of_work(ctx.sessions) as session:
        query = select(PaymentNotification).order_by(PaymentNotification.id)
        if out_trade_no is not None:
            query = query.where(PaymentNotification.out_trade_no == out_trade_no)
        return list(await session.scalars(query))


async def sold_keys(ctx, order_id: int) -> list[CardKey]:
    async with unit_of_work(ctx.sessions) as session:
        return await stock.keys_of_order(session, order_id)


# --- idempotency ---------------------------------------------------------------------------------------------


async def test_same_notify_five_times_at_once_is_one_payment_and_one_delivery(ctx, client):
    product = await make_product(ctx, max_quantity=5)
    await add_stock(ctx, product, [f"DUP-{i}" for i in range(6)])
    order = await make_order(ctx, product, quantity=2)
    params = notify_params(order)

    replies = await asyncio.gather(*(client.get("/pay/epay/notify", params=params) for _ in range(5)))

    assert [(r.status_code, r.text) for r in replies] == [(200, "success")] * 5
    after = await snapshot(ctx, order.id)
    assert after["status"] == "delivered"
    assert after["payments"] == 1
    assert after["delivered_quantity"] == 2
    assert len(await sold_keys(ctx, order.id)) == 2
    assert after["events"].count("paid") == 1 and after["events"].count("delivered") == 1
    async with unit_of_work(ctx.sessions) as session:
        assert await session.scalar(select(func.count()).select_from(CardKey).where(CardKey.status == "sold")) == 2
    verdicts = sorted(n.verdict for n in await notifications(ctx, order.order_no))
    assert verdicts == ["accepted"] + ["duplicate"] * 4

    # The gateway retries an hour later (or a replay arrives by POST): still a no-op, still "success".
    ctx.clock.advance(hours=1)
    late = await client.post("/pay/epay/notify", data=params)
    assert (late.status_code, late.text) == (200, "success")
    assert await snapshot(ctx, order.id) == after
    assert [n.verdict for n in await notifications(ctx, order.order_no)][-1] == "duplicate"


async def test_repeated_notify_after_delivery_changes_nothing(ctx):
    product = await make_product(ctx)
    await add_stock(ctx, product, ["ONCE-1", "ONCE-2"])
    order = await make_order(ctx, product)
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    delivered = await snapshot(ctx, order.id)
    assert delivered["status"] == "delivered"
    # The same payment again changes nothing at all.
    assert await payments.handle_notify(ctx, notify_params(order)) == "duplicate"
    assert await snapshot(ctx, order.id) == delivered
    # Another trade number for the same order never moves it; it is only flagged for staff.
    assert await payments.handle_notify(ctx, notify_params(order, trade_no="T-OTHER")) == "duplicate"
    after = await snapshot(ctx, order.id)
    assert after["events"] == delivered["events"] + ["extra_payment"]
    # Only the flag, and the version it claimed (so that the same trade notified twice at once is flagged once).
    assert after["version"] == delivered["version"] + 1
    assert {**after, "events": None, "version": None} == {**delivered, "events": None, "version": None}


async def test_a_genuine_notify_is_applied_whatever_the_gateways_own_fields_hold(ctx, client):
    """A trade number longer than our column or a payment type name like `alipay_h5_wap_pay` is the
    gateway's business: the payment is accepted and stored as it fits. Refusing it (PostgreSQL refuses text
    longer than a varchar) answered neither `success` nor `fail`, and the customer's money was lost."""
    product = await make_product(ctx)
    await add_stock(ctx, product, ["LONG-1"])
    order = await make_order(ctx, product)
    params = notify_params(order, trade_no="T" + "9" * 79, type="alipay_h5_wap_pay")
    reply = await client.get("/pay/epay/notify", params=params)
    assert reply.text == "success"
    assert (await snapshot(ctx, order.id))["status"] == "delivered"
    async with ctx.sessions() as session:
        payment = await session.scalar(select(Payment).where(Payment.order_id == order.id))
    assert (payment.trade_no, payment.pay_type) == ("T" + "9" * 63, "alipay_h5_wap_pa")
    assert [n.verdict for n in await notifications(ctx, order.order_no)] == ["accepted"]
    # The same notify again is the same payment (its stored trade number matches after the same cut).
    assert (await client.get("/pay/epay/notify", params=params)).text == "success"
    assert (await snapshot(ctx, order.id))["events"].count("extra_payment") == 0


async def test_a_second_trade_notified_five_times_at_once_is_flagged_once(ctx):
    """Staff refund each flagged trade: two flags for one trade would return the customer's money twice."""
    product = await make_product(ctx)
    await add_stock(ctx, product, ["TWICE-1", "TWICE-2"])
    order = await make_order(ctx, product)
    assert await payments.handle_notify(ctx, notify_params(order, trade_no="T-FIRST")) == "accepted"
    verdicts = await asyncio.gather(*[payments.handle_notify(ctx, notify_params(order, trade_no="T-SECOND"))
                                      for _ in range(5)])
    assert verdicts == ["duplicate"] * 5
    events = (await snapshot(ctx, order.id))["events"]
    assert events.count("extra_payment") == 1 and events.count("paid") == 1


# --- rejections ----------------------------------------------------------------------------------------------


def _forged_sign(order):
    params = notify_params(order)
    params["sign"] = secrets.token_hex(16)
    return params


def _amount_altered_not_resigned(order):
    params = notify_params(order)
    params["money"] = "0.01"
    return params


def _no_sign(order):
    params = notify_params(order)
    del params["sign"]
    return params


def _non_ascii_sign(order):
    params = notify_params(order)
    params["sign"] = "签名" * 16
    return params


REJECTIONS = [  # (what arrives, the reason recorded)
    ("forged-sign", _forged_sign, "bad_sign"),
    ("amount-altered-not-resigned", _amount_altered_not_resigned, "bad_sign"),
    ("amount-altered-resigned-with-wrong-key", lambda o: notify_params(o, money="0.01", key="not-the-merchant-key"),
     "bad_sign"),
    ("no-sign", _no_sign, "bad_sign"),
    ("non-ascii-sign", _non_ascii_sign, "bad_sign"),
    ("wrong-amount-correctly-signed", lambda o: notify_params(o, money="0.01"), "amount_mismatch"),
    ("too-much-correctly-signed", lambda o: notify_params(o, money="300.00"), "amount_mismatch"),
    ("malformed-amount-correctly-signed", lambda o: notify_params(o, money="1e3"), "bad_amount"),
    ("unknown-order", lambda o: notify_params(o, out_trade_no="ZZZZZZZZZZZZ"), "unknown_order"),
    ("wrong-pid", lambda o: notify_params(o, pid="1001"), "wrong_pid"),
    ("not-trade-success", lambda o: notify_params(o, trade_status="WAIT_BUYER_PAY"), "not_success"),
    ("no-trade-status", lambda o: notify_params(o, trade_status=""), "not_success"),
    # NUL cannot be stored in PostgreSQL text; it used to crash the handler there (HTTP 500, no record).
    ("nul-in-order-number", lambda o: {**notify_params(o), "out_trade_no": o.order_no + "\x00"}, "bad_params"),
    ("nul-correctly-signed", lambda o: notify_params(o, name="a\x00b"), "bad_params"),
]


def as_recorded(params: dict[str, str]) -> dict[str, str]:
    """How a notify is kept as evidence: NUL written out as the four characters \\x00."""
    return {k.replace("\x00", "\\x00"): v.replace("\x00", "\\x00") for k, v in params.items()}


async def test_each_bad_notify_is_rejected_and_changes_nothing(ctx, client):
    product = await make_product(ctx)
    await add_stock(ctx, product, ["REJ-1", "REJ-2", "REJ-3"])
    order = await make_order(ctx, product)
    before = await snapshot(ctx, order.id)
    assert before["status"] == "pending_payment"
    assert sorted(s for _, s, _ in before["keys"]) == ["available", "available", "reserved"]

    for case, make_params, reason in REJECTIONS:
        params = make_params(order)
        reply = await client.get("/pay/epay/notify", params=params)
        assert (reply.status_code, reply.text) == (400, "fail"), case
        assert await snapshot(ctx, order.id) == before, case
        record = (await notifications(ctx))[-1]
        assert (record.verdict, record.reason) == ("rejected", reason), case
        assert record.out_trade_no == as_recorded(params).get("out_trade_no"), case
        assert record.params == as_recorded(params), case
        assert record.remote_addr == "203.0.113.7", case
    assert len(await notifications(ctx)) == len(REJECTIONS)

    # None of that stood in the way of the genuine notify.
    reply = await client.get("/pay/epay/notify", params=notify_params(order))
    assert (reply.status_code, reply.text) == (200, "success")
    assert (await snapshot(ctx, order.id))["status"] == "delivered"


# --- lost notify, active query, expiry, late payment (real HTTP against the local 易支付 gateway) -------------


async def checkout(http: httpx.AsyncClient, sku: str, quantity: int = 1) -> dict:
    created = await http.post("/api/v1/orders", json={"sku": sku, "quantity": quantity,
                                                      "contact": "13800138000", "pay_type": "wxpay"})
    assert created.status_code == 201, created.text
    return created.json()


async def open_cashier(http: httpx.AsyncClient, pay_url: str) -> None:
    """What the buyer's browser does: open the pay link, which creates the trade at the gateway."""
    page = await http.get(pay_url)
    assert page.status_code == 200
    assert "收银台" in page.text


async def pay_at_gateway(http: httpx.AsyncClient, order_no: str, notify: bool) -> None:
    paid = await http.post("/demo-gateway/test/pay", json={"out_trade_no": order_no, "notify": notify})
    assert paid.status_code == 200 and paid.json()["code"] == 1, paid.text


async def order_status(http: httpx.AsyncClient, created: dict) -> dict:
    reply = await http.get(f"/api/v1/orders/{created['order_no']}", headers={"X-Order-Token": created["access_token"]})
    assert reply.status_code == 200, reply.text
    return reply.json()


async def order_id_of(ctx, order_no: str) -> int:
    async with unit_of_work(ctx.sessions) as session:
        return await session.scalar(select(Order.id).where(Order.order_no == order_no))


async def test_paying_at_the_gateway_delivers_through_a_real_notify(ctx, live_server):
    product = await make_product(ctx, sku="live-ok")
    await add_stock(ctx, product, ["LIVE-OK-1"])
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        created = await checkout(http, "live-ok")
        await open_cashier(http, created["pay_url"])
        await pay_at_gateway(http, created["order_no"], notify=True)
        view = await order_status(http, created)
    assert view["status"] == "delivered"
    assert view["payment"]["received_via"] == "notify"
    assert [k["secret"] for k in view["keys"]] == ["LIVE-OK-1"]


async def test_lost_notify_is_recovered_by_the_due_requery_job(ctx, live_server, clock):
    product = await make_product(ctx, sku="live-lost")
    await add_stock(ctx, product, ["LOST-1", "LOST-2"])
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        created = await checkout(http, "live-lost")
        await open_cashier(http, created["pay_url"])
        await pay_at_gateway(http, created["order_no"], notify=False)
        assert (await order_status(http, created))["status"] == "pending_payment"
        assert await jobs.run_due(ctx) == 0  # nothing is due yet: the first re-query is 2 minutes in

        clock.advance(minutes=3)
        assert await jobs.run_due(ctx) == 1

        view = await order_status(http, created)
    assert view["status"] == "delivered"
    assert view["payment"]["received_via"] == "query"
    assert "payment_recovered" in [e["kind"] for e in view["timeline"]]
    assert len(view["keys"]) == 1
    async with unit_of_work(ctx.sessions) as session:
        [payment] = list(await session.scalars(select(Payment)))
        assert payment.amount_fen == 3000 and payment.pay_type == "wxpay" and payment.received_via == "query"


async def test_expiry_asks_the_gateway_first_and_delivers_a_paid_order(ctx, live_server, clock):
    product = await make_product(ctx, sku="live-exp-paid")
    await add_stock(ctx, product, ["EXPPAID-1"])
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        created = await checkout(http, "live-exp-paid")
        await open_cashier(http, created["pay_url"])
        await pay_at_gateway(http, created["order_no"], notify=False)
        clock.advance(minutes=ctx.settings.order_ttl_minutes, seconds=1)
        # The expiry job itself (not the re-query job) finds the payment.
        await expire_order_job(ctx, {"order_id": await order_id_of(ctx, created["order_no"])})
        view = await order_status(http, created)
    assert view["status"] == "delivered"
    kinds = [e["kind"] for e in view["timeline"]]
    assert "payment_recovered" in kinds and "expired" not in kinds


async def test_unpaid_order_expires_at_its_ttl_and_its_keys_return_to_stock(ctx, live_server, clock):
    product = await make_product(ctx, sku="live-exp", max_quantity=5)
    await add_stock(ctx, product, ["EXP-1", "EXP-2", "EXP-3"])
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        created = await checkout(http, "live-exp", quantity=2)
        await open_cashier(http, created["pay_url"])  # the trade exists at the gateway, unpaid
        order_id = await order_id_of(ctx, created["order_no"])
        async with unit_of_work(ctx.sessions) as session:
            assert await stock.available_count(session, product.id) == 1

        clock.advance(minutes=ctx.settings.order_ttl_minutes, seconds=-1)
        await jobs.run_until_idle(ctx)  # re-queries run and find nothing; expiry is not due yet
        assert (await order_status(http, created))["status"] == "pending_payment"

        clock.advance(seconds=1)
        assert await jobs.run_due(ctx) == 1
        view = await order_status(http, created)
    assert view["status"] == "expired"
    kinds = [e["kind"] for e in view["timeline"]]
    assert kinds[-2:] == ["expired", "stock_released"]
    async with unit_of_work(ctx.sessions) as session:
        assert await stock.available_count(session, product.id) == 3
        assert await stock.keys_of_order(session, order_id, ("reserved", "sold")) == []


async def test_notify_after_expiry_still_delivers_late_payment(ctx, live_server, clock):
    product = await make_product(ctx, sku="live-late")
    await add_stock(ctx, product, ["LATE-1"])
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        created = await checkout(http, "live-late")
        await open_cashier(http, created["pay_url"])
        clock.advance(minutes=ctx.settings.order_ttl_minutes)
        await jobs.run_until_idle(ctx)
        assert (await order_status(http, created))["status"] == "expired"

        # The buyer pays on the still-open cashier page; the gateway notifies us (real HTTP).
        await pay_at_gateway(http, created["order_no"], notify=True)
        view = await order_status(http, created)
    assert view["status"] == "delivered"
    assert [k["secret"] for k in view["keys"]] == ["LATE-1"]
    assert "late_payment" in [e["kind"] for e in view["timeline"]]


async def test_late_payment_with_stock_gone_waits_for_stock_and_keeps_the_money(ctx):
    product = await make_product(ctx, sku="late-short")
    await add_stock(ctx, product, ["SHORT-1"])
    late = await make_order(ctx, product)
    ctx.clock.advance(minutes=ctx.settings.order_ttl_minutes)
    ctx.epay = None  # the gateway is not configured: expiry cannot ask, it just closes
    await expire_order_job(ctx, {"order_id": late.id})
    assert (await snapshot(ctx, late.id))["status"] == "expired"
    other = await make_order(ctx, product, contact="fast@example.com")  # takes the released key
    assert await payments.handle_notify(ctx, notify_params(other, trade_no="T-FAST")) == "accepted"

    assert await payments.handle_notify(ctx, notify_params(late, trade_no="T-LATE")) == "accepted"
    after = await snapshot(ctx, late.id)
    assert after["status"] == "awaiting_stock"
    assert after["payments"] == 1
    assert "late_payment" in after["events"]


async def test_expiry_still_closes_the_order_when_the_gateway_cannot_be_reached(ctx):
    """Nothing listens at the configured gateway here: the query fails, the order still expires and its
    keys go back on sale; a payment that turns up later is accepted as a late payment."""
    product = await make_product(ctx, sku="gw-down")
    await add_stock(ctx, product, ["GWDOWN-1"])
    order = await make_order(ctx, product)
    ctx.clock.advance(minutes=ctx.settings.order_ttl_minutes)
    await jobs.run_until_idle(ctx)
    closed = await snapshot(ctx, order.id)
    assert closed["status"] == "expired"
    assert [s for _, s, _ in closed["keys"]] == ["available"]

    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    assert (await snapshot(ctx, order.id))["status"] == "delivered"


async def test_a_second_trade_for_a_paid_order_is_flagged_once_for_a_manual_refund(ctx):
    product = await make_product(ctx)
    await add_stock(ctx, product, ["K-1", "K-2"])
    order = await make_order(ctx, product)
    assert await payments.handle_notify(ctx, notify_params(order, trade_no="T-FIRST")) == "accepted"
    for _ in range(3):  # the gateway repeats the second trade's notify
        assert await payments.handle_notify(ctx, notify_params(order, trade_no="T-SECOND")) == "duplicate"
    async with ctx.sessions() as session:
        flagged = list(await session.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id,
                                                                      OrderEvent.kind == "extra_payment")))
        assert [(e.data["trade_no"], e.data["amount"]) for e in flagged] == [("T-SECOND", order.amount_fen)]
        # Still one payment and one key: the extra money is for staff to return, not a second delivery.
        assert await session.scalar(select(func.count()).select_from(Payment)) == 1
        assert await session.scalar(select(func.count()).select_from(CardKey).where(CardKey.status == "sold")) == 1


async def test_calls_to_the_gateway_and_the_supplier_share_one_connection_each_until_the_app_closes(ctx, live_server):
    """A client made per call costs ≈ 20 ms of CPU on the event loop (its TLS context) and a new connection:
    the epay client and the supplier adapter each keep one pooled client."""
    product = await make_product(ctx, sku="pooled")
    await add_stock(ctx, product, ["POOLED-1"])
    order = await make_order(ctx, product)
    state = live_server.server.server_state
    before = state.total_requests
    for _ in range(5):
        assert await ctx.epay.query(order.order_no) is None  # its pay page was never opened: unknown there
    assert state.total_requests - before == 5
    assert len(state.connections) == 1  # one kept-alive connection (a client per call left none open)
    for _ in range(5):
        await ctx.supplier.query(f"{order.order_no}-1")
    assert state.total_requests - before == 10
    assert len(state.connections) == 2  # one per peer
    # The module-level clients (the LLM's, the demo's) are closed with the app too.
    assert (await demo_gateway._HTTP.get().get(f"{live_server.url}/healthz")).status_code == 200
    assert len(state.connections) == 3
    await http.aclose_all()  # what the app's shutdown (AppContext.close) does
    for _ in range(50):
        if not state.connections:
            break
        await asyncio.sleep(0.02)
    assert len(state.connections) == 0
