"""orders.created_at index: the admin's order list, newest first

Order ids are drawn in blocks per server process (`zaima.store.orders`), so with several processes the id
order is only roughly the order of creation; the list sorts by creation time instead, and this index keeps
that a short index scan however many orders the store has.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 05:30:00
"""

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f('ix_orders_created_at'), 'orders', ['created_at'])


def downgrade() -> None:
    op.drop_index(op.f('ix_orders_created_at'), table_name='orders')
