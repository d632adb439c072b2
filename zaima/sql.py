"""Hot-path statements run on the driver connection of a session's transaction.

An order's create, notify and read are about twenty small statements. Through the ORM (or even Core
through an `AsyncSession`) each one costs 80–150 µs of Python before the database sees it: a greenlet
switch, the session's connection lookup, the statement's cache key, parameter processing, the result
machinery. The statement itself takes 5–40 µs. `Prepared` keeps SQLAlchemy for what it is good at —
writing the statement once, in Core, and compiling it for each dialect — and then runs the compiled
string on the driver (sqlite3 / asyncpg) with SQLAlchemy's own bind and result processors, so the
values stored are exactly the ones the ORM would store (naive-UTC datetimes, JSON text, booleans).

The statements run inside the session's current transaction, on its connection: they mix freely with
ORM work in the same unit of work, and commit or roll back with it. Driver errors are raised as
SQLAlchemy's exceptions (`IntegrityError`, `DBAPIError` with the SQLSTATE), so `zaima.db.transact`
retries them as before. Nothing here touches the ORM's identity map: a function that changes a row
this way must not also hold the row as an ORM object it later flushes (see `Row`).

The order's hot paths go one step further and run without a session at all: a `Tx` is a transaction
straight on a pooled driver connection, accepted everywhere a session is here (see `Tx`).

Limits: no expanding (IN-list) parameters and no SQL-side defaults beyond what the table declares; a
statement that needs them stays on the ORM/Core path.

Write-behind (`defer`). On PostgreSQL every statement is a round trip to another process, and on a small
machine that round trip (two process wake-ups) costs more CPU than the statement. Writes whose result
nobody reads right away — audit entries, notify records, job rows, an order's guarded UPDATE — are queued
on the transaction instead, and sent together: as one statement of data-modifying CTEs, or in front of the
next UPDATE/INSERT when it touches other tables. The queue is flushed before anything else reaches the
database in that transaction (any SQLAlchemy statement, including a SAVEPOINT, and any `fetch`/`execute`
here) and before commit, so every read sees every earlier write, as without the queue; a rollback drops
it. What changes is only where a failing queued write raises: at the flush, inside the same unit of work
(`transact` retries a lost race there as anywhere). A batch holds at most one statement per table: its
CTEs share one snapshot and run in no set order, so two writes to one table could not see each other (and
two INSERTs could get their ids in either order); a second write to a table flushes the batch first.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Table, bindparam, event, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.sql import Executable
from sqlalchemy.util import await_only, greenlet_spawn

_MISSING = object()


_LOCKING = re.compile(r"\bFOR (?:UPDATE|NO KEY UPDATE|SHARE|KEY SHARE)\b")


class _Compiled:
    __slots__ = ("sql", "names", "defaults", "binders", "results", "locks")

    def __init__(self, statement: Executable, dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        if "POSTCOMPILE" in self.sql:
            raise ValueError("IN-lists are expanded per call; write the condition without them: " + self.sql)
        self.names = tuple(compiled.positiontup or ())
        binds = compiled.binds
        # Literal values SQLAlchemy made into parameters (e.g. the 1 in `version + 1`), by name.
        self.defaults = {name: b.value for name, b in binds.items() if not b.required and b.callable is None}
        self.binders = tuple(binds[name].type._cached_bind_processor(dialect) for name in self.names)
        columns = getattr(compiled, "_result_columns", None) or []
        processors = [c.type._cached_result_processor(dialect, None) for c in columns]
        self.results = tuple(processors) if any(p is not None for p in processors) else None
        self.locks = bool(_LOCKING.search(self.sql))  # a SELECT … FOR UPDATE/SHARE: takes row locks

    def args(self, params: dict[str, Any]) -> tuple:
        out = []
        for name, bind in zip(self.names, self.binders, strict=True):
            value = params.get(name, _MISSING)
            if value is _MISSING:
                value = self.defaults[name]  # KeyError names a parameter the caller forgot
            out.append(value if bind is None or value is None else bind(value))
        return tuple(out)

    def row(self, raw: Sequence) -> tuple:
        if self.results is None:
            return tuple(raw)
        return tuple(v if p is None or v is None else p(v) for p, v in zip(self.results, raw, strict=True))


class Prepared:
    """A Core statement compiled once per dialect, to be run with `fetch` / `execute`."""

    __slots__ = ("statement", "_by_dialect", "table")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._by_dialect: dict[str, _Compiled] = {}
        # For write-behind: the table an INSERT/UPDATE/DELETE writes (None for a SELECT).
        table = getattr(statement, "table", None)
        self.table = table.name if isinstance(table, Table) else None

    def compiled(self, dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is None:
            found = self._by_dialect[dialect.name] = _Compiled(self.statement, dialect)
        return found


def per_dialect(**statements: Executable) -> dict[str, Prepared]:
    """Statements that differ between SQLite and PostgreSQL, keyed by dialect name."""
    return {name: Prepared(s) for name, s in statements.items()}


def insert_for(table: Table, columns: Iterable[str], returning: tuple = (), rows: int = 1) -> Prepared:
    """`INSERT INTO table (columns…) VALUES (…)[, (…)…] [RETURNING …]`, prepared once per table, column set
    and row count. With several rows, row i's parameters are named `{column}_{i}`."""
    return _insert(table, frozenset(columns), returning, rows)


