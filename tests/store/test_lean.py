"""Units of work on the driver (zaima.sql.Tx, zaima.db.lean_unit), on SQLite and PostgreSQL: the order hot
paths' transactions. They commit what they wrote and nothing else, a failure or a cancellation leaves
neither half a change nor a connection inside a transaction in the pool, and code that needs the ORM after
all runs again, whole, in a session."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.util import greenlet_spawn

from tests.store.helpers import add_stock, make_order, make_product, notify_params
from zaima import sql
from zaima.core.audit import SYSTEM
from zaima.core.errors import Conflict
from zaima.db import lean_unit, on_commit, read, transact, unit_of_work
from zaima.models import CardKey, Order, OrderEvent, Payment
from zaima.store import api, orders, payments, timeline
from zaima.store.expiry import expire_order_job
from zaima.store.schemas import OrderCreate


async def _kinds(ctx, order_id: int) -> list[str]:
    async with unit_of_work(ctx.sessions) as session:
        return list(await session.scalars(select(OrderEvent.kind).where(OrderEvent.order_id == order_id)
                                          .order_by(OrderEvent.id)))


def _on_postgresql(ctx) -> bool:
    return ctx.engine.dialect.name == "postgresql"


async def _connection_left_in_transaction(ctx) -> bool:
    """Whether a connection the pool holds is inside a transaction (none ever may be): on SQLite, the pool's
    one connection; on PostgreSQL, any session of the test database idle in a transaction."""
    raw = await ctx.engine.raw_connection()
    try:
        if ctx.engine.dialect.name == "sqlite":
            return raw.driver_connection._conn.in_transaction
        return await raw.driver_connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%'") > 0
    finally:
        await greenlet_spawn(raw.close)


async def test_a_lean_unit_commits_its_writes_and_runs_its_after_commit_callbacks_once(ctx):
    product = await make_product(ctx, sku="lean-commit")
    order = await make_order(ctx, product)
    seen, called = [], []

    async def work(session):
        seen.append(type(session))
        await timeline.record(session, order, "paid", SYSTEM, ctx.clock.now())  # queued
        assert [e.kind for e in await timeline.events_for(session, order.id)][-1] == "paid"  # read back in the unit
        await timeline.record(session, order, "delivered", SYSTEM, ctx.clock.now())  # queued until the commit
        on_commit(session, lambda: called.append("after"))
        return "done"

    assert await transact(ctx.sessions, work, lean=True) == "done"
    assert seen == [sql.Tx]  # it ran on the driver, not in a session
    assert (await _kinds(ctx, order.id))[-2:] == ["paid", "delivered"] and called == ["after"]


async def test_a_failed_lean_unit_writes_nothing_and_leaves_no_transaction_on_the_connection(ctx):
    product = await make_product(ctx, sku="lean-fail")
    order = await make_order(ctx, product)
    called = []
    with pytest.raises(RuntimeError):
        async with lean_unit(ctx.sessions) as tx:
            await timeline.record(tx, order, "paid", SYSTEM, ctx.clock.now())
            await timeline.events_for(tx, order.id)  # the write is sent, inside the transaction
            await timeline.record(tx, order, "delivered", SYSTEM, ctx.clock.now())  # queued
            on_commit(tx, lambda: called.append("after"))
            raise RuntimeError("the request failed half-way")
    assert not await _connection_left_in_transaction(ctx)
    kinds = await _kinds(ctx, order.id)
    assert "paid" not in kinds and "delivered" not in kinds and called == []
    # The next unit (on SQLite the very same connection) commits only its own write.
    async with lean_unit(ctx.sessions) as tx:
        await timeline.record(tx, order, "expired", SYSTEM, ctx.clock.now())
    assert (await _kinds(ctx, order.id))[-1] == "expired" and "paid" not in await _kinds(ctx, order.id)


async def test_code_that_needs_the_orm_runs_again_whole_in_a_session(ctx):
    product = await make_product(ctx, sku="lean-escalate")
    order = await make_order(ctx, product)
    runs = []

    async def work(session):
        runs.append(type(session))
        await timeline.record(session, order, "payment_checked", SYSTEM, ctx.clock.now())
        await timeline.events_for(session, order.id)  # sent: the lean attempt has really written it
        loaded = await session.get(Order, order.id)  # the ORM: only a session has it
        return loaded.order_no

    assert await transact(ctx.sessions, work, lean=True) == order.order_no
    assert runs[0] is sql.Tx and runs[1:] == [AsyncSession]
    # The first attempt's write was rolled back with it: the entry is there once, from the session's run.
    assert (await _kinds(ctx, order.id)).count("payment_checked") == 1
    assert not await _connection_left_in_transaction(ctx)


async def test_a_lean_read_that_needs_the_orm_is_answered_from_a_session(ctx):
    product = await make_product(ctx, sku="lean-read")
    order = await make_order(ctx, product)
    runs = []

    async def view(session):
        runs.append(type(session))
        return (await session.get(Order, order.id)).status

    assert await read(ctx.sessions, view, lean=True) == "pending_payment"
    assert runs == [sql.Tx, AsyncSession]


async def test_a_write_in_a_lean_read_is_not_lost(ctx):
    """A read-only lean unit on PostgreSQL runs without BEGIN (autocommit): a write there goes out at once.
    On SQLite it is a normal transaction, committed at its end."""
    product = await make_product(ctx, sku="lean-read-write")
    order = await make_order(ctx, product)
    async with lean_unit(ctx.sessions, read_only=True) as tx:
        assert tx.driver.autocommit is _on_postgresql(ctx)
        await timeline.record(tx, order, "keys_revealed", SYSTEM, ctx.clock.now())
    assert (await _kinds(ctx, order.id))[-1] == "keys_revealed"


async def _cancelled_after_a_write(ctx, sku: str, wait) -> object:
    """An order, and a lean unit that wrote on its timeline (sent, inside the transaction) and was then
    cancelled while in `wait(tx)`."""
    product = await make_product(ctx, sku=sku)
    order = await make_order(ctx, product)
    waiting = asyncio.Event()

    async def request():
        async with lean_unit(ctx.sessions) as tx:
            await timeline.record(tx, order, "paid", SYSTEM, ctx.clock.now())
            await timeline.events_for(tx, order.id)
            waiting.set()
            await wait(tx)

    task = asyncio.create_task(request())
    await waiting.wait()
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return order


async def test_a_lean_unit_cancelled_while_waiting_rolls_back_and_the_pool_still_serves(ctx):
    # e.g. waiting on something else when the server shuts down
    order = await _cancelled_after_a_write(ctx, "lean-cancel-idle", lambda tx: asyncio.sleep(30))
    assert not await _connection_left_in_transaction(ctx)
    assert "paid" not in await _kinds(ctx, order.id)


async def test_a_lean_unit_cancelled_inside_a_statement_rolls_back_and_the_pool_still_serves(ctx):
    """Cancelled while PostgreSQL runs its statement (the connection is mid-protocol, inside the transaction):
    nothing is committed and no connection is left inside a transaction."""
    if not _on_postgresql(ctx):
        pytest.skip("a SQLite statement runs inline: it cannot be cancelled half-way")
    order = await _cancelled_after_a_write(ctx, "lean-cancel-busy",
                                           lambda tx: sql.fetch(tx, sql.Prepared(select(func.pg_sleep(5)))))
    assert not await _connection_left_in_transaction(ctx)
    assert "paid" not in await _kinds(ctx, order.id)
    async with lean_unit(ctx.sessions) as tx:
        await timeline.record(tx, order, "expired", SYSTEM, ctx.clock.now())
    assert (await _kinds(ctx, order.id))[-1] == "expired"


async def test_a_lean_unit_whose_connection_dies_fails_cleanly_and_the_next_gets_a_new_one(ctx):
    """The database ended the connection mid-unit (a restart, an idle timeout): the unit fails with
    SQLAlchemy's disconnect error, writes nothing, and later units work on a fresh connection."""
    if not _on_postgresql(ctx):
        pytest.skip("an embedded SQLite connection cannot be ended from outside")
    product = await make_product(ctx, sku="lean-dies")
    order = await make_order(ctx, product)
    with pytest.raises(DBAPIError) as caught:
        async with lean_unit(ctx.sessions) as tx:
            await timeline.record(tx, order, "paid", SYSTEM, ctx.clock.now())
            await timeline.events_for(tx, order.id)
            async with unit_of_work(ctx.sessions) as other:  # another connection ends this one's backend
                await other.execute(select(func.pg_terminate_backend(tx.driver.raw.get_server_pid())))
            await timeline.events_for(tx, order.id)
    assert caught.value.connection_invalidated
    assert "paid" not in await _kinds(ctx, order.id)
    for _ in range(3):  # whichever pooled connection comes next
        async with lean_unit(ctx.sessions) as tx:
            await timeline.record(tx, order, "expired", SYSTEM, ctx.clock.now())
    assert (await _kinds(ctx, order.id))[-3:] == ["expired"] * 3


