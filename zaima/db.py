"""Engine, sessions and the declarative base.

SQLite (the embedded default) runs in WAL mode with `BEGIN IMMEDIATE` write transactions and a
single pooled connection, so concurrent requests queue in order instead of failing with
"database is locked". PostgreSQL uses a normal pool; row locks and conditional updates do the rest.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.types import TypeDecorator

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
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, **kwargs) -> AsyncEngine:
    if is_sqlite(url):
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_async_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True, **kwargs)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)


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
        for callback in session.info.pop("on_commit", []):
            result = callback()
            if hasattr(result, "__await__"):
                await result


RETRYABLE_SQLSTATES = {"40001", "40P01", "23505"}


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, StaleDataError):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None) or getattr(getattr(exc.orig, "__cause__", None), "sqlstate", None)
        return code in RETRYABLE_SQLSTATES or isinstance(exc, IntegrityError)
    return False


async def transact(sessions: async_sessionmaker[AsyncSession], fn: Callable[[AsyncSession], Awaitable[T]],
                   attempts: int = 6) -> T:
    """Run `fn` in its own unit of work, retrying when a concurrent writer won the race.

    A lost optimistic lock, a duplicate idempotency key or a serialization failure means another
    transaction changed the same thing first; running `fn` again sees that change and decides anew.
    """
    for attempt in range(attempts):
        try:
            async with unit_of_work(sessions) as session:
                return await fn(session)
        except Exception as exc:
            if attempt == attempts - 1 or not _is_retryable(exc):
                raise
            await asyncio.sleep(0.005 * (attempt + 1) * random.random())
    raise AssertionError("unreachable")
