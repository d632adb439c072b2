"""The order hot paths' statement layer (zaima.sql) on SQLite and PostgreSQL: what it stores is what the ORM
would store and read back, driver errors reach `transact` as SQLAlchemy's (so races are retried), and a
stale order write changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from tests.store.helpers import add_stock, make_order, make_product
from zaima import sql
from zaima.core.audit import SYSTEM
from zaima.db import unit_of_work
from zaima.models import Order, OrderEvent, Payment, Product
from zaima.store import orders, timeline


async def test_rows_written_on_the_driver_read_back_through_the_orm_as_written(ctx):
    product = await make_product(ctx, sku="sql-rows")
    order = await make_order(ctx, product)
    at = datetime(2026, 11, 26, 3, 4, 5, 678901, tzinfo=UTC)
    async with unit_of_work(ctx.sessions) as session:
        await timeline.record(session, order, "paid", SYSTEM, at, trade_no="T-1", amount=3000, via="notify")
        row = (await sql.fetch(session, timeline._EVENTS_FOR, for_order=order.id))[-1]
    async with unit_of_work(ctx.sessions) as session:
        event = (await session.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id)
                                        .order_by(OrderEvent.id.desc()).limit(1))).one()
        stored = await session.get(Order, order.id)
    # Time zone-aware UTC to the microsecond, JSON as a dict, the column default for `reason` applied.
    assert event.at == at and event.data == {"trade_no": "T-1", "amount": 3000, "via": "notify"}
    assert event.reason == "" and event.actor_kind == "system"
    # The driver read gives the same values as the ORM.
    assert timeline.OrderEventRow.of(row).at == at and timeline.OrderEventRow.of(row).data == event.data
    # The order inserted on the driver is a normal ORM row, with the model's defaults.
    assert stored.order_no == order.order_no and stored.status == "pending_payment" and stored.version == 1
    assert stored.recharge_inputs == {} and stored.delivered_quantity == 0 and stored.created_at.tzinfo is not None


async def test_a_product_row_has_the_models_values_and_properties(ctx):
    await make_product(ctx, sku="sql-product", allow_backorder=False)
    async with unit_of_work(ctx.sessions) as session:
        row, _ = await orders.product_for_checkout(session, "sql-product")
        model = await session.scalar(select(Product).where(Product.sku == "sql-product"))
    assert row.allow_backorder is False and row.active is True and row.is_stocked is True
    assert (row.id, row.price_fen, row.input_fields, row.created_at) == (model.id, model.price_fen, model.input_fields,
                                                                          model.created_at)


async def _paid_order(ctx, sku: str):
    """A product, an order of it, and the payment row stored for the order (to be inserted again)."""
    product = await make_product(ctx, sku=sku)
    order = await make_order(ctx, product)
    payment = dict(order_id=order.id, provider="epay", out_trade_no=order.order_no, trade_no="T-9", amount_fen=3000,
                   received_via="notify", created_at=ctx.clock.now())
    async with unit_of_work(ctx.sessions) as session:
        await sql.defer_rows(session, Payment.__table__, [payment])
    return product, order, payment


async def test_a_unique_violation_on_the_driver_is_sqlalchemys_integrity_error_and_is_rolled_back(ctx):
    _, order, payment = await _paid_order(ctx, "sql-unique")
    with pytest.raises(IntegrityError):  # what zaima.db.transact retries into the duplicate branch
        async with unit_of_work(ctx.sessions) as session:
            await timeline.record(session, order, "paid", SYSTEM, ctx.clock.now())
            await sql.defer_rows(session, Payment.__table__, [payment])
    async with unit_of_work(ctx.sessions) as session:
        payments = list(await session.scalars(select(Payment).where(Payment.order_id == order.id)))
        kinds = [e.kind for e in await timeline.events_for(session, order.id)]
    assert len(payments) == 1 and "paid" not in kinds  # the failed transaction left nothing behind


async def test_saving_an_order_row_that_changed_meanwhile_fails_and_changes_nothing(ctx):
    product = await make_product(ctx, sku="sql-stale")
    placed = await make_order(ctx, product)
    async with unit_of_work(ctx.sessions) as session:
        mine, _ = await orders.order_and_product(session, placed.order_no)
    async with unit_of_work(ctx.sessions) as session:  # another writer gets there first
        theirs, _ = await orders.order_and_product(session, placed.order_no)
        theirs.status = "expired"
        await orders.save(session, theirs)
    assert theirs.version == 2 and theirs.changes() == {}
    with pytest.raises(StaleDataError):
        async with unit_of_work(ctx.sessions) as session:
            mine.status, mine.paid_at = "paid", ctx.clock.now()
            await orders.save(session, mine)
    async with unit_of_work(ctx.sessions) as session:
        stored = await session.get(Order, placed.id)
    assert (stored.status, stored.paid_at, stored.version) == ("expired", None, 2)


async def test_only_the_changed_columns_are_written(ctx):
    product = await make_product(ctx, sku="sql-changes")
    placed = await make_order(ctx, product)
    async with unit_of_work(ctx.sessions) as session:
        row, _ = await orders.order_and_product(session, placed.order_no)
        later = ctx.clock.now() + timedelta(minutes=1)
        row.status, row.paid_at = "paid", later
        assert row.changes() == {"status": "paid", "paid_at": later}
        await orders.save(session, row)
    async with unit_of_work(ctx.sessions) as session:
        stored = await session.get(Order, placed.id)
    assert (stored.status, stored.paid_at, stored.version, stored.amount_fen) == ("paid", later, 2, 3000)


def test_a_statement_with_an_in_list_is_refused_when_compiled():
    from sqlalchemy.dialects.sqlite import aiosqlite

    prepared = sql.Prepared(select(Order.id).where(Order.status.in_(bindparam("states", expanding=True))))
    with pytest.raises(ValueError, match="IN-lists"):
        prepared.compiled(aiosqlite.dialect())


async def test_cancelling_no_jobs_and_asking_for_no_key_states_touch_nothing(ctx):
    """An empty list of keys or states is nothing, not everything (an empty OR matches every row)."""
    from zaima.jobs import cancel
    from zaima.models import Job
    from zaima.store import stock

    product = await make_product(ctx, sku="sql-empty")
    await add_stock(ctx, product, ["EMPTY-KEY-1"])
    order = await make_order(ctx, product)  # queues its expiry and payment re-query
    async with unit_of_work(ctx.sessions) as session:
        await cancel(session)
        assert await stock.keys_of_order(session, order.id, ()) == []
    async with unit_of_work(ctx.sessions) as session:
        pending = list(await session.scalars(select(Job.dedupe_key).where(Job.status == "pending")))
    assert sorted(pending) == [f"expire:{order.id}", f"requery:{order.id}"]


# --- write-behind (sql.defer): queued writes behave as if they had been sent at once ---------------------


async def _kinds(ctx, order_id: int) -> list[str]:
    async with unit_of_work(ctx.sessions) as session:
        return [e.kind for e in await timeline.events_for(session, order_id)]


async def test_queued_writes_are_seen_by_every_later_read_in_the_transaction_and_committed_with_it(ctx):
    product = await make_product(ctx, sku="wb-seen")
    order = await make_order(ctx, product)
    async with unit_of_work(ctx.sessions) as session:
        await timeline.record(session, order, "paid", SYSTEM, ctx.clock.now())
        # An ORM query, a Core statement and a driver read each see it, as if it had been sent at once.
        assert (await session.scalars(select(OrderEvent.kind).where(OrderEvent.order_id == order.id))).all()[-1] \
            == "paid"
        await timeline.record(session, order, "delivered", SYSTEM, ctx.clock.now())
        assert [e.kind for e in await timeline.events_for(session, order.id)][-2:] == ["paid", "delivered"]
        await timeline.record(session, order, "refunded", SYSTEM, ctx.clock.now())
    assert (await _kinds(ctx, order.id))[-3:] == ["paid", "delivered", "refunded"]


async def test_queued_writes_of_a_failed_unit_are_dropped_and_never_reach_a_later_transaction(ctx):
    product = await make_product(ctx, sku="wb-dropped")
    order = await make_order(ctx, product)
    with pytest.raises(RuntimeError):
        async with unit_of_work(ctx.sessions) as session:
            await timeline.record(session, order, "paid", SYSTEM, ctx.clock.now())
            raise RuntimeError("the request failed after queuing a write")
    # The next unit (on SQLite the very same connection) runs ORM statements and commits: the dropped
    # write must not ride along.
    async with unit_of_work(ctx.sessions) as session:
        await session.get(Order, order.id)
        await timeline.record(session, order, "expired", SYSTEM, ctx.clock.now())
    kinds = await _kinds(ctx, order.id)
    assert "paid" not in kinds and kinds[-1] == "expired"


async def test_a_stale_order_save_fails_the_commit_and_nothing_queued_with_it_is_written(ctx):
    product = await make_product(ctx, sku="wb-stale")
    placed = await make_order(ctx, product)
    async with unit_of_work(ctx.sessions) as session:
        mine, _ = await orders.order_and_product(session, placed.order_no)
    async with unit_of_work(ctx.sessions) as session:
        theirs, _ = await orders.order_and_product(session, placed.order_no)
        theirs.status = "expired"
        await orders.save(session, theirs)
    with pytest.raises(StaleDataError):
        async with unit_of_work(ctx.sessions) as session:
            await timeline.record(session, mine, "paid", SYSTEM, ctx.clock.now())
            mine.status = "paid"
            await orders.save(session, mine)
            await timeline.record(session, mine, "delivered", SYSTEM, ctx.clock.now())
    kinds = await _kinds(ctx, placed.id)
    assert "paid" not in kinds and "delivered" not in kinds


async def test_a_savepoint_keeps_writes_queued_before_it_and_rolls_back_writes_made_inside_it(ctx):
    product = await make_product(ctx, sku="wb-savepoint")
    order = await make_order(ctx, product)
    async with unit_of_work(ctx.sessions) as session:
        await timeline.record(session, order, "paid", SYSTEM, ctx.clock.now())  # queued, outside the savepoint
        with pytest.raises(RuntimeError):
            async with session.begin_nested():
                await timeline.record(session, order, "delivered", SYSTEM, ctx.clock.now())
                raise RuntimeError("roll back to the savepoint")
        await timeline.record(session, order, "refunded", SYSTEM, ctx.clock.now())
    kinds = await _kinds(ctx, order.id)
    assert "paid" in kinds and "refunded" in kinds and "delivered" not in kinds


async def test_entries_queued_one_after_another_keep_their_order_on_the_timeline(ctx):
    product = await make_product(ctx, sku="wb-order")
    order = await make_order(ctx, product)
    kinds = ["paid", "delivered", "key_quarantined", "key_replaced", "refunded"]
    async with unit_of_work(ctx.sessions) as session:
        for kind in kinds:
            await timeline.record(session, order, kind, SYSTEM, ctx.clock.now())
        await timeline.record_all(session, [timeline.entry(order, k, SYSTEM, ctx.clock.now()) for k in kinds])
    assert (await _kinds(ctx, order.id))[-10:] == kinds + kinds


async def test_a_write_in_a_read_only_unit_is_not_lost(ctx):
    """A read-only unit never commits (on PostgreSQL it runs in autocommit): a write there goes out at once."""
    from zaima.db import read_only

    if not ctx.settings.database_url.startswith("postgresql"):
        pytest.skip("on SQLite read_only is a normal unit of work")
    product = await make_product(ctx, sku="wb-read-only")
    order = await make_order(ctx, product)
    async with read_only(ctx.sessions) as session:
        await timeline.record(session, order, "keys_revealed", SYSTEM, ctx.clock.now())
    assert (await _kinds(ctx, order.id))[-1] == "keys_revealed"


async def test_a_queued_write_that_fails_at_the_next_orm_query_fails_the_unit_and_writes_nothing(ctx):
    product, order, payment = await _paid_order(ctx, "wb-fails")
    with pytest.raises(IntegrityError):  # raised by the ORM query that sends the queue: the same error
        async with unit_of_work(ctx.sessions) as session:
            await timeline.record(session, order, "paid", SYSTEM, ctx.clock.now())
            await sql.defer_rows(session, Payment.__table__, [payment])  # a duplicate
            await session.get(Product, product.id)
    async with unit_of_work(ctx.sessions) as session:
        assert await session.scalar(select(func.count()).select_from(Payment)) == 1
        await session.get(Product, product.id)  # the connection works, nothing queued is left on it
    assert "paid" not in await _kinds(ctx, order.id)
