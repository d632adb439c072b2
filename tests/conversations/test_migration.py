"""Migration 0002 creates exactly what the conversation models describe, on SQLite and PostgreSQL, and
downgrades cleanly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import zaima.models  # noqa: F401 - registers the tables
from zaima.db import Base, create_engine
from zaima.migrate import upgrade

TABLES = {"customers", "conversations", "messages", "attachments", "canned_responses"}


def _table_of(diff) -> str:
    """The table an Alembic autogenerate difference is about."""
    if isinstance(diff, list):  # column modifications come grouped
        diff = diff[0]
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        return diff[1].name
    if kind in ("add_column", "remove_column") or kind.startswith("modify_"):
        return diff[2]
    return diff[1].table.name  # an index, a constraint or a foreign key


async def test_the_migrated_schema_matches_the_models(db_url):
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            def compare(sync_connection):
                context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
                return compare_metadata(context, Base.metadata)

            diffs = await connection.run_sync(compare)
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert TABLES <= tables
    assert [d for d in diffs if _table_of(d) in TABLES] == []


async def test_downgrade_to_0001_removes_the_tables_and_upgrade_brings_them_back(db_url):
    engine = create_engine(db_url)
    try:
        from alembic import command

        from zaima.migrate import alembic_config

        async with engine.begin() as connection:
            def down(sync_connection):
                cfg = alembic_config()
                cfg.attributes["connection"] = sync_connection
                command.downgrade(cfg, "0001")

            await connection.run_sync(down)
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert not TABLES & tables and "orders" in tables
        await upgrade(engine)
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert TABLES <= tables
    finally:
        await engine.dispose()
