"""Engine, sessions and the declarative base.

SQLite (the embedded default) runs in WAL mode with `BEGIN IMMEDIATE` write transactions and a
single pooled connection, so concurrent requests queue in order instead of failing with
"database is locked". PostgreSQL uses a normal pool; row locks and conditional updates do the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

import aiosqlite
import structlog
from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.types import TypeDecorator

from zaima import sql
from zaima.core import jsoncodec

T = TypeVar("T")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator):
    """Stored as naive UTC on every backend, always returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is UTC:  # what the clock gives: no conversion needed
            return value.replace(tzinfo=None)
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):
        return None if value is None else value.replace(tzinfo=UTC)

    def bind_processor(self, dialect):
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            # SQLAlchemy's SQLite DATETIME text ("2026-11-26 03:04:05.000000"), built by isoformat instead
            # of its %-formatting of a dict: the order path binds about twenty of these per order.
            value = self.process_bind_param(value, dialect)
            return None if value is None else value.isoformat(" ", "microseconds")

        return process


log = structlog.get_logger("zaima.db")
SQLITE_BUSY_TIMEOUT_MS = 10000
# SQLite copies its write-ahead log back into the database file (a checkpoint: page writes and an fsync)
# inside whichever commit crosses this many pages. Our commits run in the event loop's thread, so that
# commit would stall every socket for tens of milliseconds; WalCheckpointer does it from a thread
# instead, often enough that this limit stays a safety net for processes that do not run one.
SQLITE_AUTOCHECKPOINT_PAGES = 10_000
SQLITE_WAL_SIZE_LIMIT = 64 * 1024 * 1024


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class _LoopSQLiteConnection(aiosqlite.Connection):
    """An aiosqlite connection that runs SQLite calls in the event loop's own thread.

    Stock aiosqlite sends every call to its worker thread and back: SQLAlchemy's adapter makes four
    such round trips per statement (cursor, execute, fetchall, close), each a queue put, a thread
    wake-up, a GIL hand-over and a loop wake-up. On a local file those hops cost far more than the
    statement itself, and the single pooled connection is held through all of them, so they cap
    the throughput of every write path. Here a call runs inline (a local SQLite statement takes
    microseconds), except `BEGIN`: the one statement that can wait for another process's write lock
    (busy_timeout), and that wait must not freeze the event loop, so it still goes to the thread.
    """

    async def _execute(self, fn, *args, **kwargs):
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        if args and isinstance(args[0], str) and args[0].lstrip()[:5].upper() == "BEGIN":
            # Try at once without waiting; only if another process holds the write lock, wait for
            # it (busy_timeout) in the worker thread, off the event loop.
            conn = self._connection
            conn.execute("PRAGMA busy_timeout=0")
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
            finally:
                conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            return await super()._execute(fn, *args, **kwargs)
        return fn(*args, **kwargs)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "locked" in str(exc)


def _loop_sqlite_connect(database, **kwargs) -> aiosqlite.Connection:
    kwargs.setdefault("check_same_thread", False)  # opened in the worker thread, used from the loop's
    connection = _LoopSQLiteConnection(partial(sqlite3.connect, database, **kwargs), iter_chunk_size=64)
    connection._thread.daemon = True
    return connection