@functools.cache
def _insert(table: Table, columns: frozenset, returning: tuple, rows: int) -> Prepared:
    if rows == 1:
        statement = insert(table).values({c: bindparam(c) for c in sorted(columns)})
    else:
        statement = insert(table).values(values_rows(table, sorted(columns), rows))
    return Prepared(statement.returning(*returning) if returning else statement)


def values_rows(table: Table, columns: Iterable[str], rows: int) -> list[dict]:
    """The VALUES of a multi-row INSERT: row i's parameters named `{column}_{i}` (see `numbered`), typed
    (SQLAlchemy gives an untyped parameter its column's type only in the first row)."""
    columns = tuple(columns)
    return [{c: bindparam(f"{c}_{i}", type_=table.c[c].type) for c in columns} for i in range(rows)]


def numbered(rows: list[dict]) -> dict:
    """The parameters of a multi-row INSERT made with `values_rows`, from its rows."""
    return {f"{k}_{i}": v for i, row in enumerate(rows) for k, v in row.items()}


@functools.cache
def _defaults(table: Table) -> tuple:
    return tuple((c.key, c.default) for c in table.columns
                 if c.default is not None and not c.primary_key and (c.default.is_scalar or c.default.is_callable))


def with_defaults(table: Table, row: dict) -> dict:
    """The row with the table's Python-side column defaults filled in, as the ORM would."""
    out = dict(row)
    for key, default in _defaults(table):
        if key not in out:
            out[key] = default.arg if default.is_scalar else default.arg(None)
    return out


class _Part(NamedTuple):
    """A queued write: its statement, arguments, and the row count it must have (None: any)."""
    prepared: Prepared
    compiled: _Compiled
    args: tuple
    expect: int | None
    stale: str  # the StaleDataError message when `expect` is not met
    assumed: bool = False  # `expect` is an assumption: a miss reruns the unit in a session (see `defer`)
    rows: tuple[dict, ...] | None = None  # an INSERT of these rows (`defer_rows`): more rows can join it


def _missed(part: _Part, what: str) -> None:
    if part.assumed:
        raise NeedsSession(f"{part.prepared.table}: {what}")
    raise StaleDataError(part.stale or what)


_DOLLAR = re.compile(r"\$(\d+)")


def _shifted(text: str, by: int) -> str:
    """A PostgreSQL statement with its $n parameters renumbered from `by` + 1."""
    return _DOLLAR.sub(lambda m: f"${int(m.group(1)) + by}", text) if by else text


