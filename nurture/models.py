"""The database schema: the single source of truth for who hears what, and when.

Redis only carries work. Every planned email is a :class:`Touch` row, unique per
(enrollment, step, trigger key), and it moves through explicit states by compare-and-set
updates (see :mod:`nurture.engine`). Times are stored as UTC and always read back aware.
"""

from __future__ import annotations

import enum
import json
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .clock import as_utc


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, on SQLite (which keeps no zone) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: pass an aware UTC time")
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ContactStatus(enum.StrEnum):
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"


class EnrollmentState(enum.StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"  # every sequence step was sent
    STOPPED = "stopped"  # a reply, referral, unsubscribe or bounce ended it; see stop_reason


class TouchState(enum.StrEnum):
    SCHEDULED = "scheduled"  # planned, waiting for due_at
    QUEUED = "queued"  # handed to RQ as part of job_id
    SENDING = "sending"  # claimed by a worker until lease_until; nothing delivered yet
    TRANSMITTING = "transmitting"  # being handed to the server: from here it may be delivered
    SENT = "sent"
    CANCELLED = "cancelled"  # its enrollment stopped before it was due
    SKIPPED = "skipped"  # re-check at send time said no; see reason
    FAILED = "failed"  # gave up; see last_error
    UNCERTAIN = "uncertain"  # a worker died while transmitting it: maybe sent, never resent blindly


PENDING = (TouchState.SCHEDULED, TouchState.QUEUED)


class Contact(Base):
    """A referral source: a physician, trainer, gym or nutritionist."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # normalised, lower case
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    organization: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(100), default="")
    interests: Mapped[list[str]] = mapped_column(JSON, default=list)
    timezone: Mapped[str] = mapped_column(String(64), default="")
    owner: Mapped[str] = mapped_column(String(200), default="")  # who in the practice knows them
    status: Mapped[str] = mapped_column(String(20), default=ContactStatus.ACTIVE)
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    needs_details: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    tags: Mapped[list[ContactTag]] = relationship(
        back_populates="contact", cascade="all, delete-orphan", lazy="selectin")

    @property
    def tag_names(self) -> list[str]:
        return sorted(t.tag for t in self.tags)


class ContactTag(Base):
    __tablename__ = "contact_tags"

    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"),
                                            primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)

    contact: Mapped[Contact] = relationship(back_populates="tags")


class CampaignRow(Base):
    """A campaign as last seen on disk: the YAML file is the definition, this row its identity."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64))
    paused: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Enrollment(Base):
    """One contact going through one campaign."""

    __tablename__ = "enrollments"
    __table_args__ = (UniqueConstraint("contact_id", "campaign_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"),
                                            index=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"), index=True)
    state: Mapped[str] = mapped_column(String(20), default=EnrollmentState.ACTIVE)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stop_reason: Mapped[str | None] = mapped_column(String(200))

    contact: Mapped[Contact] = relationship(lazy="joined")


class Touch(Base):
    """One planned email: a step of an enrollment, or a triggered step such as a thank-you.

    ``trigger_key`` is empty for sequence steps. For a triggered step it names the occasion (the
    referral date), so two referrals on one day share one thank-you and a referral next year gets
    its own.
    """

    __tablename__ = "touches"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id", "trigger_key"),
        Index("ix_touches_state_due_at", "state", "due_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"),
                                               index=True)
    step_id: Mapped[str] = mapped_column(String(100))
    trigger_key: Mapped[str] = mapped_column(String(40), default="")
    state: Mapped[str] = mapped_column(String(20), default=TouchState.SCHEDULED)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str | None] = mapped_column(String(250), unique=True)
    subject: Mapped[str | None] = mapped_column(String(400))
    attempts: Mapped[int] = mapped_column(default=0)
    reason: Mapped[str | None] = mapped_column(Text)  # why skipped / cancelled / failed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    enrollment: Mapped[Enrollment] = relationship(lazy="joined")