class WalCheckpointer:
    """Checkpoints a SQLite database's WAL every `interval` seconds from a worker thread, on a connection
    of its own opened for each checkpoint (PASSIVE: it never waits for, nor blocks, the app's readers
    and writer)."""

    def __init__(self, url, interval: float = 1.0):
        url = make_url(url)
        database = url.database if url.get_backend_name() == "sqlite" else None
        self.path = database if database and database != ":memory:" and not database.startswith("file:") else None
        self.interval = interval
        self._task: asyncio.Task | None = None
        self._running: asyncio.Future | None = None  # the checkpoint in the worker thread, if any

    def start(self) -> None:
        if self.path and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sqlite-checkpoint")

    async def stop(self) -> None:
        """Stop, and wait for a checkpoint in progress: nothing touches the file after this returns."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._running is not None:
            with contextlib.suppress(Exception):
                await self._running
            self._running = None

    def checkpoint(self) -> tuple[int, int, int]:
        """(busy, WAL frames, frames checkpointed), as SQLite reports them."""
        uri = Path(self.path).absolute().as_uri() + "?mode=rw"  # never creates a missing file
        connection = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            return connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            connection.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._running = asyncio.ensure_future(asyncio.to_thread(self.checkpoint))
            try:
                await asyncio.shield(self._running)  # a stop() waits for it rather than abandoning it
            except sqlite3.Error as exc:  # e.g. the file was removed under us; try again later
                log.warning("sqlite_checkpoint_failed", error=str(exc))
            self._running = None


def create_engine(url: str, **kwargs) -> AsyncEngine:
    kwargs.setdefault("json_serializer", jsoncodec.dumps)
    kwargs.setdefault("json_deserializer", jsoncodec.loads)
    if is_sqlite(url):
        connect_args = {"async_creator_fn": _loop_sqlite_connect, **kwargs.pop("connect_args", {})}
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60,
                                     connect_args=connect_args, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
            cursor.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_SIZE_LIMIT}")  # shrink the log after a burst
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn):
            # Through SQLAlchemy's execution (not straight to aiosqlite, which would be cheaper): a BEGIN
            # cancelled while it waits in aiosqlite's thread for another process's lock must invalidate
            # the connection, or it would go back to the pool with the thread still inside BEGIN.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_async_engine(url, pool_size=20, max_overflow=20, **kwargs)
    ping_when_idle(engine)
    return engine


# A pooled PostgreSQL connection idle this long is pinged before use: a server restart or an idle timeout
# may have closed it. SQLAlchemy's `pool_pre_ping` pings at every checkout, and its ping is three round
# trips (BEGIN, `;`, ROLLBACK); a busy server's connections are back in use within milliseconds.
PING_AFTER_IDLE_SECONDS = 5.0


def ping_when_idle(engine: AsyncEngine) -> None:
    """Pessimistic disconnect handling for connections that sat idle: a dead one is replaced before the
    request uses it (the pool retries the checkout with a new connection)."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_connection, record):
        record.info["zaima_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy):
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver.is_closed():  # asyncpg saw the server close it: no round trip
            raise DisconnectionError("pooled connection was closed by the server")
        since = record.info.get("zaima_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # new, or back in use right away
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection idle for {time.monotonic() - since:.0f} s is gone") from exc


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)


async def append_rows(session: AsyncSession, model: type[Base], rows: list[dict]) -> None:
    """INSERT rows of an append-only record (audit entries, delivery attempts, notifications, payments):
    queued with the transaction's other writes and sent before its next statement or its commit
    (`zaima.sql.defer`), with statements prepared once per table: no ORM objects and no unit-of-work
    bookkeeping at flush. Column defaults apply as with the ORM."""
    await sql.defer_rows(session, model.__table__, rows)


async def append_row(session: AsyncSession, model: type[Base], **values) -> None:
    await append_rows(session, model, [values])


def insert_ignoring_conflicts(dialect: str, model: type[Base], unique: list):
    """`INSERT … ON CONFLICT (unique) DO NOTHING` for `model`, in the dialect's own syntax (SQLite and
    PostgreSQL spell it the same, but SQLAlchemy builds it per dialect): a row that is already there is a
    no-op, also when two transactions insert it at once."""
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    return insert(model).on_conflict_do_nothing(index_elements=unique)


def on_commit(session: AsyncSession, callback: Callable[[], object]) -> None:
    """Run `callback` once the unit of work commits; dropped if it rolls back."""
    session.info.setdefault("on_commit", []).append(callback)


@asynccontextmanager
async def unit_of_work(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: commit on success, roll back on any error. Services only flush."""
    async with sessions() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        await _after_commit(session.info)


async def _after_commit(info: dict) -> None:
    for callback in info.pop("on_commit", []):
        result = callback()
        if hasattr(result, "__await__"):
            await result


@asynccontextmanager
async def lean_unit(sessions: async_sessionmaker[AsyncSession], read_only: bool = False) -> AsyncIterator[sql.Tx]:
    """`unit_of_work` on the driver (`zaima.sql.Tx`): for code that reads and writes only through `zaima.sql`.
    Such code that reaches for the ORM raises `zaima.sql.NeedsSession`; `transact` and `read` with
    `lean=True` then run it again in a session."""
    tx = await sql.Tx.open(sessions.kw["bind"], read_only=read_only)
    try:
        try:
            yield tx
            await tx.commit()
        except BaseException:
            await tx.rollback()
            raise
    finally:
        await tx.close()
    await _after_commit(tx.info)


@asynccontextmanager
async def read_only(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A unit of work that only reads. On PostgreSQL it runs without BEGIN and COMMIT (autocommit): two
    round trips fewer, and each statement sees what was committed when it started, so what must be
    consistent is read in one statement. On SQLite, a normal unit of work (no round trips to save)."""
    async with sessions() as session:
        if session.bind.dialect.name == "postgresql":
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


RETRYABLE_SQLSTATES = {"40001", "40P01", "23505"}


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None) or getattr(getattr(exc.orig, "__cause__", None), "sqlstate", None)


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, StaleDataError):
        return True
    if isinstance(exc, DBAPIError):
        return _sqlstate(exc) in RETRYABLE_SQLSTATES or isinstance(exc, IntegrityError)
    return False