@functools.lru_cache(maxsize=512)
def _batch_sql(parts: tuple[tuple[_Compiled, bool], ...], main: _Compiled | None,
               expected: tuple[int, ...] | None = None) -> str:
    """One PostgreSQL statement for queued writes: each a data-modifying CTE (run exactly once whether
    read or not), then either `main` (a write of its own, whose result is the statement's) or a SELECT
    of the row counts of the parts that must be checked. With `expected` (those parts' row counts), the
    statement checks them itself and aborts, all of it, on a miss (`zaima_expect_counts`, migration 0007)."""
    ctes, offset, counted = [], 0, []
    for i, (compiled, checked) in enumerate(parts):
        returning = " RETURNING 1" if checked and not compiled.sql.startswith("SELECT") else ""  # (a `check`)
        ctes.append(f"w{i} AS ({_shifted(compiled.sql, offset)}{returning})")
        offset += len(compiled.names)
        if checked:
            counted.append(f"(SELECT count(*) FROM w{i})")
    if main is None and expected is not None and counted:
        wanted = ", ".join(str(int(n)) for n in expected)
        return (f"WITH {', '.join(ctes)} SELECT zaima_expect_counts("
                f"ARRAY[{', '.join(counted)}]::bigint[], ARRAY[{wanted}]::bigint[])")
    if main is None:
        return f"WITH {', '.join(ctes)} SELECT {', '.join(counted) or '1'}"
    tail = _shifted(main.sql, offset)
    if tail.startswith("WITH "):  # the statement's own CTEs follow ours
        return f"WITH {', '.join(ctes)}, {tail[5:]}"
    return f"WITH {', '.join(ctes)} {tail}"


def _batchable(compiled: _Compiled) -> bool:
    # Renumbering $n is safe only in SQL without quoted text (every value here is a parameter).
    return "'" not in compiled.sql and '"' not in compiled.sql and not compiled.sql.startswith("WITH RECURSIVE")


