"""直充 direct recharge against the built-in supplier over real HTTP, on SQLite and PostgreSQL.

The live server is both our app and the simulated supplier (and the demo 易支付 gateway): submits,
status queries, callbacks and refunds all cross a real socket. Jobs are driven by hand with
`run_due` and the frozen clock; the supplier's callbacks come from its own background tasks after
`delay_seconds` of real time, so tests wait for them with a bounded poll.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import SUPPLIER_SECRET, free_port
from tests.store.helpers import make_order, make_product, notify_params
from zaima import jobs
from zaima.db import unit_of_work
from zaima.demo import supplier as demo_supplier
from zaima.models import DemoGatewayTrade, DemoSupplierOrder, Job, Order, Refund, SupplierOrder
from zaima.store import payments, supplier_protocol, suppliers, timeline
from zaima.store.api import checkout_links
from zaima.store.suppliers import HttpSupplierAdapter

UID = {"uid": "123456789"}


@pytest.fixture
async def supplier(live_server):
    """The live demo supplier, with its scenario queue and callback tasks cleaned up around each test."""
    demo_supplier._queued.clear()
    yield live_server
    demo_supplier._queued.clear()
    for task in list(demo_supplier._background):
        task.cancel()
    await asyncio.gather(*demo_supplier._background, return_exceptions=True)


async def queue(server, **scenario) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/demo-supplier/control/next", json=scenario)
        response.raise_for_status()


async def recharge_product(ctx, sku: str = "game-100", **values):
    return await make_product(ctx, sku=sku, kind="recharge", price_fen=1000, supplier_sku="G100", **values)


async def paid_recharge_order(ctx, product, inputs=UID):
    """A recharge order paid by a (verified) notify: the order moves to `delivering` at once."""
    order = await make_order(ctx, product, inputs=inputs)
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    return order


async def pay_through_gateway(server, ctx, order) -> None:
    """Open the trade at the demo gateway's cashier and pay it; the gateway notifies us over HTTP."""
    links = checkout_links(ctx, order, "测试")
    async with httpx.AsyncClient() as http:
        assert (await http.get(links["pay_url"])).status_code == 200
        paid = await http.post(f"{server.url}/demo-gateway/test/pay", json={"out_trade_no": order.order_no})
        assert paid.json()["code"] == 1


class State:
    def __init__(self, order, supplier_order, events, refunds, jobs):
        self.order = order
        self.so = supplier_order
        self.events = events
        self.kinds = [e.kind for e in events]
        self.refunds = refunds
        self.jobs = jobs

    def job(self, kind: str) -> Job:
        [job] = [j for j in self.jobs if j.kind == kind]
        return job


async def state(ctx, order) -> State:
    async with ctx.sessions() as session:
        fresh = await session.get(Order, order.id)
        so = await session.scalar(
            select(SupplierOrder).where(SupplierOrder.order_id == order.id).order_by(SupplierOrder.id.desc())
        )
        events = await timeline.events_for(session, order.id)
        refunds = list(await session.scalars(select(Refund).where(Refund.order_id == order.id)))
        queued = list(
            await session.scalars(
                select(Job)
                .where(Job.kind.like("supplier_%") | (Job.kind == "gateway_refund"))
                .order_by(Job.id)
            )
        )
        return State(fresh, so, events, refunds, queued)


