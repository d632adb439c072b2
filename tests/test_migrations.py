"""The migrations build exactly what the models describe (SQLite and PostgreSQL), and each revision
downgrades to the one before it and upgrades back."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import zaima.models  # noqa: F401 - registers the tables
from zaima.db import Base, create_engine
from zaima.migrate import alembic_config, upgrade

# What each revision adds, and the revision before it.
REVISIONS = {
    "0002": ("0001", {"customers", "conversations", "messages", "attachments", "canned_responses"}),
    "0003": ("0002", {"kb_articles", "official_contacts", "bot_states", "bot_actions"}),
}


async def _tables(engine) -> set[str]:
    async with engine.connect() as connection:
        return await connection.run_sync(lambda c: set(inspect(c).get_table_names()))


async def test_the_migrated_schema_matches_the_models(db_url):
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            def compare(sync_connection):
                context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
                return compare_metadata(context, Base.metadata)

            diffs = await connection.run_sync(compare)
    finally:
        await engine.dispose()
    assert diffs == []


@pytest.mark.parametrize("revision", sorted(REVISIONS))
async def test_each_revision_downgrades_and_upgrades_back(db_url, revision):
    previous, added = REVISIONS[revision]
    engine = create_engine(db_url)
    try:
        async with engine.begin() as connection:
            def down(sync_connection):
                cfg = alembic_config()
                cfg.attributes["connection"] = sync_connection
                command.downgrade(cfg, previous)

            await connection.run_sync(down)
        tables = await _tables(engine)
        assert not added & tables and "orders" in tables
        await upgrade(engine)
        assert added <= await _tables(engine)
    finally:
        await engine.dispose()


async def test_0005_counts_the_unread_messages_of_existing_conversations(ctx):
    """Upgrading a database that already has conversations fills agent_unread from the messages (and the
    downgrade works with rows in place)."""
    from sqlalchemy import text

    from tests.conversations.helpers import change, make_agent, make_conversation, make_customer, post
    from zaima.conversations.messages import mark_read
    from zaima.conversations.senders import Sender

    customer, other, agent = await make_customer(ctx), await make_customer(ctx), await make_agent(ctx)
    read_some, answered = await make_conversation(ctx, customer), await make_conversation(ctx, other)
    for i in range(3):
        await post(ctx, read_some.id, Sender.customer(customer), f"a{i}")
    await change(ctx, read_some.id, lambda s, c: mark_read(s, c, "agent", 1))  # two left unread
    for sender, text_ in ((Sender.customer(other), "b0"), (Sender.agent(agent), "reply"),
                          (Sender.customer(other), "b1"), (Sender.bot(), "bot")):
        await post(ctx, answered.id, sender, text_)  # one customer message after the agent's reply

    async def unread():
        async with ctx.engine.connect() as connection:
            return (await connection.execute(text("SELECT id, agent_unread FROM conversations ORDER BY id"))).all()

    assert await unread() == [(read_some.id, 2), (answered.id, 1)]
    async with ctx.engine.begin() as connection:
        def down(sync_connection):
            cfg = alembic_config()
            cfg.attributes["connection"] = sync_connection
            command.downgrade(cfg, "0004")

        await connection.run_sync(down)
    await upgrade(ctx.engine)
    assert await unread() == [(read_some.id, 2), (answered.id, 1)]