class _Driver:
    """A transaction's connection as the driver sees it, and that transaction's queued writes. `home` is
    what owns the connection: a session's AsyncConnection, or a `Tx`."""

    __slots__ = ("home", "dialect", "adapter", "raw", "sqlite", "root", "pending", "info", "autocommit", "lazy")

    def __init__(self, home, dialect, adapter, *, root=None, info: dict | None = None) -> None:
        self.home = home
        self.dialect = dialect
        self.adapter = adapter
        self.sqlite = dialect.name == "sqlite"
        # SQLite: the sqlite3 connection inside aiosqlite (zaima.db runs its calls in the loop's thread);
        # PostgreSQL: the asyncpg connection.
        self.raw = adapter._connection._conn if self.sqlite else adapter._connection
        self.root = root  # a session's queue belongs to this transaction
        self.pending: list[_Part] = []
        self.info = {} if info is None else info  # where the flush hook finds a session's queue
        self.autocommit = not self.sqlite and adapter.isolation_level == "autocommit"
        self.lazy = False  # a `Tx` that sends BEGIN only before its first write or locking read

    @classmethod
    def of_connection(cls, connection: AsyncConnection) -> _Driver:
        sync = connection.sync_connection
        return cls(connection, connection.dialect, sync.connection.dbapi_connection, root=sync.get_transaction(),
                   info=sync.info)

    async def _error(self, statement: str, args, exc: BaseException) -> BaseException:
        """A driver error as SQLAlchemy would have raised it (anything else, e.g. OverflowError binding a
        huge int on SQLite, unchanged). A connection the error shows to be gone is invalidated, as
        SQLAlchemy does for its own statements, so the pool replaces it instead of lending it out again."""
        if not isinstance(exc, Exception):
            return exc  # a cancellation: what it left the connection in is the owner's to clean up
        if self.sqlite:
            return DBAPIError.instance(statement, args, exc, sqlite3.Error) if isinstance(exc, sqlite3.Error) else exc
        try:
            self.adapter._handle_exception(exc)  # asyncpg's error → the DB-API error SQLAlchemy uses
        except Exception as translated:  # noqa: BLE001 - returned wrapped below
            gone = self.dialect.is_disconnect(translated, self.adapter, None)
            if gone:
                await self.home.invalidate(translated)
            return DBAPIError.instance(statement, args, translated, self.dialect.loaded_dbapi.Error,
                                       connection_invalidated=gone)
        return exc

    async def begin(self) -> None:
        """PostgreSQL: SQLAlchemy's adapter begins lazily, at its first statement; begin now."""
        if self.sqlite or self.adapter._transaction is not None or self.autocommit:
            return
        try:
            await self.adapter._start_transaction()
        except Exception as exc:
            raise await self._error("BEGIN", (), exc) from exc

    async def command(self, text: str) -> None:
        """A statement without parameters or rows (BEGIN, COMMIT, ROLLBACK), straight to the driver."""
        try:
            if self.sqlite:
                # Through aiosqlite: zaima.db runs a BEGIN that must wait for another process's lock in
                # aiosqlite's thread, off the event loop.
                await self.adapter._connection.execute(text)
            else:
                await self.raw.execute(text)
        except BaseException as exc:
            raise await self._error(text, (), exc) from exc

    async def open_lazy(self) -> None:
        """A lazy transaction begins now: something is about to be sent that must be inside it."""
        if self.lazy:
            self.lazy = False
            await self.command("BEGIN ISOLATION LEVEL READ COMMITTED")

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction if self.sqlite else self.raw.is_in_transaction()

    async def fetch(self, text: str, args: tuple) -> list:
        try:
            if self.sqlite:
                return self.raw.execute(text, args).fetchall()
            return await self.raw.fetch(text, *args)
        except Exception as exc:
            raise await self._error(text, args, exc) from exc

    async def execute(self, text: str, args: tuple) -> int:
        try:
            if self.sqlite:
                return self.raw.execute(text, args).rowcount
            status = await self.raw.execute(text, *args)
            return int(status.rsplit(" ", 1)[-1]) if status and status[-1].isdigit() else 0
        except Exception as exc:
            raise await self._error(text, args, exc) from exc

    # --- write-behind -----------------------------------------------------------------------------

    async def queue(self, part: _Part) -> None:
        # One statement per table in a batch: its CTEs share one snapshot and run in no set order (two
        # INSERTs into one table could get their ids in either order; an UPDATE would not see an INSERT).
        # Rows for a table whose queued write is an INSERT of rows with the same columns join that INSERT
        # instead: one multi-row INSERT gives ids in its rows' order.
        for i, queued in enumerate(self.pending):
            if queued.prepared.table is None or queued.prepared.table != part.prepared.table:
                continue  # (a `check` reads: it travels with any write)
            if queued.rows is None or part.rows is None or queued.rows[0].keys() != part.rows[0].keys():
                await self.flush()
                break
            rows = queued.rows + part.rows
            prepared = insert_for(part.prepared.statement.table, rows[0].keys(), rows=len(rows))
            compiled = prepared.compiled(self.dialect)
            self.pending[i] = _Part(prepared, compiled, compiled.args(numbered(list(rows))), None, "", rows=rows)
            return
        self.pending.append(part)
        self.info[_QUEUED] = self

    @staticmethod
    def _check(part: _Part, count: int) -> None:
        if part.expect is not None and count != part.expect:
            _missed(part, f"expected {part.expect} row(s), {count} changed")

    async def flush(self) -> None:
        """Send the queued writes: SQLite one by one (no round trips to save), PostgreSQL as one statement."""
        parts, self.pending = self.pending, []
        self.info.pop(_QUEUED, None)
        if not parts:
            return
        await self.open_lazy()
        if self.sqlite or not all(_batchable(p.compiled) for p in parts):
            for part in parts:
                self._check(part, await self.execute(part.compiled.sql, part.args))
            return
        text = _batch_sql(tuple((p.compiled, p.expect is not None) for p in parts), None)
        (counts,) = await self.fetch(text, tuple(a for p in parts for a in p.args))
        for part, count in zip((p for p in parts if p.expect is not None), counts, strict=False):  # SELECT 1: none
            self._check(part, count)

    async def commit_alone(self) -> None:
        """A lazy transaction's commit: its queued writes (it has sent none yet) go out as one statement,
        which commits by itself and checks its own row counts, so that no BEGIN and COMMIT are needed.
        Writes that cannot be one statement get a transaction after all."""
        parts = self.pending
        if not parts:
            return
        if not all(_batchable(p.compiled) for p in parts):
            await self.flush()
            await self.command("COMMIT")
            return
        self.pending = []
        self.info.pop(_QUEUED, None)
        checked = [p for p in parts if p.expect is not None]
        text = _batch_sql(tuple((p.compiled, p.expect is not None) for p in parts), None,
                          tuple(p.expect for p in checked))
        args = tuple(a for p in parts for a in p.args)
        try:
            await self.raw.fetch(text, *args)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == "ZA001":  # zaima_expect_counts: nothing was written
                _missed(checked[int(exc.detail)], str(exc))
            raise await self._error(text, args, exc) from exc

    async def ahead_of(self, prepared: Prepared, compiled: _Compiled, args: tuple) -> tuple[str, tuple]:
        """The statement to send for `compiled` now: on PostgreSQL with the queued writes in front of it
        when it is a write to a table they do not touch and none of them has a row count to check;
        otherwise the queue is flushed first. A lazy transaction begins first unless it is a plain read
        with nothing queued."""
        if self.lazy and (prepared.table is not None or self.pending or compiled.locks):
            await self.open_lazy()
        if not self.pending:
            return compiled.sql, args
        parts = self.pending
        if (self.sqlite or prepared.table is None or any(p.prepared.table == prepared.table for p in parts)
                or any(p.expect is not None for p in parts)
                or not all(_batchable(c) for c in (compiled, *(p.compiled for p in parts)))):
            await self.flush()
            return compiled.sql, args
        self.pending = []
        self.info.pop(_QUEUED, None)
        text = _batch_sql(tuple((p.compiled, False) for p in parts), compiled)
        return text, tuple(a for p in parts for a in p.args) + args