async def eventually(ctx, order, check, timeout: float = 8.0) -> State:
    """Wait (bounded) until check(state) holds: the supplier's callbacks arrive on their own."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        current = await state(ctx, order)
        if check(current):
            return current
        if loop.time() > deadline:
            raise AssertionError(
                f"timed out; order {current.order.status}, supplier order "
                f"{current.so.status if current.so else None}, log {current.so.log if current.so else None}"
            )
        await asyncio.sleep(0.02)


def callbacks(s: State) -> int:
    return sum(1 for entry in s.so.log if entry["via"] == "callback")


async def supplier_orders(ctx) -> list[DemoSupplierOrder]:
    async with ctx.sessions() as session:
        return list(await session.scalars(select(DemoSupplierOrder).order_by(DemoSupplierOrder.id)))


# 1. The happy path ------------------------------------------------------------------------------


async def test_paid_recharge_is_submitted_accepted_and_delivered_by_callback(supplier, ctx, clock):
    await queue(supplier, outcome="succeeded", delay_seconds=0.3, callback="normal")
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)

    s = await state(ctx, order)
    assert s.order.status == "delivering"
    assert s.so.status == "pending" and s.so.request_id == f"{order.order_no}-1"
    assert s.job("supplier_submit").status == "pending"

    assert await jobs.run_due(ctx) == 1
    s = await state(ctx, order)
    assert s.so.status == "accepted" and s.so.supplier_order_no.startswith("SP")
    assert s.order.status == "delivering"
    [remote] = await supplier_orders(ctx)
    assert remote.request_id == s.so.request_id and remote.sku == "G100" and remote.account == UID
    assert remote.callback_url == f"{ctx.settings.base_url}/supplier/callback"

    s = await eventually(ctx, order, lambda s: s.order.status == "delivered")
    assert s.so.status == "succeeded" and s.so.finished_at == clock.now()
    assert s.order.delivered_quantity == 1 and s.order.delivered_at is not None
    assert s.kinds == ["created", "paid", "supplier_submitted", "supplier_accepted", "supplier_succeeded"]
    assert [e.actor_kind for e in s.events[-3:]] == ["system", "supplier", "supplier"]
    assert s.events[-1].data["via"] == "callback"
    assert [entry["via"] for entry in s.so.log] == ["submit", "callback"]
    assert s.refunds == []

    # The safety-net poll queued at submit finds the order finished and stops without asking.
    clock.advance(seconds=suppliers.POLL_BACKOFF_SECONDS[0])
    assert await jobs.run_due(ctx) == 1
    s = await state(ctx, order)
    assert s.job("supplier_poll").status == "done" and len(s.so.log) == 2


# 2. unconfirmed is pending ----------------------------------------------------------------------


async def test_unconfirmed_answers_keep_polling_and_never_fail(supplier, ctx, clock):
    await queue(supplier, outcome="succeeded", delay_seconds=100, callback="none", unconfirmed_polls=2)
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    assert await jobs.run_due(ctx) == 1  # submit → accepted, first poll in 15 s

    for expected_round in (1, 2):
        clock.advance(seconds=suppliers.POLL_BACKOFF_SECONDS[expected_round - 1])
        assert await jobs.run_due(ctx) == 1
        s = await state(ctx, order)
        assert s.so.log[-1]["status"] == "unconfirmed" and s.so.log[-1]["via"] == "poll"
        assert s.order.status == "delivering" and s.so.status == "accepted"
        assert s.refunds == [] and "supplier_failed" not in s.kinds
        poll = s.job("supplier_poll")
        assert poll.status == "pending" and poll.payload["round"] == expected_round
        assert poll.run_at == clock.now() + timedelta(seconds=suppliers.POLL_BACKOFF_SECONDS[expected_round])

    assert await jobs.run_due(ctx) == 0  # the next poll waits for its backoff
    clock.advance(seconds=suppliers.POLL_BACKOFF_SECONDS[2])  # now past the supplier's 100 s
    assert await jobs.run_due(ctx) == 1
    s = await state(ctx, order)
    assert s.order.status == "delivered" and s.so.status == "succeeded"
    assert [entry["status"] for entry in s.so.log] == ["accepted", "unconfirmed", "unconfirmed", "succeeded"]
    assert s.kinds[-1] == "supplier_succeeded" and s.events[-1].data["via"] == "poll"
    assert s.job("supplier_poll").status == "done"


async def test_processing_answer_before_completion_keeps_polling(supplier, ctx, clock):
    await queue(supplier, outcome="succeeded", delay_seconds=1000, callback="none")
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    await jobs.run_due(ctx)
    elapsed = 0
    for round_no, wait in enumerate(suppliers.POLL_BACKOFF_SECONDS[:5]):
        clock.advance(seconds=wait)
        elapsed += wait
        await jobs.run_due(ctx)  # (the order's own payment re-query job also comes due on the way)
        s = await state(ctx, order)
        assert s.job("supplier_poll").payload["round"] == round_no + 1
        assert s.so.log[-1]["status"] == "processing" and s.order.status == "delivering"
    assert elapsed < 1000
    clock.advance(seconds=suppliers.POLL_BACKOFF_SECONDS[5])
    await jobs.run_due(ctx)
    assert (await state(ctx, order)).order.status == "delivered"


# 3. Late and contradictory callbacks --------------------------------------------------------------


async def test_late_success_callback_after_polled_success_changes_nothing(supplier, ctx, clock):
    # The callback comes 2 × 0.3 s after submit: long after the poll below has learnt the result.
    await queue(supplier, outcome="succeeded", delay_seconds=0.3, callback="late")
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    await jobs.run_due(ctx)
    clock.advance(seconds=suppliers.POLL_BACKOFF_SECONDS[0])
    await jobs.run_due(ctx)
    polled = await state(ctx, order)
    assert polled.order.status == "delivered" and polled.so.status == "succeeded"
    assert callbacks(polled) == 0, "the late callback must not have arrived yet"
    clock.advance(minutes=5)

    s = await eventually(ctx, order, lambda s: callbacks(s) == 1)
    assert s.so.log[-1]["status"] == "succeeded"
    assert s.order.status == "delivered" and s.order.version == polled.order.version
    assert s.so.status == "succeeded" and s.so.finished_at == polled.so.finished_at
    assert s.kinds == polled.kinds and s.kinds.count("supplier_succeeded") == 1
    assert "supplier_conflict" not in s.kinds


async def test_contradictory_failed_callback_after_success_is_recorded_and_ignored(supplier, ctx, clock):
    await queue(
        supplier,
        outcome="succeeded",
        delay_seconds=0,
        callback="normal",
        extra_callbacks=["failed"],
        message="账号异常",
    )
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    await jobs.run_due(ctx)

    s = await eventually(ctx, order, lambda s: callbacks(s) == 2)
    assert [e["status"] for e in s.so.log if e["via"] == "callback"] == ["succeeded", "failed"]
    assert s.order.status == "delivered" and s.so.status == "succeeded"
    assert s.refunds == [] and "supplier_failed" not in s.kinds
    [conflict] = [e for e in s.events if e.kind == "supplier_conflict"]
    assert conflict.data == {"reported": "failed", "final": "succeeded", "via": "callback"}
    assert conflict.actor_kind == "supplier"


async def test_late_accepted_callback_does_not_move_a_finished_order_back(supplier, ctx, clock):
    await queue(supplier, outcome="succeeded", delay_seconds=0, callback="none")
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    await jobs.run_due(ctx)
    clock.advance(seconds=15)
    await jobs.run_due(ctx)
    before = await state(ctx, order)
    assert before.order.status == "delivered"

    for status in ("accepted", "processing", "unconfirmed", "succeeded"):
        body = {
            "request_id": before.so.request_id,
            "supplier_order_no": before.so.supplier_order_no,
            "status": status,
            "message": "",
            "timestamp": 1,
        }
        body["sign"] = supplier_protocol.sign(body, SUPPLIER_SECRET)
        async with httpx.AsyncClient(base_url=supplier.url) as http:
            response = await http.post("/supplier/callback", json=body)
        assert response.status_code == 200 and response.json() == {"code": 0, "message": "duplicate"}
    after = await state(ctx, order)
    assert after.so.status == "succeeded" and after.order.status == "delivered"
    assert after.kinds == before.kinds


# 4. Failure and the automatic refund --------------------------------------------------------------


async def test_failed_recharge_is_refunded_automatically_through_the_gateway(supplier, ctx, clock):
    await queue(supplier, outcome="failed", delay_seconds=0, callback="normal", message="游戏账号不存在")
    product = await recharge_product(ctx)
    order = await make_order(ctx, product, inputs=UID)
    await pay_through_gateway(supplier, ctx, order)
    assert (await state(ctx, order)).order.status == "delivering"
    assert await jobs.run_due(ctx) == 1

    s = await eventually(ctx, order, lambda s: s.order.status == "refunded")
    assert s.so.status == "failed" and s.so.message == "游戏账号不存在"
    [refund] = s.refunds
    assert refund.idempotency_key == f"supplier-failed:{s.so.request_id}"
    assert refund.amount_fen == order.amount_fen == 1000 and refund.quantity == 1
    assert refund.status == "processing" and refund.actor_kind == "system"
    assert s.order.refunded_fen == 1000 and s.order.refunded_quantity == 1
    failed_at = s.kinds.index("supplier_failed")
    assert s.kinds[failed_at:] == ["supplier_failed", "refunded"]
    assert s.events[failed_at].reason == "游戏账号不存在"
    assert s.job("gateway_refund").status == "pending"

    # The refund job calls the gateway's api.php?act=refund over HTTP.
    assert await jobs.run_due(ctx) == 1
    s = await state(ctx, order)
    [refund] = s.refunds
    assert refund.status == "succeeded" and refund.gateway_response == "退款成功"
    assert s.kinds[-1] == "refund_succeeded" and s.events[-1].data["amount"] == 1000
    async with ctx.sessions() as session:
        trade = await session.scalar(
            select(DemoGatewayTrade).where(DemoGatewayTrade.out_trade_no == order.order_no)
        )
    assert trade.status == 1 and trade.refunded_money == "10.00"


async def test_failed_recharge_without_auto_refund_stays_delivery_failed(supplier, ctx, clock):
    await queue(supplier, outcome="failed", delay_seconds=0, callback="normal", message="游戏账号不存在")
    product = await recharge_product(ctx, auto_refund=False)
    order = await paid_recharge_order(ctx, product)
    await jobs.run_due(ctx)

    s = await eventually(ctx, order, lambda s: s.order.status == "delivery_failed")
    assert s.so.status == "failed" and s.refunds == []
    assert s.kinds[-1] == "supplier_failed" and "refunded" not in s.kinds
    assert [j.kind for j in s.jobs if j.kind == "gateway_refund"] == []


async def test_repeated_failed_callbacks_refund_once(supplier, ctx, clock):
    await queue(supplier, outcome="failed", delay_seconds=0, callback="repeat", extra_callbacks=["failed"])
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    await jobs.run_due(ctx)

    s = await eventually(ctx, order, lambda s: callbacks(s) == 4)
    # A poll after the fact says failed again: still the same single refund.
    clock.advance(seconds=suppliers.POLL_BACKOFF_SECONDS[0])
    await jobs.run_due(ctx)
    s = await state(ctx, order)
    assert s.order.status == "refunded"
    assert len(s.refunds) == 1 and s.order.refunded_fen == 1000
    assert s.kinds.count("supplier_failed") == 1 and s.kinds.count("refunded") == 1
    assert len([j for j in s.jobs if j.kind == "gateway_refund"]) == 1


async def test_simultaneous_duplicate_failed_callbacks_refund_once(supplier, ctx, clock):
    await queue(supplier, outcome="failed", delay_seconds=1000, callback="none")
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    await jobs.run_due(ctx)
    so = (await state(ctx, order)).so
    body = {
        "request_id": so.request_id,
        "supplier_order_no": so.supplier_order_no,
        "status": "failed",
        "message": "游戏账号不存在",
        "timestamp": 1,
    }
    body["sign"] = supplier_protocol.sign(body, SUPPLIER_SECRET)
    async with httpx.AsyncClient(base_url=supplier.url) as http:
        answers = await asyncio.gather(*(http.post("/supplier/callback", json=body) for _ in range(6)))
    assert sorted(a.json()["message"] for a in answers) == ["applied"] + ["duplicate"] * 5
    s = await state(ctx, order)
    assert s.order.status == "refunded" and len(s.refunds) == 1 and s.order.refunded_fen == 1000
    assert s.kinds.count("supplier_failed") == 1 and s.kinds.count("refunded") == 1


# 5. Re-submitting is idempotent -------------------------------------------------------------------


class WorkerCrashed(BaseException):
    """The worker process dies: not an Exception, so nothing after it runs (no job bookkeeping)."""


class CrashAfterSending(httpx.AsyncBaseTransport):
    """Delivers the request to the real supplier, then the worker dies before reading the answer."""

    def __init__(self):
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request):
        response = await self.inner.handle_async_request(request)
        await response.aread()
        raise WorkerCrashed()

    async def aclose(self):
        await self.inner.aclose()


async def test_resubmit_after_a_worker_crash_reuses_the_request_id(supplier, ctx, clock):
    await queue(supplier, outcome="succeeded", delay_seconds=1000, callback="none")
    await queue(supplier, outcome="failed", delay_seconds=0, callback="normal")  # would show a second order
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    real = ctx.supplier
    ctx.supplier = HttpSupplierAdapter(real.base_url, real.app_id, real.secret, transport=CrashAfterSending())
    with pytest.raises(WorkerCrashed):
        await jobs.run_due(ctx)
    s = await state(ctx, order)
    assert s.so.status == "submitted" and s.job("supplier_submit").status == "running"
    [remote] = await supplier_orders(ctx)
    assert remote.request_id == s.so.request_id

    # The restarted worker takes over the job once its lease has run out and submits again.
    ctx.supplier = real
    clock.advance(seconds=jobs.LEASE.total_seconds() + 1)
    await jobs.run_due(ctx)  # (with the order's payment re-query, due at the same time)
    s = await state(ctx, order)
    assert s.so.status == "accepted" and s.so.attempts == 2
    assert s.so.supplier_order_no == remote.supplier_order_no
    assert [r.request_id for r in await supplier_orders(ctx)] == [s.so.request_id]
    assert len(demo_supplier._queued) == 1, "the second scenario was not used: no second order"
    assert s.kinds.count("supplier_submitted") == 1
    assert s.job("supplier_submit").status == "done"


async def test_submitting_the_same_request_id_twice_is_one_supplier_order(supplier, ctx):
    adapter = ctx.supplier
    callback_url = f"{supplier.url}/supplier/callback"
    first = await adapter.submit("REQ-SAME-1", "G100", UID, callback_url)
    second = await adapter.submit("REQ-SAME-1", "G100", UID, callback_url)
    assert first.status == second.status == "accepted"
    assert first.supplier_order_no == second.supplier_order_no
    async with ctx.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(DemoSupplierOrder)) == 1


# 6. Supplier unreachable --------------------------------------------------------------------------


async def test_unreachable_supplier_is_retried_with_backoff_and_never_fails_the_order(supplier, ctx, clock):
    await queue(supplier, outcome="succeeded", delay_seconds=0, callback="none")
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    real = ctx.supplier
    closed = f"http://127.0.0.1:{free_port()}/demo-supplier"
    ctx.supplier = HttpSupplierAdapter(closed, real.app_id, real.secret, timeout=2)

    waits = []
    for attempt in (1, 2, 3):
        await jobs.run_due(ctx)
        s = await state(ctx, order)
        job = s.job("supplier_submit")
        assert job.status == "pending" and s.so.attempts == attempt
        assert "supplier unreachable" in job.last_error
        assert s.order.status == "delivering" and s.so.status == "submitted"
        assert s.refunds == [] and "supplier_failed" not in s.kinds
        waits.append(job.run_at - clock.now())
        assert await jobs.run_due(ctx) == 0
        clock.set(job.run_at)
    assert waits[0] < waits[1] < waits[2]
    assert await supplier_orders(ctx) == []

    # The supplier comes back: the same request id goes through.
    ctx.supplier = real
    await jobs.run_due(ctx)
    s = await state(ctx, order)
    assert s.so.status == "accepted" and s.job("supplier_submit").status == "done"
    assert s.kinds.count("supplier_submitted") == 1

    # Unreachable while polling: the poll keeps its schedule and nothing fails.
    ctx.supplier = HttpSupplierAdapter(closed, real.app_id, real.secret, timeout=2)
    clock.advance(seconds=suppliers.POLL_BACKOFF_SECONDS[0])
    await jobs.run_due(ctx)
    s = await state(ctx, order)
    assert s.order.status == "delivering" and s.so.status == "accepted"
    assert s.job("supplier_poll").status == "pending" and s.job("supplier_poll").payload["round"] == 1
    ctx.supplier = real
    clock.advance(seconds=suppliers.POLL_BACKOFF_SECONDS[1])
    await jobs.run_due(ctx)
    assert (await state(ctx, order)).order.status == "delivered"


async def test_a_supplier_refusing_our_request_is_not_a_recharge_failure(supplier, ctx, clock):
    """An error answer (here: our signature rejected after a secret mix-up) says nothing about the
    recharge. Treating it as `failed` would refund an order the supplier may still deliver."""
    await queue(supplier, outcome="succeeded", delay_seconds=100, callback="none")
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    real = ctx.supplier
    misconfigured = HttpSupplierAdapter(real.base_url, real.app_id, "rotated-on-one-side-only")
    ctx.supplier = misconfigured
    await jobs.run_due(ctx)  # submit refused with 401
    s = await state(ctx, order)
    assert s.order.status == "delivering" and s.so.status == "submitted" and s.refunds == []
    assert "supplier_failed" not in s.kinds

    ctx.supplier = real
    clock.advance(hours=1)
    await jobs.run_due(ctx)
    assert (await state(ctx, order)).so.status == "accepted"
    ctx.supplier = misconfigured
    clock.advance(seconds=suppliers.POLL_BACKOFF_SECONDS[0])
    await jobs.run_due(ctx)  # status query refused with 401
    s = await state(ctx, order)
    assert s.order.status == "delivering" and s.so.status == "accepted" and s.refunds == []
    assert s.job("supplier_poll").status == "pending"

    ctx.supplier = real
    clock.advance(seconds=200)
    await jobs.run_due(ctx)
    s = await state(ctx, order)
    assert s.order.status == "delivered" and s.refunds == []


async def test_a_supplier_down_for_days_leaves_the_order_delivering_for_staff(supplier, ctx, clock):
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    closed = f"http://127.0.0.1:{free_port()}/demo-supplier"
    ctx.supplier = HttpSupplierAdapter(closed, "test", SUPPLIER_SECRET, timeout=2)
    for _ in range(jobs.MAX_ATTEMPTS + 2):
        await jobs.run_due(ctx)
        clock.set((await state(ctx, order)).job("supplier_submit").run_at)
    assert (await state(ctx, order)).job("supplier_submit").status == "pending"
    clock.advance(hours=48)
    await jobs.run_due(ctx)
    s = await state(ctx, order)
    # Far more tries than the job's own MAX_ATTEMPTS, for as long as we would poll, and then a note.
    assert s.so.attempts > jobs.MAX_ATTEMPTS
    assert s.job("supplier_submit").status == "done"
    assert s.order.status == "delivering" and s.so.status == "submitted" and s.refunds == []
    assert s.kinds[-1] == "supplier_gave_up" and s.events[-1].data["stage"] == "submit"
    assert s.kinds.count("supplier_submitted") == 1


async def test_polling_gives_up_after_two_days_without_failing_the_order(supplier, ctx, clock):
    await queue(supplier, outcome="succeeded", delay_seconds=10 * 86400, callback="none")
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    await jobs.run_due(ctx)
    for hours in (1, 46, 1):  # rounds missed while the clock jumps are not replayed
        clock.advance(hours=hours)
        await jobs.run_due(ctx)
        assert (await state(ctx, order)).job("supplier_poll").status == "pending"
    clock.advance(hours=1)
    await jobs.run_due(ctx)
    s = await state(ctx, order)
    assert s.job("supplier_poll").status == "done"
    assert s.order.status == "delivering" and s.so.status == "accepted" and s.refunds == []
    assert all(e["status"] == "processing" for e in s.so.log[1:])
    assert s.kinds[-1] == "supplier_gave_up" and s.events[-1].data["stage"] == "poll"


# 7. Forged callbacks ------------------------------------------------------------------------------


async def test_forged_callbacks_are_refused_and_change_nothing(supplier, ctx, clock):
    await queue(supplier, outcome="succeeded", delay_seconds=1000, callback="none")
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    await jobs.run_due(ctx)
    before = await state(ctx, order)
    assert before.so.status == "accepted"

    genuine = {
        "request_id": before.so.request_id,
        "supplier_order_no": before.so.supplier_order_no,
        "status": "failed",
        "message": "",
        "timestamp": 1,
    }
    wrong_key = {**genuine, "sign": supplier_protocol.sign(genuine, "not-the-secret")}
    tampered = {**genuine, "sign": supplier_protocol.sign(genuine, SUPPLIER_SECRET), "status": "succeeded"}
    unsigned = dict(genuine)
    unknown = {**genuine, "request_id": "NO-SUCH-ORDER-1"}
    unknown["sign"] = supplier_protocol.sign(unknown, SUPPLIER_SECRET)
    bad_status = {**genuine, "status": "refunded"}
    bad_status["sign"] = supplier_protocol.sign(bad_status, SUPPLIER_SECRET)
    async with httpx.AsyncClient(base_url=supplier.url) as http:
        for body in (wrong_key, tampered, unsigned, unknown, bad_status, ["not", "an", "object"]):
            response = await http.post("/supplier/callback", json=body)
            assert response.status_code == 400, body
        response = await http.post(
            "/supplier/callback",
            content=b"status=succeeded",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 400

    after = await state(ctx, order)
    assert after.order.status == "delivering" and after.order.version == before.order.version
    assert after.so.status == "accepted" and after.so.log == before.so.log
    assert after.kinds == before.kinds and after.refunds == []


async def test_a_status_query_signed_for_another_request_is_refused(supplier, ctx):
    await queue(supplier, outcome="succeeded", delay_seconds=1000, callback="none")
    await ctx.supplier.submit("REQ-A-1", "G100", UID, f"{supplier.url}/supplier/callback")
    params = {"request_id": "REQ-B-1", "app_id": "test", "timestamp": 1}
    params["sign"] = supplier_protocol.sign(params, SUPPLIER_SECRET)
    async with httpx.AsyncClient(base_url=supplier.url) as http:
        refused = await http.get("/demo-supplier/api/orders/REQ-A-1", params=params)
        assert refused.status_code == 401
        answered = await http.get(
            "/demo-supplier/api/orders/REQ-A-1",
            params={
                **params,
                "request_id": "REQ-A-1",
                "sign": supplier_protocol.sign({**params, "request_id": "REQ-A-1"}, SUPPLIER_SECRET),
            },
        )
        assert answered.json()["status"] == "processing"


# Staff settle what the supplier never answered ---------------------------------------------------


async def test_staff_settle_a_recharge_the_supplier_never_answered(supplier, ctx, clock, client):
    from zaima.db import unit_of_work
    from zaima.staff import create_staff

    async with unit_of_work(ctx.sessions) as session:
        await create_staff(session, ctx.clock, "sup", "supervisor-pass", "supervisor")
    await queue(supplier, outcome="succeeded", delay_seconds=10 * 86400, callback="none")
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    await jobs.run_due(ctx)
    url = f"/api/v1/admin/orders/{order.order_no}/settle-recharge"
    bad = await client.post(url, json={"result": "maybe", "note": "x"}, auth=("sup", "supervisor-pass"))
    assert bad.status_code == 422 and (await state(ctx, order)).order.status == "delivering"
    answer = await client.post(url, json={"result": "failed", "note": "供应商客服确认未到账"},
                               auth=("sup", "supervisor-pass"))
    assert answer.status_code == 200, answer.text
    s = await state(ctx, order)
    # Failed by staff's word: the order is refunded like any failed recharge, and the agent is on record.
    assert s.order.status == "refunded" and len(s.refunds) == 1
    failed = [e for e in s.events if e.kind == "supplier_failed"][0]
    assert (failed.actor_kind, failed.actor_id, failed.data["via"]) == ("agent", "sup", "agent")
    again = await client.post(url, json={"result": "succeeded", "note": "x"}, auth=("sup", "supervisor-pass"))
    assert again.status_code == 409 and (await state(ctx, order)).order.status == "refunded"


async def test_a_genuine_callback_is_applied_whatever_its_text_holds(supplier, ctx, clock):
    """A supplier's message with a NUL, or its order number sent as a JSON number or longer than our column,
    is stored as it fits: refusing it (PostgreSQL text cannot hold NUL) left the recharge unsettled."""
    await queue(supplier, outcome="failed", delay_seconds=1000, callback="none")
    product = await recharge_product(ctx)
    order = await paid_recharge_order(ctx, product)
    await jobs.run_due(ctx)
    so = (await state(ctx, order)).so
    async with unit_of_work(ctx.sessions) as session:  # as if the supplier had not named its order on submit
        (await session.get(SupplierOrder, so.id)).supplier_order_no = None
    body = {"request_id": so.request_id, "supplier_order_no": 880012345, "status": "failed",
            "message": "账号不存在\x00", "timestamp": 1}
    body["sign"] = supplier_protocol.sign(body, SUPPLIER_SECRET)
    async with httpx.AsyncClient(base_url=supplier.url) as http:
        answer = await http.post("/supplier/callback", json=body)
    assert answer.json()["message"] == "applied", answer.text
    s = await state(ctx, order)
    assert s.order.status == "refunded" and s.so.status == "failed"
    assert s.so.supplier_order_no == "880012345" and s.so.message == "账号不存在\\x00"
