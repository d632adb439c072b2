"""mail_optouts: addresses that asked for no more survey e-mails

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 10:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'mail_optouts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('address_digest', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('via', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_mail_optouts')),
        sa.UniqueConstraint('address_digest', 'kind', name=op.f('uq_mail_optouts_address_digest_kind')),
    )


def downgrade() -> None:
    op.drop_table('mail_optouts')