_QUEUED = "zaima_sql_queued"  # in the DB-API connection's info: the _Driver with writes queued on it


def _flush_queued_on(connection) -> None:
    """Before SQLAlchemy sends anything on a connection (an ORM query or flush, Core, a SAVEPOINT): send the
    writes queued in its current transaction first. A queue left by a transaction that has ended (rolled
    back) is dropped, never sent into a later one."""
    queued = connection.info.get(_QUEUED)
    if queued is None:
        return
    if queued.root is not connection.get_transaction() or not queued.root.is_active:
        connection.info.pop(_QUEUED, None)
        queued.pending.clear()
        return
    await_only(queued.flush())


@event.listens_for(Engine, "before_cursor_execute")
def _before_statement(connection, _cursor, _statement, _parameters, _context, _executemany):
    _flush_queued_on(connection)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    # Here rather than at the connection's commit: a failing queued write then fails the commit with the
    # transaction still open, and the unit of work rolls it back as after any error.
    cached = session.info.get(_DRIVER)
    if cached is not None and cached[1].pending and cached[0] is session.get_transaction():
        await_only(cached[1].flush())


_DRIVER = "_sql_driver"


class NeedsSession(BaseException):  # noqa: N818 - a signal, like CancelledError, not an error
    """Code running in a `Tx` asked for what only an ORM session has (`get`, `add`, `scalars`, a flush…).

    The unit that ran it (`zaima.db.transact` / `zaima.db.read` with `lean=True`) rolls the `Tx` back and
    runs the same function again in an `AsyncSession`. A BaseException, so that no `except Exception` on
    the way up can mistake it for a failure of the work itself."""


# PostgreSQL connections a process's `Tx`s keep between units instead of returning them to the engine's pool,
# whose checkout and checkin (events, reset, a greenlet each way) cost a hot path's unit as much as a statement.
# A few suffice: as many as units run at once. One that sat longer than the pool's ping threshold
# (zaima.db.PING_AFTER_IDLE_SECONDS) goes back to the pool instead, which checks it before lending it out.
_HELD: weakref.WeakKeyDictionary[Engine, list[tuple[Any, float]]] = weakref.WeakKeyDictionary()
HOLD_MAX = 8
HOLD_IDLE_SECONDS = 5.0


