"""SQLite's write-ahead log is copied back into the database file by the app's checkpointer, off the
event loop, while the app keeps writing; the commit path itself never has to. A write that finds another
process holding the write lock waits for it off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

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


async def test_a_write_waits_off_the_loop_for_another_process_holding_the_write_lock(tmp_path):
    """Another process (here: another connection) holds SQLite's write lock. Our next transaction's BEGIN
    waits for it in aiosqlite's thread, so the event loop keeps serving meanwhile, and the write lands as
    soon as the lock is released."""
    path = tmp_path / "zaima.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE notes (body TEXT)"))
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
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
    path = tmp_path / "zaima.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE notes (body TEXT)"))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError, match="locked"):
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO notes VALUES ('ours')"))
    finally:
        other.execute("ROLLBACK")
        other.close()
        await engine.dispose()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite has one local connection
async def test_a_pooled_postgresql_connection_killed_while_idle_is_replaced_before_use(db_url, monkeypatch):
    """The server restarted or timed the connection out while it sat in the pool: the next request still
    works (pinged because it was idle, found dead, replaced), and busy connections are not pinged."""
    engine = create_engine(db_url)
    pings = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(1) or real_ping(c))
    try:
        async with engine.connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar()
        async with engine.connect() as connection:  # back in use at once: no ping
            assert (await connection.execute(text("SELECT pg_backend_pid()"))).scalar() == pid
        assert pings == []
        killer = create_engine(db_url)
        async with killer.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await killer.dispose()
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # as if it had sat idle for a while
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
            assert (await connection.execute(text("SELECT pg_backend_pid()"))).scalar() != pid
        assert pings  # the idle connection was pinged, found dead and replaced
    finally:
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
