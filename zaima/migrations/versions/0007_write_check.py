"""zaima_expect_counts: lets one statement of queued writes check its own row counts (PostgreSQL)

A unit of work whose writes all go out as one statement needs no BEGIN/COMMIT around them (see
`zaima.sql`), but then a write that changed the wrong number of rows (an order's version that moved, a key
reservation that came up short) must abort that statement itself, before it commits. The statement ends in
`SELECT zaima_expect_counts(ARRAY[counts…], ARRAY[expected…])`, which raises SQLSTATE ZA001 with the index
of the first write that missed in DETAIL.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 00:40:00
"""

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite sends queued writes one by one inside its transaction
    op.execute("""
        CREATE FUNCTION zaima_expect_counts(counts bigint[], expected bigint[]) RETURNS integer
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            FOR i IN 1 .. coalesce(array_length(counts, 1), 0) LOOP
                IF counts[i] <> expected[i] THEN
                    RAISE EXCEPTION 'write % changed % row(s), expected %', i - 1, counts[i], expected[i]
                        USING ERRCODE = 'ZA001', DETAIL = (i - 1)::text;
                END IF;
            END LOOP;
            RETURN 0;
        END
        $$
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION zaima_expect_counts(bigint[], bigint[])")