async def _checkout(engine: AsyncEngine):
    held = _HELD.get(engine.sync_engine)
    while held:
        fairy, since = held.pop()
        if fairy.dbapi_connection.driver_connection.is_closed():  # asyncpg saw the server close it
            await greenlet_spawn(fairy.invalidate)
        elif time.monotonic() - since < HOLD_IDLE_SECONDS:
            return fairy
        else:
            await greenlet_spawn(fairy.close)
    return await engine.raw_connection()


async def _checkin(engine: AsyncEngine, fairy) -> None:
    if engine.dialect.name == "postgresql":  # (SQLite's pool has one connection: sessions need it too)
        held = _HELD.setdefault(engine.sync_engine, [])
        if len(held) < HOLD_MAX:
            held.append((fairy, time.monotonic()))
            return
    await greenlet_spawn(fairy.close)  # the pool's checkin (its reset has nothing to roll back)


async def release_held(engine: AsyncEngine) -> None:
    """Return the connections the `Tx`s keep to the engine's pool: before `engine.dispose()`."""
    for fairy, _since in _HELD.pop(engine.sync_engine, []):
        await greenlet_spawn(fairy.close)


class Tx:
    """A transaction straight on a pooled driver connection, for the hot paths whose every statement goes
    through this module: no AsyncSession, no SQLAlchemy Connection, no greenlet per statement.

    A session's begin, commit and close cost about as much Python as the statements of a small unit of
    work. A `Tx` stands in for the session: services that take `session` and run `fetch`/`execute`/`defer`
    work unchanged, `info` carries `zaima.db.on_commit` callbacks, `bind` gives the dialect. Asked for
    anything else a session has, it raises `NeedsSession` (see there). Made and ended by `zaima.db`."""

    __slots__ = ("bind", "info", "driver", "_fairy", "_dead")
    no_autoflush = contextlib.nullcontext()  # nothing to autoflush

    def __getattr__(self, name: str):
        raise NeedsSession(name)

    @classmethod
    async def open(cls, engine: AsyncEngine, *, read_only: bool = False) -> Tx:
        """Check a connection out of the engine's pool and begin. `read_only` on PostgreSQL: no BEGIN (each
        statement is its own snapshot; a write is sent at once and commits by itself).

        Otherwise, on PostgreSQL, the BEGIN is lazy: plain reads go out on their own until the first write
        or locking read has to be sent (READ COMMITTED gives each statement its own snapshot either way).
        A unit whose writes all stay queued until its commit sends them as one statement that checks its
        own row counts and commits by itself (`_Driver.commit_alone`): no BEGIN or COMMIT at all."""
        tx = object.__new__(cls)
        tx.bind, tx.info, tx._dead = engine, {}, False
        tx._fairy = await _checkout(engine)
        tx.driver = d = _Driver(tx, engine.dialect, tx._fairy.dbapi_connection)
        d.autocommit = read_only and not d.sqlite
        d.lazy = not read_only and not d.sqlite
        if d.in_transaction:  # never expected: a connection is only ever returned outside a transaction
            await tx.close()
            raise RuntimeError("pooled connection is inside a transaction")
        if d.sqlite:
            try:
                await d.command("BEGIN IMMEDIATE")
            except BaseException:
                tx._dead = True  # e.g. cancelled while a SQLite BEGIN waits in aiosqlite's thread: it may still win
                await tx.close()
                raise
        return tx

    async def commit(self) -> None:
        d = self.driver
        if d.lazy:
            await d.commit_alone()
            return
        await d.flush()
        if not d.autocommit:
            await d.command("COMMIT")

    async def rollback(self) -> None:
        self.driver.pending.clear()
        if self.driver.autocommit or self.driver.lazy or self._dead:
            return
        try:
            await self.driver.command("ROLLBACK")
        except Exception:  # the error that made us roll back is the one to report
            self._dead = True  # e.g. a statement still in flight: the connection is not reusable
        except BaseException:
            self._dead = True
            raise

    async def invalidate(self, _exc: BaseException | None = None) -> None:
        self._dead = True

    async def close(self) -> None:
        """Back to the pool; a connection that failed or is still inside a transaction is discarded instead."""
        fairy = self._fairy
        if self._dead or self.driver.in_transaction:
            await greenlet_spawn(fairy.invalidate)
        else:
            await _checkin(self.bind, fairy)


