"""What the claim re-checks before an email goes out: everything that may have changed since
its row was planned.

A stop (reply, referral, unsubscribe, bounce) cancels the row in the transaction that records
it, so the claim's compare-and-set already sees those. What is left is read here, inside the
claim's transaction: the contact's status, the campaign and its step (a file may have changed),
a pause, the enrollment, an out-of-office that moved the row, the send window and, last, the
mailbox's limits, so only a send that will really be tried counts against them.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ..app import Nurture
from ..content.campaigns import Campaign, round_of
from ..limits import take_send
from ..models import CampaignRow, ContactStatus, EnrollmentState, Touch, TouchState
from ..schedule import in_window, next_window_opening

LATER = "later"  # outside the send window, or the mailbox's limits: rescheduled, not skipped

# Reasons to wait rather than to skip (see :func:`obstacle`).
ON_HOLD, EARLY, CLOSED = "campaign paused", "not due yet", "outside the send window"
_WAIT = (ON_HOLD, EARLY, CLOSED)


def recheck(app: Nurture, session: Session, touch: Touch) -> str | None:
    """Why this claimed touch must not go out now, or None (and then its send is counted
    against the mailbox). :data:`LATER` means later, not never: the touch is then scheduled
    again here, its attempt uncounted since nothing was tried."""
    now = app.now()
    why = obstacle(app, session, touch, now)
    if why is not None and why not in _WAIT:
        return why
    later = None
    if why is None:
        later = take_send(app.settings, session, now)
        if later is None:
            return None
    touch.state, touch.job_id = TouchState.SCHEDULED, None  # a paused one waits for resume
    touch.attempts -= 1
    if why == CLOSED or later is not None:
        campaign = app.campaigns[touch.enrollment.campaign_id]
        touch.due_at = next_window_opening(later or now, campaign.send_window,
                                           window_zone(app, touch, campaign))
    return LATER


def obstacle(app: Nurture, session: Session, touch: Touch, now: datetime) -> str | None:
    """What stands in the way of sending ``touch`` now, changing nothing; None when nothing
    does. One of :data:`ON_HOLD`, :data:`EARLY`, :data:`CLOSED` means it may go later;
    anything else means never."""
    enrollment, contact = touch.enrollment, touch.enrollment.contact
    if contact.status != ContactStatus.ACTIVE:
        return f"contact is {contact.status}"
    campaign = app.campaigns.get(enrollment.campaign_id)
    if campaign is None:
        return f"campaign {enrollment.campaign_id!r} no longer exists"
    try:
        campaign.step(touch.step_id)
    except KeyError:
        return f"step {touch.step_id!r} was removed from campaign {campaign.id!r}"
    if session.connection().execute(_PAUSED, {"campaign": campaign.id}).scalar():
        return ON_HOLD
    sequence = round_of(touch.trigger_key) is not None  # not a triggered thank-you
    if sequence and enrollment.state != EnrollmentState.ACTIVE:
        return f"enrollment {enrollment.state} ({enrollment.stop_reason or 'done'})"
    if touch.due_at > now:  # queued by a tick that ran ahead (`--now` in the future)
        return EARLY
    if not in_window(now, campaign.send_window, window_zone(app, touch, campaign)):
        return CLOSED
    return None


_PAUSED = select(CampaignRow.paused).where(CampaignRow.id == bindparam("campaign"))


def window_zone(app: Nurture, touch: Touch, campaign: Campaign) -> ZoneInfo:
    """The zone the touch's send window is read in."""
    window = campaign.send_window
    return app.zone_for(touch.enrollment.contact.timezone, window.timezone if window else None)
