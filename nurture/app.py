"""The :class:`Nurture` object: one project's settings, database, clock, campaigns and templates.

Library functions take it as their first argument, so the CLI, the RQ jobs and the tests all
drive the same code with whatever clock and database they were given.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .clock import Clock, SystemClock
from .db import Database, open_database
from .errors import NotFound
from .models import CampaignRow
from .settings import Settings, load_settings

if TYPE_CHECKING:  # campaigns (pydantic, YAML) and rendering (Jinja2, MJML) load on first use:
    from sqlalchemy.orm import Session  # `nurture status` needs neither

    from .content.campaigns import Campaign
    from .outbound.render import Renderer

log = logging.getLogger(__name__)


def _signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap fingerprint of a folder's files, to notice edits without re-reading everything."""
    if not folder.is_dir():
        return ()
    return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size)
                        for e in os.scandir(folder) if e.is_file()))


@dataclass
class Nurture:
    settings: Settings
    db: Database
    clock: Clock = field(default_factory=SystemClock)
    _campaigns: dict[str, Campaign] | None = field(default=None, repr=False)
    _campaigns_sig: tuple[Any, ...] = field(default=(), repr=False)
    _renderer: Renderer | None = field(default=None, repr=False)
    _pinned: int = field(default=0, repr=False)

    @classmethod
    def open(cls, settings: Settings | None = None, clock: Clock | None = None) -> Nurture:
        settings = settings or load_settings()
        return cls(settings, open_database(settings.database_url), clock or SystemClock())

    def close(self) -> None:
        self.db.close()

    def now(self) -> datetime:
        return self.clock.now()

    # Campaigns and templates -----------------------------------------------------------
    @property
    def campaigns(self) -> dict[str, Campaign]:
        """The validated campaigns, reloaded when a file changes.

        A long-running worker picks up edits. If an edit breaks validation, the error is raised
        on first load and logged afterwards, and the last good definitions stay in force.
        """
        if self._pinned and self._campaigns is not None:
            return self._campaigns
        sig = (_signature(self.settings.campaigns_dir), _signature(self.settings.templates_dir))
        if self._campaigns is None or sig != self._campaigns_sig:
            from .content.campaigns import load_campaigns

            try:
                loaded = load_campaigns(self.settings.campaigns_dir, self.settings.templates_dir)
            except Exception:
                if self._campaigns is None:
                    raise
                log.exception("campaign files changed but are invalid; keeping the last good set")
                self._campaigns_sig = sig
                return self._campaigns
            self._campaigns, self._campaigns_sig = loaded, sig
        return self._campaigns

    @contextmanager
    def campaigns_pinned(self) -> Iterator[dict[str, Campaign]]:
        """The campaigns as they are now, without looking at the files again until the block
        ends: a send job checks them once per batch rather than several times per email."""
        campaigns = self.campaigns
        self._pinned += 1
        try:
            yield campaigns
        finally:
            self._pinned -= 1

    def campaign(self, campaign_id: str) -> Campaign:
        try:
            return self.campaigns[campaign_id]
        except KeyError:
            known = ", ".join(sorted(self.campaigns)) or "none"
            raise NotFound(f"no campaign {campaign_id!r} (known: {known})") from None

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            from .outbound.render import Renderer

            self._renderer = Renderer(self.settings.templates_dir)
        return self._renderer

    def campaign_row(self, session: Session, campaign: Campaign) -> CampaignRow:
        """The campaign's row, created or refreshed from the file (id, name, content hash)."""
        row = session.get(CampaignRow, campaign.id)
        if row is None:
            row = CampaignRow(id=campaign.id, name=campaign.name,
                              content_hash=campaign.content_hash, updated_at=self.now())
            session.add(row)
        elif row.content_hash != campaign.content_hash or row.name != campaign.name:
            row.name, row.content_hash, row.updated_at = (campaign.name, campaign.content_hash,
                                                          self.now())
        return row

    def sync_campaigns(self) -> None:
        with self.db.transaction() as session:
            for campaign in self.campaigns.values():
                self.campaign_row(session, campaign)

    # Identity shown in emails --------------------------------------------------------------
    def sender_view(self) -> dict[str, str]:
        s = self.settings
        return {"name": s.sender_name, "email": s.sender_email, "title": s.sender_title,
                "practice": s.practice_name, "signature": s.sender_signature}

    def practice_view(self) -> dict[str, str]:
        s = self.settings
        return {"name": s.practice_name, "address": s.practice_address, "phone": s.practice_phone,
                "website": s.practice_website}

    def zone_for(self, contact_timezone: str, window_timezone: str | None = None) -> ZoneInfo:
        """The zone a send window is read in: the window's own, else the contact's, else the
        practice's."""
        if window_timezone and window_timezone != "contact":
            return ZoneInfo(window_timezone)
        return ZoneInfo(contact_timezone or self.settings.practice_timezone)