async def driver(session: AsyncSession | Tx) -> _Driver:
    """The driver connection of the session's transaction (begun here if it was not yet), cached on the
    session for as long as that transaction lasts. Inside a SAVEPOINT (`begin_nested`), the SAVEPOINT is
    made to exist first, which SQLAlchemy otherwise does at its first statement: ours belong inside it."""
    if type(session) is Tx:
        return session.driver
    sync = session.sync_session
    transaction = sync.get_transaction()
    cached = session.info.get(_DRIVER)
    if transaction is not None and cached is not None and cached[0] is transaction:
        if sync.in_nested_transaction():
            await session.connection()
        return cached[1]
    found = _Driver.of_connection(await session.connection())
    await found.begin()
    session.info[_DRIVER] = (sync.get_transaction(), found)
    return found


async def _prepare(session: AsyncSession, statement: Prepared | dict[str, Prepared]
                   ) -> tuple[_Driver, Prepared, _Compiled]:
    """The session's driver and the statement compiled for its dialect (`statement` may be per dialect)."""
    d = await driver(session)
    prepared = statement if isinstance(statement, Prepared) else statement[d.dialect.name]
    return d, prepared, prepared.compiled(d.dialect)


async def fetch(session: AsyncSession, statement: Prepared | dict[str, Prepared], **params) -> list[tuple]:
    """The statement's rows, each value converted as SQLAlchemy's result types would."""
    d, prepared, compiled = await _prepare(session, statement)
    text, args = await d.ahead_of(prepared, compiled, compiled.args(params))
    return [compiled.row(r) for r in await d.fetch(text, args)]


async def fetch_one(session: AsyncSession, statement: Prepared | dict[str, Prepared], **params) -> tuple | None:
    rows = await fetch(session, statement, **params)
    return rows[0] if rows else None


async def execute(session: AsyncSession, statement: Prepared | dict[str, Prepared], **params) -> int:
    """Run a statement without result rows; returns the number of rows it changed."""
    d, prepared, compiled = await _prepare(session, statement)
    text, args = await d.ahead_of(prepared, compiled, compiled.args(params))
    return await d.execute(text, args)


async def defer(session: AsyncSession, statement: Prepared | dict[str, Prepared], *, expect: int | None = None,
                stale: str = "", assumed: bool = False, **params) -> None:
    """Queue a write (INSERT/UPDATE/DELETE) to be sent with the next ones (see the module's docstring).
    With `expect`, the write must change exactly that many rows, or the flush raises StaleDataError
    (`stale` is its message). Inside a SAVEPOINT the write is sent now, so it rolls back with it; on an
    autocommit connection (`zaima.db.read_only`), which never commits, it is sent now too.

    `assumed` (only where `may_assume`): `expect` is what the caller assumes rather than knows (e.g. that
    the stock covers an order), to spare the round trip that would tell. A miss raises `NeedsSession`:
    the unit's writes are dropped and it runs again in a session, where the caller takes its careful path."""
    await _defer(session, statement, params, expect, stale, assumed)


async def check(session: AsyncSession | Tx, statement: Prepared | dict[str, Prepared], *, expect: int = 1,
                **params) -> None:
    """Queue a read whose row count the unit assumes rather than reads now (e.g. that the product a checkout
    took from a cache still sells at that price): it travels with the unit's writes, in the same snapshot, and
    a miss reruns the unit in a session, as with `defer(…, assumed=True)`. Only where `may_assume`."""
    await _defer(session, statement, params, expect, "", True)


def may_assume(session: AsyncSession | Tx) -> bool:
    """Whether a write's row count may be assumed (`defer(…, assumed=True)`): in a PostgreSQL `Tx`."""
    return type(session) is Tx and not session.driver.sqlite


