"""inbox: mailbox checkpoints, processed messages, contact aliases, soft-bounce counts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contact_aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], name=op.f("fk_contact_aliases_contact_id_contacts"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_aliases")),
        sa.UniqueConstraint("email", name=op.f("uq_contact_aliases_email")),
    )
    with op.batch_alter_table("contact_aliases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contact_aliases_contact_id"), ["contact_id"], unique=False)

    op.create_table(
        "inbox_checkpoints",
        sa.Column("mailbox", sa.String(length=400), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("polled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", name=op.f("pk_inbox_checkpoints")),
    )

    op.create_table(
        "inbox_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=True),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("touch_id", sa.Integer(), nullable=True),
        sa.Column("matched_by", sa.String(length=20), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(length=400), nullable=True),
        sa.Column("excerpt", sa.Text(), nullable=True),
        sa.Column("notify_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], name=op.f("fk_inbox_messages_contact_id_contacts"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["touch_id"], ["touches.id"], name=op.f("fk_inbox_messages_touch_id_touches"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_messages")),
        sa.UniqueConstraint("key", name=op.f("uq_inbox_messages_key")),
    )
    with op.batch_alter_table("inbox_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbox_messages_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_inbox_messages_contact_id"), ["contact_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_inbox_messages_notify_after"), ["notify_after"], unique=False)

    op.create_table(
        "soft_bounces",
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_touch_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], name=op.f("fk_soft_bounces_contact_id_contacts"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_soft_bounces")),
    )


def downgrade() -> None:
    op.drop_table("soft_bounces")
    with op.batch_alter_table("inbox_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbox_messages_notify_after"))
        batch_op.drop_index(batch_op.f("ix_inbox_messages_contact_id"))
        batch_op.drop_index(batch_op.f("ix_inbox_messages_action"))
    op.drop_table("inbox_messages")
    op.drop_table("inbox_checkpoints")
    with op.batch_alter_table("contact_aliases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_aliases_contact_id"))
    op.drop_table("contact_aliases")