@pytest.fixture
def sent(monkeypatch):
    """The statements asyncpg sends to PostgreSQL from here on, in order: one per round trip."""
    import asyncpg

    texts: list[str] = []
    for name in ("fetch", "execute"):
        async def recording(self, query, *args, _original=getattr(asyncpg.Connection, name), **kwargs):
            texts.append(query.split(None, 1)[0] + (" zaima_expect_counts" if "zaima_expect_counts" in query else ""))
            return await _original(self, query, *args, **kwargs)
        monkeypatch.setattr(asyncpg.Connection, name, recording)
    return texts


async def _events(ctx, order_id: int) -> list[tuple[str, dict]]:
    async with unit_of_work(ctx.sessions) as session:
        return [(e.kind, e.data) for e in await session.scalars(
            select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id))]


async def _checkout(ctx, sku: str, quantity: int = 1):
    body = OrderCreate(sku=sku, quantity=quantity, contact="lean@example.com")
    order, _links = await api.place_order(ctx, body, "127.0.0.1")
    return order


async def test_on_postgresql_a_sale_is_two_statements_to_create_and_one_to_pay(ctx, sent):
    """No BEGIN and no COMMIT: a read, then all of the unit's writes as one statement that checks its own row
    counts; the payment of the order the process just created needs no read. The sale is whole: keys reserved
    then sold, timeline in order, jobs queued then cancelled."""
    if not _on_postgresql(ctx):
        pytest.skip("SQLite has no round trips to save")
    product = await make_product(ctx, sku="lean-sale", max_quantity=5)
    await add_stock(ctx, product, ["LS-1", "LS-2", "LS-3"])
    sent.clear()
    order = await _checkout(ctx, "lean-sale", quantity=2)
    assert sent == ["SELECT", "WITH zaima_expect_counts"]
    sent.clear()
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    assert sent == ["WITH zaima_expect_counts"]
    sent.clear()
    assert await payments.handle_notify(ctx, notify_params(order)) == "duplicate"  # read: the process kept it once
    assert sent[0] == "SELECT"
    async with unit_of_work(ctx.sessions) as session:
        fresh = await session.get(Order, order.id)
        keys = list(await session.scalars(select(CardKey).where(CardKey.product_id == product.id)))
    assert fresh.status == "delivered" and fresh.delivered_quantity == 2
    assert sorted((k.status, k.order_id) for k in keys) == [("available", None), ("sold", order.id), ("sold", order.id)]
    # The notify's two entries went out as one two-row INSERT, in the order they were made.
    assert [kind for kind, _ in await _events(ctx, order.id)] == ["created", "stock_reserved", "paid", "delivered"]


