"""What the worker tells the practice owner: one line per email, one per tick that found work,
and a clear line for every failure, retry or uncertain send.

The lines go to the ``nurture.activity`` logger; ``nurture worker`` prints them (see
:func:`shown`), RQ's own lines stay at WARNING unless ``--verbose``. Times are the practice's local
time, by the project's clock (so ``--now`` shows the time it acts at).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from ..app import Nurture

log = logging.getLogger("nurture.activity")

# outcome → (level, how it reads); the touch id lets the owner find it in `nurture status`
OUTCOMES = {
    "sent": (logging.INFO, "sent"),
    "retry": (logging.WARNING, "NOT SENT, will retry"),
    "failed": (logging.ERROR, "FAILED"),
    "uncertain": (logging.ERROR, "UNCERTAIN, possibly delivered: look for it in the sent "
                                 "folder, then `nurture resolve {touch} --sent` or --resend"),
}


def _local(app: Nurture) -> str:
    zone = ZoneInfo(app.settings.practice_timezone)
    return app.now().astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def outcome_of(exc: Exception) -> str:
    """The outcome a delivery error records: retry (temporary), uncertain, or failed."""
    from .transport import TransientDeliveryError, UncertainDeliveryError

    if isinstance(exc, TransientDeliveryError):
        return "retry"
    return "uncertain" if isinstance(exc, UncertainDeliveryError) else "failed"


def email(app: Nurture, claimed: Any, subject: str, outcome: str, why: str = "") -> None:
    """One line for one email's outcome (``claimed``: a :class:`~.sending.Claimed`)."""
    level, text = OUTCOMES[outcome]
    if not log.isEnabledFor(level):  # nobody is listening: spend nothing on the send path
        return
    prepared = claimed.prepared
    reason = f" ({why})" if why else ""
    log.log(level, "%s  %s  %s/%s  \"%s\"  %s%s  [touch %s]", _local(app), prepared.to_email,
            prepared.campaign.id, prepared.step.id, subject,
            text.format(touch=claimed.touch_id), reason, claimed.touch_id)


def tick(app: Nurture, report: Any) -> None:
    """One line for a tick that found work (``report``: a :class:`~nurture.engine.TickReport`);
    nothing for an idle one."""
    if not log.isEnabledFor(logging.INFO):
        return
    if report.enqueued:
        log.info("%s  tick: %s emails due, queued in %s jobs", _local(app), report.enqueued,
                 report.jobs)
    if report.requeued:
        log.warning("%s  tick: %s emails queued again (Redis had lost their jobs)", _local(app),
                    report.requeued)
    if report.failed:
        log.error("%s  tick: %s emails FAILED after their last attempt (see `nurture status`)",
                  _local(app), report.failed)
    if report.uncertain:
        log.error("%s  tick: %s emails UNCERTAIN, a worker stopped while sending them: see "
                  "`nurture status`", _local(app), report.uncertain)


class _Echo(logging.Handler):
    """Activity lines as they are, anything else from nurture with its level, through ``echo``."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.echo = echo

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.name != log.name:
                text = f"{record.levelname.lower()}: {record.name}: {text}"
                if record.exc_info:
                    text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.echo(text)
        except Exception:  # noqa: BLE001 - logging must never stop the worker
            self.handleError(record)


@contextmanager
def shown(echo: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, nurture's log (activity lines, warnings, errors) goes to ``echo``."""
    root = logging.getLogger("nurture")
    handler, level = _Echo(echo), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
