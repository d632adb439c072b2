"""SQLite's write-ahead log is copied back into the database file by the app's checkpointer, off the
event loop, while the app keeps writing; the commit path itself never has to."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

from sqlalchemy import text

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