async def test_a_checkout_that_stock_does_not_cover_is_refused_whole_or_reserves_what_there_is(ctx):
    """The lean checkout assumes the stock covers the order (PostgreSQL); where it does not, nothing of that
    attempt stays, and the checkout decides again knowing how many keys it got."""
    strict = await make_product(ctx, sku="lean-short", allow_backorder=False, max_quantity=5)
    await add_stock(ctx, strict, ["SH-1", "SH-2"])
    with pytest.raises(Conflict) as refused:
        await _checkout(ctx, "lean-short", quantity=3)
    assert refused.value.message_zh == "库存不足，请减少数量或稍后再来"
    async with unit_of_work(ctx.sessions) as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 0
        assert set(await session.scalars(select(CardKey.status).where(CardKey.product_id == strict.id))) == {
            "available"}

    lenient = await make_product(ctx, sku="lean-backorder", allow_backorder=True, max_quantity=5)
    await add_stock(ctx, lenient, ["BO-1", "BO-2"])
    order = await _checkout(ctx, "lean-backorder", quantity=3)
    assert (await _events(ctx, order.id))[1] == ("stock_reserved", {"quantity": 2})
    async with unit_of_work(ctx.sessions) as session:
        assert list(await session.scalars(select(CardKey.order_id).where(CardKey.product_id == lenient.id))) == [
            order.id, order.id]
    # Its payment finds only two reservations for three keys: delivered in part, the rest awaited.
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    async with unit_of_work(ctx.sessions) as session:
        fresh = await session.get(Order, order.id)
    assert (fresh.status, fresh.delivered_quantity) == ("awaiting_stock", 2)


