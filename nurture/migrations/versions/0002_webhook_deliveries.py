"""webhook deliveries (idempotency keys) and accepted signatures (replay protection)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('endpoint', sa.String(length=40), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('body_sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('response', sa.Text(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    sa.UniqueConstraint('endpoint', 'idempotency_key', name=op.f('uq_webhook_deliveries_endpoint'))
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_deliveries_received_at'), ['received_at'], unique=False)

    op.create_table('webhook_signatures',
    sa.Column('signature', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('signature', name=op.f('pk_webhook_signatures'))
    )
    with op.batch_alter_table('webhook_signatures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_signatures_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webhook_signatures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_signatures_expires_at'))

    op.drop_table('webhook_signatures')
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_received_at'))

    op.drop_table('webhook_deliveries')
