"""What one unit of work costs the server besides its statements.

A `zaima.db.unit_of_work` is an `AsyncSession`, a pooled connection, BEGIN, the statements, COMMIT, the
connection back to the pool. The order's hot path (create, notify, read) runs in `zaima.db.lean_unit`
instead: the same transaction straight on a pooled driver connection (`zaima.sql.Tx`). This measures, in
one process and on the CPU clock, each kind of unit running one trivial statement through `zaima.sql`,
against the same statement run again inside an open unit. The difference is what the unit itself costs:
for a session, SQLAlchemy's session, connection and pool layers (three greenlet hops); for a lean unit,
the pool only (two); on PostgreSQL, both also the BEGIN and COMMIT round trips.

    .venv/bin/python bench/unit_of_work.py                         # SQLite, a temporary file
    psql -h 127.0.0.1 -U postgres -c 'CREATE DATABASE zaima_unit'
    .venv/bin/python bench/unit_of_work.py \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/zaima_unit
    psql -h 127.0.0.1 -U postgres -c 'DROP DATABASE zaima_unit'

The database is migrated first (Zaima's own migrations). The LAST line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from sqlalchemy import bindparam, select

from zaima import sql
from zaima.db import create_engine, lean_unit, make_sessionmaker, unit_of_work
from zaima.migrate import upgrade
from zaima.models import Product

STATEMENT = sql.Prepared(select(Product.id).where(Product.id == bindparam("product_id")))


async def measure(url: str, units: int) -> dict:
    engine = create_engine(url)
    await upgrade(engine)
    sessions = make_sessionmaker(engine)

    async def session_unit() -> None:
        async with unit_of_work(sessions) as session:
            await sql.fetch_one(session, STATEMENT, product_id=1)

    async def lean() -> None:
        async with lean_unit(sessions) as tx:
            await sql.fetch_one(tx, STATEMENT, product_id=1)

    async def per_call(fn) -> float:
        for _ in range(200):  # warm-up: pool filled, statements compiled and prepared
            await fn()
        started = time.process_time()
        for _ in range(units):
            await fn()
        return (time.process_time() - started) / units

    per_session_unit = await per_call(session_unit)
    per_lean_unit = await per_call(lean)
    async with unit_of_work(sessions) as session:
        started = time.process_time()
        for _ in range(units):
            await sql.fetch_one(session, STATEMENT, product_id=1)
        per_statement = (time.process_time() - started) / units
    await engine.dispose()
    return {"database": engine.dialect.name, "units": units,
            "unit_with_one_statement_us": round(per_session_unit * 1e6, 1),
            "lean_unit_with_one_statement_us": round(per_lean_unit * 1e6, 1),
            "statement_alone_us": round(per_statement * 1e6, 1),
            "unit_overhead_us": round((per_session_unit - per_statement) * 1e6, 1),
            "lean_unit_overhead_us": round((per_lean_unit - per_statement) * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="", help="default: a temporary SQLite file")
    parser.add_argument("--units", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'unit.db'}"
        print(json.dumps(asyncio.run(measure(url, args.units))))


if __name__ == "__main__":
    main()
