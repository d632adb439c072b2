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
this way must not also hold the row as an ORM object it later flushes (see `zaima.store.rows`).

Limits: no expanding (IN-list) parameters and no SQL-side defaults beyond what the table declares; a
statement that needs them stays on the ORM/Core path.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql import Executable

_MISSING = object()


class _Compiled:
    __slots__ = ("sql", "names", "defaults", "binders", "results")

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

    __slots__ = ("statement", "_by_dialect")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._by_dialect: dict[str, _Compiled] = {}

    def compiled(self, dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is None:
            found = self._by_dialect[dialect.name] = _Compiled(self.statement, dialect)
        return found


def per_dialect(**statements: Executable) -> dict[str, Prepared]:
    """Statements that differ between SQLite and PostgreSQL, keyed by dialect name."""
    return {name: Prepared(s) for name, s in statements.items()}


def insert_for(table: Table, columns: Iterable[str], returning: tuple = ()) -> Prepared:
    """`INSERT INTO table (columns…) VALUES (…) [RETURNING …]`, prepared once per table and column set."""
    return _insert(table, frozenset(columns), returning)


@functools.cache
def _insert(table: Table, columns: frozenset, returning: tuple) -> Prepared:
    statement = insert(table).values({c: bindparam(c) for c in sorted(columns)})
    return Prepared(statement.returning(*returning) if returning else statement)


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


class _Driver:
    """The session's transaction connection, as the driver sees it."""

    __slots__ = ("connection", "dialect", "adapter", "raw", "sqlite")

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self.dialect = connection.dialect
        self.adapter = connection.sync_connection.connection.dbapi_connection
        self.sqlite = self.dialect.name == "sqlite"
        # SQLite: the sqlite3 connection inside aiosqlite (zaima.db runs its calls in the loop's thread);
        # PostgreSQL: the asyncpg connection.
        self.raw = self.adapter._connection._conn if self.sqlite else self.adapter._connection

    async def _error(self, statement: str, args, exc: Exception) -> Exception:
        """A driver error as SQLAlchemy would have raised it (anything else, e.g. OverflowError binding a
        huge int on SQLite, unchanged). A connection the error shows to be gone is invalidated, as
        SQLAlchemy does for its own statements, so the pool replaces it instead of lending it out again."""
        if self.sqlite:
            return DBAPIError.instance(statement, args, exc, sqlite3.Error) if isinstance(exc, sqlite3.Error) else exc
        try:
            self.adapter._handle_exception(exc)  # asyncpg's error → the DB-API error SQLAlchemy uses
        except Exception as translated:  # noqa: BLE001 - returned wrapped below
            gone = self.dialect.is_disconnect(translated, self.adapter, None)
            if gone:
                await self.connection.invalidate(translated)
            return DBAPIError.instance(statement, args, translated, self.dialect.loaded_dbapi.Error,
                                       connection_invalidated=gone)
        return exc

    async def begin(self) -> None:
        """PostgreSQL: SQLAlchemy's adapter begins lazily, at its first statement; begin now."""
        if self.sqlite or self.adapter._transaction is not None or self.adapter.isolation_level == "autocommit":
            return
        try:
            await self.adapter._start_transaction()
        except Exception as exc:
            raise await self._error("BEGIN", (), exc) from exc

    async def fetch(self, compiled: _Compiled, args: tuple) -> list:
        try:
            if self.sqlite:
                return self.raw.execute(compiled.sql, args).fetchall()
            return await self.raw.fetch(compiled.sql, *args)
        except Exception as exc:
            raise await self._error(compiled.sql, args, exc) from exc

    async def execute(self, compiled: _Compiled, args: tuple) -> int:
        try:
            if self.sqlite:
                return self.raw.execute(compiled.sql, args).rowcount
            status = await self.raw.execute(compiled.sql, *args)
            return int(status.rsplit(" ", 1)[-1]) if status and status[-1].isdigit() else 0
        except Exception as exc:
            raise await self._error(compiled.sql, args, exc) from exc

    async def execute_many(self, compiled: _Compiled, rows: list[tuple]) -> None:
        try:
            if self.sqlite:
                self.raw.executemany(compiled.sql, rows)
            else:
                await self.raw.executemany(compiled.sql, rows)
        except Exception as exc:
            raise await self._error(compiled.sql, rows, exc) from exc


async def driver(session: AsyncSession) -> _Driver:
    """The driver connection of the session's transaction (begun here if it was not yet), cached on the
    session for as long as that transaction lasts."""
    transaction = session.sync_session.get_transaction()
    cached = session.info.get("_sql_driver")
    if transaction is not None and cached is not None and cached[0] is transaction:
        return cached[1]
    found = _Driver(await session.connection())
    await found.begin()
    session.info["_sql_driver"] = (session.sync_session.get_transaction(), found)
    return found


async def _prepare(session: AsyncSession, statement: Prepared | dict[str, Prepared]) -> tuple[_Driver, _Compiled]:
    """The session's driver and the statement compiled for its dialect (`statement` may be per dialect)."""
    d = await driver(session)
    prepared = statement if isinstance(statement, Prepared) else statement[d.dialect.name]
    return d, prepared.compiled(d.dialect)


async def fetch(session: AsyncSession, statement: Prepared | dict[str, Prepared], **params) -> list[tuple]:
    """The statement's rows, each value converted as SQLAlchemy's result types would."""
    d, compiled = await _prepare(session, statement)
    return [compiled.row(r) for r in await d.fetch(compiled, compiled.args(params))]


async def fetch_one(session: AsyncSession, statement: Prepared | dict[str, Prepared], **params) -> tuple | None:
    rows = await fetch(session, statement, **params)
    return rows[0] if rows else None


async def execute(session: AsyncSession, statement: Prepared | dict[str, Prepared], **params) -> int:
    """Run a statement without result rows; returns the number of rows it changed."""
    d, compiled = await _prepare(session, statement)
    return await d.execute(compiled, compiled.args(params))


async def execute_many(session: AsyncSession, statement: Prepared | dict[str, Prepared], rows: list[dict]) -> None:
    """Run a statement once per parameter set, in one driver call."""
    d, compiled = await _prepare(session, statement)
    if len(rows) == 1:
        await d.execute(compiled, compiled.args(rows[0]))
    else:
        await d.execute_many(compiled, [compiled.args(r) for r in rows])


async def insert_rows(session: AsyncSession, table: Table, rows: list[dict]) -> None:
    """INSERT rows (all with the same keys once defaults are filled in) in one driver call."""
    rows = [with_defaults(table, r) for r in rows]
    await execute_many(session, insert_for(table, rows[0].keys()), rows)


class Row:
    """A table row as a plain object with the ORM model's attribute names (and its properties), for hot
    paths that read rows with `fetch` instead of loading ORM objects. It remembers the values it was
    loaded with, so a writer can send only what changed (`changes`)."""

    __slots__ = ("_loaded",)
    _columns: tuple[str, ...] = ()

    @classmethod
    def of(cls, values: Sequence):
        row = object.__new__(cls)
        for name, value in zip(cls._columns, values, strict=True):
            object.__setattr__(row, name, value)
        row._loaded = tuple(values)
        return row

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, before in zip(self._columns, self._loaded, strict=True)
                if getattr(self, name) != before}

    def mark_saved(self) -> None:
        self._loaded = tuple(getattr(self, name) for name in self._columns)

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
    namespace = {"__slots__": columns, "_columns": columns, "__module__": model.__module__}
    for klass in reversed(model.__mro__):
        namespace.update({k: v for k, v in vars(klass).items() if isinstance(v, property)})
    return type(f"{model.__name__}Row", (Row,), namespace)