UNSTORABLE_MESSAGES = {
    "number": ("数字超出范围", "a number is out of range"),
    "too_long": ("内容太长，超出了允许的长度", "a text is longer than allowed"),
    "character": ("含有无法保存的字符（如空字符）", "a text holds a character that cannot be stored (such as NUL)"),
    "other": ("数字超出范围或含有无法保存的内容", "a value is out of range or cannot be stored"),
}


def unstorable_message(exc: BaseException) -> tuple[str, str]:
    """What to tell the sender about a value `is_unstorable_value` found, (zh, en)."""
    if isinstance(exc, OverflowError):
        return UNSTORABLE_MESSAGES["number"]
    state = _sqlstate(exc) if isinstance(exc, DBAPIError) else None
    if state == "22001":  # string_data_right_truncation: longer than a varchar(n)
        return UNSTORABLE_MESSAGES["too_long"]
    if state in ("22021", "22P05"):  # character_not_in_repertoire, untranslatable_character: NUL
        return UNSTORABLE_MESSAGES["character"]
    if state == "22003" or (state == "22000" and "out of" in str(exc) and "range" in str(exc)):
        return UNSTORABLE_MESSAGES["number"]  # numeric_value_out_of_range; asyncpg's "value out of int32 range"
    return UNSTORABLE_MESSAGES["other"]


def is_unstorable_value(exc: BaseException) -> bool:
    """Whether the database refused a value from the request itself: a number past the column's range
    (SQLite: OverflowError when binding; PostgreSQL: 'value out of int32 range') or text it cannot hold
    (PostgreSQL: NUL). SQLSTATE class 22 is "data exception". Such a request is bad input, not a fault."""
    if isinstance(exc, OverflowError):
        return True
    return isinstance(exc, DBAPIError) and (_sqlstate(exc) or "").startswith("22")


async def read(sessions: async_sessionmaker[AsyncSession], fn: Callable[[AsyncSession], Awaitable[T]], *,
               lean: bool = False) -> T:
    """Run `fn` in a `read_only` unit; with `lean`, first in a read-only `lean_unit` (see `transact`)."""
    if lean:
        try:
            async with lean_unit(sessions, read_only=True) as tx:
                return await fn(tx)
        except sql.NeedsSession:
            pass
    async with read_only(sessions) as session:
        return await fn(session)


async def transact(sessions: async_sessionmaker[AsyncSession], fn: Callable[[AsyncSession], Awaitable[T]],
                   attempts: int = 6, *, lean: bool = False) -> T:
    """Run `fn` in its own unit of work, retrying when a concurrent writer won the race.

    A lost optimistic lock, a duplicate idempotency key or a serialization failure means another
    transaction changed the same thing first; running `fn` again sees that change and decides anew.

    `lean`: for the hot paths. `fn` runs in a `lean_unit` first; if it needs an ORM session after all (a
    branch of the rules that loads ORM objects), that unit is rolled back and `fn`, like any retry, runs
    again from the start, in a session. So `fn` must, as for any retry, do nothing outside its unit.
    """
    for attempt in range(attempts):
        try:
            if lean:
                try:
                    async with lean_unit(sessions) as tx:
                        return await fn(tx)
                except sql.NeedsSession:
                    lean = False  # this path needs the ORM: this attempt, and any retry, in a session
            async with unit_of_work(sessions) as session:
                return await fn(session)
        except Exception as exc:
            if attempt == attempts - 1 or not _is_retryable(exc):
                raise
            await asyncio.sleep(0.005 * (attempt + 1) * random.random())
    raise AssertionError("unreachable")