class Reply(Base):
    """A person answered: the automation steps aside."""

    __tablename__ = "replies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"),
                                            index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(20))  # manual, imap, webhook
    message_id: Mapped[str | None] = mapped_column(String(250))
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touches.id", ondelete="SET NULL"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Referral(Base):
    """A source sent a patient. Only an opaque external id is kept: never patient details."""

    __tablename__ = "referrals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"),
                                            index=True)
    referred_on: Mapped[date] = mapped_column(Date)
    external_ref: Mapped[str | None] = mapped_column(String(100), unique=True)
    source: Mapped[str] = mapped_column(String(20))  # manual, csv, webhook
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Event(Base):
    """Append-only log of everything that happened, for `status`, reports and audits."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    contact_id: Mapped[int | None] = mapped_column(Integer, index=True)
    enrollment_id: Mapped[int | None] = mapped_column(Integer)
    touch_id: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="{}")

    @property
    def data(self) -> dict[str, Any]:
        return dict(json.loads(self.detail))


class WebhookDelivery(Base):
    """A webhook request that was carried out, kept so a repeat of it is harmless.

    Unique per (endpoint, Idempotency-Key): a repeat with the same body gets ``response`` again
    and changes nothing; a repeat with another body is refused. Kept for
    :data:`nurture.web.webhooks.IDEMPOTENCY_RETENTION`, then pruned.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("endpoint", "idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(40))  # referral, reply
    idempotency_key: Mapped[str] = mapped_column(String(200))
    body_sha256: Mapped[str] = mapped_column(String(64))  # of the canonical JSON payload
    status: Mapped[int] = mapped_column(Integer)
    response: Mapped[str] = mapped_column(Text)  # the JSON body answered the first time
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class WebhookSignature(Base):
    """A signature already accepted: the same signed request is refused if sent again.

    A signature covers its timestamp, so it can only be presented while the timestamp is
    within tolerance; the row is kept until then (``expires_at``) and pruned afterwards.
    """

    __tablename__ = "webhook_signatures"

    signature: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex HMAC-SHA256
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ContentSent(Base):
    """A library item chosen for a contact: never chosen for them again.

    Written in the claim's transaction, before the email goes out, so two workers sending two
    emails to one contact at once cannot pick the same item (the unique key decides). If the
    email is then not sent (it failed for good, or was cancelled or skipped), the row is
    *released*: it stays, pointing at that touch, and a later pick may take the item over.
    """

    __tablename__ = "content_sent"
    __table_args__ = (UniqueConstraint("contact_id", "item_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"),
                                            index=True)
    item_id: Mapped[str] = mapped_column(String(100))  # nurture.content.library.Item.id
    kind: Mapped[str] = mapped_column(String(20))  # article, book
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touches.id", ondelete="SET NULL"),
                                                 index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Mailbox(Base):
    """How much a sender mailbox has sent today, so caps hold across any number of workers.

    A claim counts itself here with a compare-and-set update in its own transaction; on
    PostgreSQL the row lock makes concurrent claimers take turns, so the cap is never exceeded.
    """

    __tablename__ = "mailboxes"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    day: Mapped[date] = mapped_column(Date)  # in the practice's time zone
    sent_today: Mapped[int] = mapped_column(default=0)
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ContactAlias(Base):
    """Another address of a contact (a second mailbox, an assistant who answers for them).

    A message from an alias is matched to the contact; emails are still sent to ``Contact.email``
    only. An address belongs to one contact at most.
    """

    __tablename__ = "contact_aliases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"),
                                            index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # normalised, lower case


class InboxCheckpoint(Base):
    """How far reading a mailbox folder got: every UID up to ``last_uid`` under ``uidvalidity``
    has been processed. A new UIDVALIDITY means the server renumbered the folder (see
    :mod:`nurture.inbound.imap`)."""

    __tablename__ = "inbox_checkpoints"

    mailbox: Mapped[str] = mapped_column(String(400), primary_key=True)  # user@host/folder
    uidvalidity: Mapped[int] = mapped_column(BigInteger)  # IMAP numbers are 32-bit unsigned
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    polled_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InboxMessage(Base):
    """One incoming message nurture has acted on (or decided to leave alone), once.

    ``key`` is its Message-ID (or ``sha256:`` of its bytes when it has none): the unique key
    that makes reading a message twice (a re-scan, two workers) change nothing. ``subject`` and
    ``excerpt`` are kept only until the owner has been notified, then cleared.
    """

    __tablename__ = "inbox_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(250), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # nurture.inbound.classify.KINDS, or "own"
    action: Mapped[str] = mapped_column(String(20), index=True)  # nurture.inbound.inbox.ACTIONS
    sender: Mapped[str | None] = mapped_column(String(320))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), index=True)
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touches.id", ondelete="SET NULL"))
    matched_by: Mapped[str | None] = mapped_column(String(20))  # message_id, address, alias...
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    detail: Mapped[str] = mapped_column(Text, default="{}")
    subject: Mapped[str | None] = mapped_column(String(400))
    excerpt: Mapped[str | None] = mapped_column(Text)
    notify_after: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SoftBounceCount(Base):
    """Soft bounces in a row for a contact, one per touch; any sign of life resets it."""

    __tablename__ = "soft_bounces"

    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"),
                                            primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
    last_touch_id: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
