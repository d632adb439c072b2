"""conversations.agent_unread: the inbox's unread count kept on the row

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 04:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('conversations', sa.Column('agent_unread', sa.Integer(), server_default='0', nullable=False))
    op.execute("UPDATE conversations SET agent_unread = (SELECT count(*) FROM messages"
               " WHERE messages.conversation_id = conversations.id AND messages.sender_kind = 'customer'"
               " AND messages.seq > conversations.agent_read_seq)")


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite ≥ 3.35): a batch rebuild of `conversations` would trip over the
    # foreign keys pointing at it once it holds rows.
    op.drop_column('conversations', 'agent_unread')
