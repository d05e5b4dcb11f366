"""The trading-room page in a real browser (Debian's chromium, headless)."""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from environments.models import ChatMessage, Position
from environments.services import environment_create
from tests.conftest import require

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def off_loop(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ORM code on a plain thread: Playwright's sync API keeps an event loop on this one."""

    def call() -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()  # the thread ends: give its pooled connection back

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def wait_for_text(
    page: Any, selector: str, text: str | re.Pattern[str], timeout: float = 30_000
) -> None:
    """Wait until the element's text is ``text``. A locator wait, not ``wait_for_function``: that
    evaluates a string inside the page, which the page's Content-Security-Policy forbids."""
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_have_text(text, timeout=timeout)


WALLET_SHOWN = re.compile(r"^\S{32,}$")


@pytest.fixture
def browser_page(tmp_path: Path):
    require(Path(CHROMIUM).exists(), "needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        yield page
        browser.close()


def test_a_visitor_signs_in_joins_trades_and_chats_with_markup_shown_as_text(
    daphne_server, browser_page, tmp_path
):
    environment = off_loop(environment_create, name="Browser room", environment_id="browser-room")
    server = off_loop(daphne_server)
    page = browser_page
    # The page works under its own Content-Security-Policy: the browser refuses nothing.
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text))
    response = page.goto(server.http + "/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#environment option[value='browser-room']", state="attached")
    page.select_option("#environment", "browser-room")

    page.click("#sign-in")  # an ed25519 key made in the browser signs the challenge
    wait_for_text(page, "#wallet", WALLET_SHOWN)
    wallet = page.text_content("#wallet")
    page.wait_for_selector("#join:not([disabled])")
    page.click("#join")
    wait_for_text(page, "#balance-sol", "100")

    page.fill("#amount", "1")
    page.click("button[value='buy']")
    page.wait_for_selector("#trades li")
    assert "bought 34199203.154141 tokens for 0.98765432 SOL" in page.text_content("#trades li")
    assert page.text_content("#balance-sol") == "99"
    assert page.text_content("#balance-token") == "34199203.154141"
    assert page.text_content("#price").startswith("0.0000000298302")

    page.fill("#chat-text", "<img src=x onerror=alert(1)> hi")
    page.click("#chat-form button")
    page.wait_for_selector("#chat li")
    assert "<img src=x onerror=alert(1)> hi" in page.text_content("#chat li")
    assert page.query_selector("#chat img") is None  # shown as text, never as markup
    assert [text for text in refused if "Content Security Policy" in text] == []
    page.screenshot(path=str(tmp_path / "room.png"), full_page=True)

    position = off_loop(Position.objects.get, environment=environment, wallet=wallet)
    assert position.token_balance == 34_199_203_154_141
    chat = off_loop(ChatMessage.objects.get, environment=environment)
    assert chat.message.startswith("<img")


def test_the_page_shows_the_market_phase_and_offers_no_trade_where_none_is_taken(
    daphne_server, browser_page
):
    off_loop(environment_create, name="Open room", environment_id="open-room")
    off_loop(environment_create, name="Closed room", environment_id="closed-room", is_open=False)
    server = off_loop(daphne_server)
    page = browser_page
    page.goto(server.http + "/")
    page.click("#sign-in")
    wait_for_text(page, "#wallet", WALLET_SHOWN)
    page.wait_for_selector("#environment option[value='open-room']", state="attached")

    page.select_option("#environment", "closed-room")
    page.click("#join")
    wait_for_text(page, "#status", "Closed room is not taking trades right now")
    assert page.is_disabled("button[value='buy']") and page.is_disabled("button[value='sell']")

    page.select_option("#environment", "open-room")
    page.click("#join")
    wait_for_text(page, "#status", "joined Open room")
    assert page.is_enabled("button[value='buy']")
    page.fill("#amount", "1")
    page.click("button[value='buy']")
    # The subscription's PRICE_UPDATE moves the curve's progress and the 24 h volume.
    wait_for_text(page, "#volume", "0.98765432")
    wait_for_text(page, "#phase", re.compile(r"^bonding curve, [1-9][0-9.]* % sold$"))
