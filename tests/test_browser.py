"""The unsubscribe pages in a real headless browser (Debian's chromium), on both databases.

The real waitress server (:func:`nurture.cli.web.make_server`) runs in a thread on a free
loopback port; chromium, driven through chromedriver by Selenium, opens the pages and presses
the button as a recipient would. This checks what a test client cannot: that the browser
renders the page under our Content-Security-Policy, that the form it submits is accepted, and
that the link inside a sent email leads there.

Needs ``apt-get install chromium chromium-driver`` (``scripts/test`` installs them) and the
``selenium`` package (the ``test`` extra). Chromium runs with a throw-away profile and without
its background networking: the tests need nothing beyond loopback.
"""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest

from nurture.app import Nurture
from nurture.models import Event
from nurture.outbound.sending import deliver
from nurture.outbound.transport import OutboxTransport
from nurture.outbound.unsubscribe import make_token
from tests.seeding import LEE, SAM, contact, queue_due, rows, seed_outreach, touches
from tests.servers import live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1024,768"]
WAIT = 15  # seconds for a page to show what we expect

MASKED = "d***@clinic.example"


# The browser ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chrome() -> Iterator[Any]:
    """One headless chromium for the whole run (starting one costs about a second)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install Debian's browser with "
                    "`apt-get install chromium chromium-driver` (scripts/test does)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[test]'")
    profile = tempfile.mkdtemp(prefix="nurture-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager (which would look for one online) never runs.
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(chrome: Any) -> Iterator[Any]:
    """The shared browser, on a blank page with an empty console, for one test."""
    chrome.get("about:blank")
    chrome.get_log("browser")  # reading the log empties it
    yield chrome
    chrome.get("about:blank")


def text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.TAG_NAME, "body").text)


def heading(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.TAG_NAME, "h1").text)


def wait_for_heading(driver: Any, expected: str) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: heading(d) == expected, f"the page never showed {expected!r}")


def http_status(driver: Any) -> int:
    """The status of the page's own response, as the browser saw it (Chromium 109+)."""
    return int(driver.execute_script(
        "return performance.getEntriesByType('navigation')[0].responseStatus"))


def console_errors(driver: Any) -> list[str]:
    """What the browser complained about (a CSP violation would be here), favicon aside."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]]


def press_unsubscribe(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    [button] = driver.find_elements(By.CSS_SELECTOR, "form[method=post] button[type=submit]")
    assert button.text == "Unsubscribe"
    button.click()


# The project and its server ------------------------------------------------------------------
@pytest.fixture
def project(app: Nurture, tmp_path: Path) -> Nurture:
    """Dana and Sam enrolled in referral-outreach, Dana's first email due now."""
    return seed_outreach(app, tmp_path)


@pytest.fixture
def live_url(project: Nurture) -> Iterator[str]:
    """The real waitress server for ``project``, whose unsubscribe links now point at it."""
    with live_server(project) as url:
        yield url


def unsubscribe_events(app: Nurture) -> list[Event]:
    return rows(app, Event, Event.kind == "contact_unsubscribed")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# The tests -----------------------------------------------------------------------------------
def test_the_page_asks_and_the_button_unsubscribes(browser: Any, live_url: str,
                                                   project: Nurture, tmp_path: Path) -> None:
    assert len(queue_due(project)) == 1 and touches(project) == {"hello": "queued"}
    page = f"{live_url}/u/{make_token(project.settings, contact(project).id)}"
    browser.get(page)
    assert http_status(browser) == 200
    assert browser.title == "Unsubscribe - Rivera Physical Therapy"
    assert heading(browser) == "Unsubscribe"
    shown = text(browser)
    assert f"Rivera Physical Therapy sends occasional emails to {MASKED}." in shown
    assert LEE not in shown and LEE not in browser.page_source
    assert contact(project).status == "active"  # opening the page changes nothing
    assert touches(project) == {"hello": "queued"}

    press_unsubscribe(browser)
    wait_for_heading(browser, "You are unsubscribed")
    assert http_status(browser) == 200
    assert browser.current_url == page  # the answer to the POST, no redirect
    assert f"Rivera Physical Therapy will not email {MASKED} again." in text(browser)
    assert "Unsubscribe" not in [b.text for b in browser.find_elements("tag name", "button")]
    assert contact(project).status == "unsubscribed"
    assert touches(project) == {"hello": "cancelled"}
    assert touches(project, SAM) == {"hello": "scheduled"}
    [event] = unsubscribe_events(project)
    assert event.data["why"] == "unsubscribe page"  # the browser sent the button's value
    assert console_errors(browser) == []  # our CSP let the page and its form through

    shot = tmp_path / "unsubscribed.png"
    assert browser.save_screenshot(str(shot))
    width, height = png_size(shot.read_bytes())
    assert width > 0 and height > 0 and shot.stat().st_size > 1000

    browser.get(page)  # opened again later: it says so, and offers nothing to press
    assert heading(browser) == "You are unsubscribed"
    assert len(unsubscribe_events(project)) == 1


def test_a_forged_link_gets_a_plain_400_page(browser: Any, live_url: str,
                                             project: Nurture) -> None:
    good = make_token(project.settings, contact(project).id)
    for token in (good[:-2] + ("AA" if not good.endswith("AA") else "BB"), "garbage"):
        browser.get(f"{live_url}/u/{token}")
        assert http_status(browser) == 400
        assert heading(browser) == "This link is not valid"
        assert "This unsubscribe link is incomplete or was changed." in text(browser)
        assert browser.find_elements("tag name", "form") == []
    assert contact(project).status == "active"
    assert unsubscribe_events(project) == []


def test_the_link_in_a_sent_email_unsubscribes(browser: Any, live_url: str, project: Nurture,
                                               tmp_path: Path) -> None:
    """The email as the worker sends it, opened in the browser; its footer link followed."""
    outbox = tmp_path / "sent"
    report = deliver(project, queue_due(project), OutboxTransport(outbox))
    assert len(report.sent) == 1 and touches(project) == {"hello": "sent",
                                                          "question": "scheduled"}
    [eml] = outbox.glob("*.eml")
    message = cast(EmailMessage,
                   email.message_from_bytes(eml.read_bytes(), policy=email.policy.default))
    assert message["To"].addresses[0].addr_spec == LEE
    header_link = re.fullmatch(r"<([^>]+)>, <mailto:[^>]+>", str(message["List-Unsubscribe"]))
    assert header_link and header_link.group(1).startswith(f"{live_url}/u/")
    html_part = message.get_body(("html",))
    assert html_part is not None
    opened = tmp_path / "email.html"
    opened.write_text(html_part.get_content())

    from selenium.webdriver.common.by import By

    browser.get(opened.as_uri())
    [link] = browser.find_elements(By.LINK_TEXT, "unsubscribe")
    assert link.get_attribute("href") == header_link.group(1)
    windows = browser.window_handles
    link.click()
    if len(browser.window_handles) > len(windows):  # a target=_blank link opens a tab
        browser.switch_to.window(browser.window_handles[-1])
    wait_for_heading(browser, "Unsubscribe")
    assert MASKED in text(browser)
    press_unsubscribe(browser)
    wait_for_heading(browser, "You are unsubscribed")
    assert contact(project).status == "unsubscribed"
    assert touches(project) == {"hello": "sent", "question": "cancelled"}
    for extra in browser.window_handles[1:]:
        browser.switch_to.window(extra)
        browser.close()
    browser.switch_to.window(browser.window_handles[0])