async def test_a_unit_whose_guarded_write_misses_writes_nothing(ctx):
    """The order changed after the unit read it: its writes, sent together at the commit, all fail."""
    product = await make_product(ctx, sku="lean-stale")
    order = await make_order(ctx, product)
    async with lean_unit(ctx.sessions) as tx:
        stale, _ = await orders.order_and_product(tx, order.order_no)
    async with lean_unit(ctx.sessions) as tx:
        fresh, _ = await orders.order_and_product(tx, order.order_no)
        await orders.claim(tx, fresh)
    with pytest.raises(StaleDataError):
        async with lean_unit(ctx.sessions) as tx:
            await timeline.record(tx, stale, "paid", SYSTEM, ctx.clock.now())
            await orders.claim(tx, stale)
    assert "paid" not in await _kinds(ctx, order.id)
    assert not await _connection_left_in_transaction(ctx)


async def test_a_lean_unit_cancelled_in_a_read_before_it_began_leaves_the_pool_serving(ctx):
    """On PostgreSQL a unit's reads go out before its BEGIN; cancelled inside one, the connection (still
    mid-statement) is not lent out again."""
    if not _on_postgresql(ctx):
        pytest.skip("a SQLite statement runs inline: it cannot be cancelled half-way")
    product = await make_product(ctx, sku="lean-cancel-read")
    order = await make_order(ctx, product)
    started = asyncio.Event()

    async def request():
        async with lean_unit(ctx.sessions) as tx:
            started.set()
            await sql.fetch(tx, sql.Prepared(select(func.pg_sleep(5))))

    task = asyncio.create_task(request())
    await started.wait()
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(3):
        async with lean_unit(ctx.sessions) as tx:
            await timeline.record(tx, order, "expired", SYSTEM, ctx.clock.now())
    assert (await _kinds(ctx, order.id))[-3:] == ["expired"] * 3


async def test_on_postgresql_a_checkout_of_a_product_just_sold_is_one_statement(ctx, sent, monkeypatch):
    """The process keeps the product and a block of order ids: the checkout sends only its writes, which check
    that the product still sells as kept."""
    if not _on_postgresql(ctx):
        pytest.skip("SQLite has no round trips to save")
    monkeypatch.setattr(orders, "CHECKOUT_CACHE_SECONDS", 60.0)  # (time.monotonic: immune to the test clock)
    product = await make_product(ctx, sku="lean-kept", max_quantity=5)
    await add_stock(ctx, product, [f"KP-{i}" for i in range(6)])
    placed = [await _checkout(ctx, "lean-kept")]  # reads the product
    sent.clear()
    placed.append(await _checkout(ctx, "lean-kept"))  # draws a block of order ids
    assert sent == ["SELECT", "WITH zaima_expect_counts"]
    sent.clear()
    placed.append(await _checkout(ctx, "lean-kept", quantity=2))
    assert sent == ["WITH zaima_expect_counts"]
    async with unit_of_work(ctx.sessions) as session:
        stored = {o.id: o for o in await session.scalars(select(Order).where(Order.product_id == product.id))}
        keys = list(await session.scalars(select(CardKey).where(CardKey.order_id.is_not(None))))
    assert sorted(stored) == sorted(o.id for o in placed) and len(set(stored)) == 3
    assert [stored[o.id].amount_fen for o in placed] == [3000, 3000, 6000]
    assert sorted(k.order_id for k in keys) == sorted([placed[0].id, placed[1].id, placed[2].id, placed[2].id])


