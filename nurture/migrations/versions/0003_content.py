"""content library: which item each contact was sent

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('content_sent',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('touch_id', sa.Integer(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_content_sent_contact_id_contacts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['touch_id'], ['touches.id'], name=op.f('fk_content_sent_touch_id_touches'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_content_sent')),
    sa.UniqueConstraint('contact_id', 'item_id', name=op.f('uq_content_sent_contact_id'))
    )
    with op.batch_alter_table('content_sent', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_content_sent_contact_id'), ['contact_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_content_sent_touch_id'), ['touch_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('content_sent', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_content_sent_touch_id'))
        batch_op.drop_index(batch_op.f('ix_content_sent_contact_id'))

    op.drop_table('content_sent')