async def _defer(session: AsyncSession, statement: Prepared | dict[str, Prepared], params: dict,
                 expect: int | None = None, stale: str = "", assumed: bool = False,
                 rows: tuple[dict, ...] | None = None) -> None:
    d, prepared, compiled = await _prepare(session, statement)
    if prepared.table is None and not assumed:
        raise ValueError("only writes can be deferred")
    if assumed and not may_assume(session):
        raise ValueError("a row count can be assumed only in a PostgreSQL Tx")
    part = _Part(prepared, compiled, compiled.args(params), expect, stale, assumed, rows)
    if d.autocommit or (type(session) is not Tx and session.sync_session.in_nested_transaction()):
        await d.flush()
        d._check(part, await d.execute(compiled.sql, part.args))
        return
    await d.queue(part)


async def defer_rows(session: AsyncSession, table: Table, rows: list[dict]) -> None:
    """Queue one INSERT of rows (all with the same keys once defaults are filled in, as the ORM would),
    in their order."""
    rows = [with_defaults(table, r) for r in rows]
    if len(rows) == 1:
        await _defer(session, insert_for(table, rows[0].keys()), rows[0], rows=tuple(rows))
    else:
        await _defer(session, insert_for(table, rows[0].keys(), rows=len(rows)), numbered(rows), rows=tuple(rows))


class Row:
    """A table row as a plain object with the ORM model's attribute names (and its properties), for hot
    paths that read rows with `fetch` instead of loading ORM objects. It remembers the values it was
    loaded with, so a writer can send only what changed (`changes`)."""

    __slots__ = ("_loaded",)
    _columns: tuple[str, ...] = ()
    _select: Prepared  # the model's columns: how their values are converted

    @classmethod
    def of(cls, values: Sequence):
        row = object.__new__(cls)
        for name, value in zip(cls._columns, values, strict=True):
            object.__setattr__(row, name, value)
        row._loaded = tuple(values)
        return row  # (each `row_type` class has its own, faster `of`)

    @classmethod
    def decoded(cls, dialect, raw: Sequence):
        """A row whose values arrived raw from the driver some other way (e.g. as a record inside an array),
        with each value converted as the model's own columns are."""
        return cls.of(cls._select.compiled(dialect).row(raw))

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, before in zip(self._columns, self._loaded, strict=True)
                if getattr(self, name) != before}

    def mark_saved(self, *names: str) -> None:
        """Take the current values (of `names` only, if given) as the stored ones."""
        self._loaded = tuple(getattr(self, name) if not names or name in names else before
                             for name, before in zip(self._columns, self._loaded, strict=True))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={getattr(self, 'id', None)}>"


def assign(target, **values) -> None:
    """Show values just written with `execute` on the object that holds the row: a `Row` takes them as
    loaded; an ORM object takes them as committed state, so its next flush does not write them again."""
    if isinstance(target, Row):
        for name, value in values.items():
            setattr(target, name, value)
        target.mark_saved()
        return
    for name, value in values.items():
        set_committed_value(target, name, value)


def row_type(model) -> type[Row]:
    """A `Row` class for an ORM model: its columns as slots, in table order, and its Python properties."""
    columns = tuple(c.key for c in model.__table__.columns)
    namespace = {"__slots__": columns, "_columns": columns, "__module__": model.__module__,
                 "_select": Prepared(select(*model.__table__.columns))}
    for klass in reversed(model.__mro__):
        namespace.update({k: v for k, v in vars(klass).items() if isinstance(v, property)})
    namespace["of"] = classmethod(_row_maker(columns))
    return type(f"{model.__name__}Row", (Row,), namespace)


def _row_maker(columns: tuple[str, ...]):
    """`Row.of` for these columns, as code that assigns each slot by name (one unpacking, which also checks
    the count): a hot path builds a dozen rows per request."""
    if not all(c.isidentifier() for c in columns):
        return Row.of.__func__
    namespace = {"new": object.__new__}
    exec(f"def of(cls, values):\n    row = new(cls)\n    {', '.join(f'row.{c}' for c in columns)}, = values\n"  # noqa: S102
         "    row._loaded = tuple(values)\n    return row\n", namespace)
    return namespace["of"]