async def test_a_checkout_sees_a_price_change_and_a_withdrawal_at_once(ctx, monkeypatch):
    """However the process keeps products between checkouts, the next checkout after a change uses the new price,
    and a product taken off sale is refused."""
    monkeypatch.setattr(orders, "CHECKOUT_CACHE_SECONDS", 60.0)
    product = await make_product(ctx, sku="lean-reprice", price_fen=3000)
    await add_stock(ctx, product, ["RP-1", "RP-2", "RP-3"])
    first = await _checkout(ctx, "lean-reprice")
    async with unit_of_work(ctx.sessions) as session:  # another process's admin, say
        (await session.get(type(product), product.id)).price_fen = 2500
    second = await _checkout(ctx, "lean-reprice")
    assert (first.amount_fen, second.amount_fen) == (3000, 2500)
    async with unit_of_work(ctx.sessions) as session:
        assert (await session.get(Order, second.id)).amount_fen == 2500
        (await session.get(type(product), product.id)).active = False
    with pytest.raises(orders.ProductNotFound):
        await _checkout(ctx, "lean-reprice")
    async with unit_of_work(ctx.sessions) as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 2


async def test_the_payment_of_an_order_changed_since_its_checkout_sees_the_change(ctx):
    """The process keeps the orders it created for their payment; one changed meanwhile by someone else (here it
    expired, its key went back to stock and was sold to the next buyer) is paid as it is now: late, from stock."""
    product = await make_product(ctx, sku="lean-late")
    await add_stock(ctx, product, ["LL-1", "LL-2"])
    order = await _checkout(ctx, "lean-late")
    ctx.clock.advance(minutes=ctx.settings.order_ttl_minutes + 1)
    await expire_order_job(ctx, {"order_id": order.id})
    taker = await _checkout(ctx, "lean-late")  # the key the order had reserved
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    assert await payments.handle_notify(ctx, notify_params(order)) == "duplicate"
    async with unit_of_work(ctx.sessions) as session:
        fresh = await session.get(Order, order.id)
        keys = {k.fingerprint: (k.status, k.order_id) for k in await session.scalars(
            select(CardKey).where(CardKey.product_id == product.id))}
    assert (fresh.status, fresh.delivered_quantity) == ("delivered", 1)
    assert sorted(keys.values()) == sorted([("reserved", taker.id), ("sold", order.id)])
    assert (await _kinds(ctx, order.id))[-3:] == ["stock_released", "late_payment", "delivered"]


async def test_a_rejected_notify_of_a_kept_order_changes_nothing_and_the_right_one_still_pays(ctx):
    product = await make_product(ctx, sku="lean-wrong")
    await add_stock(ctx, product, ["LW-1"])
    order = await _checkout(ctx, "lean-wrong")
    assert await payments.handle_notify(ctx, notify_params(order, money="0.01")) == "rejected"
    assert await payments.handle_notify(ctx, notify_params(order, key="not-the-key")) == "rejected"
    assert (await _kinds(ctx, order.id)) == ["created", "stock_reserved"]
    assert await payments.handle_notify(ctx, notify_params(order)) == "accepted"
    assert (await _kinds(ctx, order.id))[-2:] == ["paid", "delivered"]


async def test_five_concurrent_notifies_of_a_kept_order_are_one_payment_and_one_delivery(ctx):
    """The first notify takes the kept order; the others read it, and the order's version and the payment's unique
    key leave one payment, one sale of each key, one delivery."""
    product = await make_product(ctx, sku="lean-five", max_quantity=5)
    await add_stock(ctx, product, [f"LF-{i}" for i in range(4)])
    order = await _checkout(ctx, "lean-five", quantity=2)
    verdicts = await asyncio.gather(*(payments.handle_notify(ctx, notify_params(order)) for _ in range(5)))
    assert sorted(verdicts) == ["accepted"] + ["duplicate"] * 4
    async with unit_of_work(ctx.sessions) as session:
        fresh = await session.get(Order, order.id)
        sold = list(await session.scalars(select(CardKey.order_id).where(CardKey.status == "sold")))
        payments_made = await session.scalar(select(func.count()).select_from(Payment).where(Payment.order_id == order.id))
    assert (fresh.status, fresh.delivered_quantity, sold, payments_made) == ("delivered", 2, [order.id] * 2, 1)
    assert (await _kinds(ctx, order.id)).count("delivered") == 1
