"""The page sends each trade and chat line with a fresh requestId: the same one twice runs twice.

Requests are idempotent per requestId (docs/protocol.md), so a page that reused one id for every
trade would see its second identical trade answered as a replay and never executed.
"""

from __future__ import annotations

from environments.models import ChatMessage
from environments.services import environment_create
from tests.e2e.test_page import WALLET_SHOWN, browser_page, off_loop, wait_for_text
from trading.models import Trade

__all__ = ["browser_page"]  # the fixture, shared with the page's other tests


def test_the_same_trade_and_chat_line_twice_run_twice(daphne_server, browser_page):
    from playwright.sync_api import expect

    off_loop(environment_create, name="Repeat room", environment_id="repeat-room")
    server = off_loop(daphne_server)
    page = browser_page
    page.goto(server.http + "/")
    page.wait_for_selector("#environment option[value='repeat-room']", state="attached")
    page.select_option("#environment", "repeat-room")
    page.click("#sign-in")
    wait_for_text(page, "#wallet", WALLET_SHOWN)
    page.wait_for_selector("#join:not([disabled])")
    page.click("#join")
    wait_for_text(page, "#balance-sol", "100")

    for count in (1, 2):
        page.fill("#amount", "1")
        page.click("button[value='buy']")
        expect(page.locator("#trades li")).to_have_count(count)
    for count in (1, 2):
        page.fill("#chat-text", "gm")
        page.click("#chat-form button")
        expect(page.locator("#chat li")).to_have_count(count)
    assert off_loop(Trade.objects.filter(environment_id="repeat-room").count) == 2
    assert off_loop(ChatMessage.objects.filter(environment_id="repeat-room").count) == 2
