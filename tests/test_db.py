"""SQLite's write-ahead log is copied back into the database file by the app's checkpointer, off the
event loop, while the app keeps writing; the commit path itself never has to. A write that finds another
process holding the write lock waits for it off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from zaima import db
from zaima.db import SQLITE_AUTOCHECKPOINT_PAGES, WalCheckpointer, create_engine


def _rows_in_the_database_file(path) -> int:
    # immutable=1 reads the main file only, ignoring the WAL: what a checkpoint has copied back.
    with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as connection:
        return connection.execute("SELECT count(*) FROM notes").fetchone()[0]


async def test_the_checkpointer_copies_committed_writes_into_the_database_file(tmp_path):
    path = tmp_path / "zaima.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    checkpointer = WalCheckpointer(engine.url, interval=0.05)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE notes (body TEXT)"))
        autocheckpoint = (await connection.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar()
    assert autocheckpoint == SQLITE_AUTOCHECKPOINT_PAGES  # commits leave the copying to the checkpointer
    checkpointer.start()
    try:
        for i in range(300):
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO notes VALUES (:body)"), {"body": f"{i}" * 500})
        for _ in range(100):
            await asyncio.sleep(0.05)
            with contextlib.suppress(sqlite3.DatabaseError):  # read while a checkpoint writes: torn
                if _rows_in_the_database_file(path) == 300:
                    break
        await checkpointer.stop()  # waits for a checkpoint in progress: the file is whole again
        assert _rows_in_the_database_file(path) == 300
    finally:
        await checkpointer.stop()
        await engine.dispose()


def test_only_sqlite_files_get_a_checkpointer():
    assert WalCheckpointer("postgresql+asyncpg://postgres@127.0.0.1/test").path is None
    assert WalCheckpointer("sqlite+aiosqlite:///var/zaima.db").path == "var/zaima.db"


async def _database_locked_by_another_connection(tmp_path):
    """Our engine on a new SQLite file with a `notes` table, and another connection (standing in for
    another process) that holds the write lock until the test commits or closes it."""
    path = tmp_path / "zaima.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE notes (body TEXT)"))
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return engine, other


async def test_a_write_waits_off_the_loop_for_another_process_holding_the_write_lock(tmp_path):
    """Another process (here: another connection) holds SQLite's write lock. Our next transaction's BEGIN
    waits for it in aiosqlite's thread, so the event loop keeps serving meanwhile, and the write lands as
    soon as the lock is released."""
    engine, other = await _database_locked_by_another_connection(tmp_path)
    other.execute("INSERT INTO notes VALUES ('theirs')")
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def write():
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO notes VALUES ('ours')"))

    tick_task = asyncio.create_task(ticker())
    try:
        writing = asyncio.create_task(write())
        await asyncio.sleep(0.5)
        assert not writing.done()  # still waiting for the lock…
        assert ticks >= 20  # …while the loop kept running
        other.execute("COMMIT")
        await asyncio.wait_for(writing, 5)
        async with engine.connect() as connection:
            notes = [r[0] for r in await connection.execute(text("SELECT body FROM notes ORDER BY rowid"))]
        assert notes == ["theirs", "ours"]
    finally:
        tick_task.cancel()
        other.close()
        await engine.dispose()


async def test_a_write_lock_held_past_the_busy_timeout_is_sqlalchemys_operational_error(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    engine, other = await _database_locked_by_another_connection(tmp_path)
    try:
        with pytest.raises(OperationalError, match="locked"):
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO notes VALUES ('ours')"))
    finally:
        other.execute("ROLLBACK")
        other.close()
        await engine.dispose()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite has one local connection
async def test_pooled_postgresql_connections_are_pinged_when_idle_and_replaced_when_dead(db_url, monkeypatch):
    """Busy connections go back to work without a ping; an idle one is pinged first; one the server closed
    while it sat in the pool (a restart, an idle timeout) is replaced before the request uses it."""
    engine = create_engine(db_url)
    pings = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(1) or real_ping(c))
    pid_query = text("SELECT pg_backend_pid()")
    try:
        async with engine.connect() as connection:
            pid = (await connection.execute(pid_query)).scalar()
        async with engine.connect() as connection:  # back in use at once: no ping
            assert (await connection.execute(pid_query)).scalar() == pid
        assert pings == []
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # as if it had sat idle for a while
        async with engine.connect() as connection:
            assert (await connection.execute(pid_query)).scalar() == pid
        assert pings == [1]  # pinged, alive, reused
        killer = create_engine(db_url)
        async with killer.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await killer.dispose()
        await asyncio.sleep(0.2)
        async with engine.connect() as connection:
            assert (await connection.execute(pid_query)).scalar() != pid
    finally:
        await engine.dispose()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_connection_lost_under_a_driver_statement_is_invalidated_not_lent_out_again(db_url):
    from sqlalchemy import func, select
    from sqlalchemy.exc import DBAPIError

    from zaima import sql

    engine = create_engine(db_url)
    sessions = db.make_sessionmaker(engine)
    backend_pid = sql.Prepared(select(func.pg_backend_pid()))
    killer = create_engine(db_url)
    try:
        with pytest.raises(DBAPIError) as failure:
            async with db.unit_of_work(sessions) as session:
                ((pid,),) = await sql.fetch(session, backend_pid)
                async with killer.connect() as connection:
                    await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                await sql.fetch(session, backend_pid)
        assert failure.value.connection_invalidated
        for _ in range(3):  # every later request gets a working connection
            async with db.unit_of_work(sessions) as session:
                assert (await sql.fetch(session, backend_pid))[0][0] != pid
    finally:
        await killer.dispose()
        await engine.dispose()


async def test_a_write_cancelled_while_waiting_for_the_lock_leaves_the_connection_usable(tmp_path):
    """A request cancelled while its BEGIN waits (in aiosqlite's thread) for another process's lock: the
    connection is not lent out again with that BEGIN still running, so later writes neither stall the
    event loop nor find a transaction already open. (The cancelled request's own clean-up still closes
    the connection on the loop while the lock is held: a known stall of up to busy_timeout, only with
    several processes writing one SQLite file.)"""
    engine, other = await _database_locked_by_another_connection(tmp_path)

    async def write(body):
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO notes VALUES (:body)"), {"body": body})

    stalls, last = [], asyncio.get_running_loop().time()

    async def ticker():
        nonlocal last
        while True:
            await asyncio.sleep(0.01)
            now = asyncio.get_running_loop().time()
            stalls.append(now - last)
            last = now

    cancelled = asyncio.create_task(write("cancelled"))
    await asyncio.sleep(0.3)
    threading.Timer(0.5, other.execute, ("COMMIT",)).start()  # the other process lets go a little later
    cancelled.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cancelled
    tick_task = asyncio.create_task(ticker())
    try:
        await asyncio.wait_for(write("next"), 10)
        await write("after")
        async with engine.connect() as connection:
            notes = [r[0] for r in await connection.execute(text("SELECT body FROM notes ORDER BY rowid"))]
        assert notes == ["next", "after"]
        assert max(stalls, default=0.0) < 0.1  # nothing left behind blocks the loop
    finally:
        tick_task.cancel()
        other.close()
        await engine.dispose()


def test_utc_datetimes_are_stored_on_sqlite_as_sqlalchemys_datetime_text():
    """The fast SQLite bind of UTCDateTime writes exactly what SQLAlchemy's DATETIME writes, so rows
    written before and after compare and sort alike."""
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy.dialects.sqlite import DATETIME, aiosqlite

    dialect = aiosqlite.dialect()
    ours, theirs = db.UTCDateTime().bind_processor(dialect), DATETIME().bind_processor(dialect)
    for value in (datetime(2026, 11, 26, 3, 4, 5, 678901, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC),
                  datetime(2026, 6, 1, 8, 0, tzinfo=timezone(timedelta(hours=8)))):
        assert ours(value) == theirs(value.astimezone(UTC).replace(tzinfo=None))
    assert ours(None) is None
    with pytest.raises(ValueError, match="naive"):
        ours(datetime(2026, 1, 1))
