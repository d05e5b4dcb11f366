"""Speaking commands on the trading-room page, in a real browser whose microphone plays a WAV.

Chromium's fake capture device reads the file (``--use-file-for-fake-audio-capture``; the
``%noloop`` suffix plays it once, then silence). The page turns it into 16 kHz PCM16 frames
with an AudioWorklet, the server recognises the command, and the person confirms it.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from environments.models import Position
from environments.services import environment_create
from tests.conftest import require
from tests.e2e.test_page import CHROMIUM, FLAGS, WALLET_SHOWN, off_loop, wait_for_text
from tests.e2e.test_voice_startup import wait_for_voice
from tests.voice.speech import require_speech_tools
from voice.models import VoiceCommand

# What the page shows in the voice panel, in order, each time it changes (interim greyed).
WATCH_HEARD = """() => {
  window.heard = [];
  const element = document.querySelector('#voice-heard');
  new MutationObserver(() => window.heard.push(
    [element.textContent, element.classList.contains('interim')]
  )).observe(element, {childList: true, characterData: true, subtree: true, attributes: true});
}"""


def speech_wav(folder: Path, text: str, voice: str) -> Path:
    """``text`` spoken into a 48 kHz mono 16-bit WAV, with silence before and after.

    ``voice``: ``espeak:<voice>`` or ``flite:<voice>``.
    """
    spoken = folder / "spoken.wav"
    wav = folder / "microphone.wav"
    engine, name = voice.split(":")
    if engine == "espeak":
        command = ["espeak-ng", "-v", name, "-s", "160", "-w", str(spoken), text]
    else:
        command = ["flite", "-voice", name, "-t", text, "-o", str(spoken)]
    subprocess.run(command, check=True, capture_output=True)
    # 1 s before: the microphone opens while the session starts; 3 s after: silence ends it.
    convert = ["sox", str(spoken), "-r", "48000", "-c", "1", "-b", "16", "-e", "signed-integer"]
    subprocess.run([*convert, str(wav), "pad", "1", "3"], check=True, capture_output=True)
    return wav


@pytest.fixture
def speaking_page(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """A factory: a new browser whose microphone says ``text`` once, and a page in it."""
    require(Path(CHROMIUM).exists(), "needs Debian's chromium (apt-get install chromium)")
    require_speech_tools()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browsers = []

        def launch(text: str, voice: str = "espeak:en-us") -> Any:
            folder = tmp_path / f"voice-{len(browsers)}"
            folder.mkdir()
            wav = speech_wav(folder, text, voice)
            microphone = [
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}%noloop",
            ]
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=[*FLAGS, *microphone]
            )
            browsers.append(browser)
            return browser.new_page()

        yield launch
        for browser in browsers:
            browser.close()


def sign_in_and_join(page: Any, server: Any) -> str:
    off_loop(wait_for_voice, server)  # the server refuses voice until its recogniser is ready
    page.goto(server.http + "/")
    page.wait_for_selector("#environment option[value='demo']", state="attached")
    page.select_option("#environment", "demo")
    assert page.is_disabled("#speak")  # nothing to speak to before joining
    page.click("#sign-in")
    wait_for_text(page, "#wallet", WALLET_SHOWN)
    page.wait_for_selector("#join:not([disabled])")
    page.click("#join")
    wait_for_text(page, "#balance-sol", "100")
    page.wait_for_selector("#speak:not([disabled])")
    return str(page.text_content("#wallet"))


def record_frames(page: Any) -> list[str | bytes]:
    """Every frame the page sends on its sockets, in order (binary frames as bytes)."""
    sent: list[str | bytes] = []
    page.on("websocket", lambda socket: socket.on("framesent", lambda frame: sent.append(frame)))
    return sent


def say(page: Any) -> None:
    """Press Speak and wait until the page shows the answer to what the microphone said."""
    page.evaluate(WATCH_HEARD)
    page.click("#speak")
    page.wait_for_selector("#speak[aria-pressed='true']")
    assert page.text_content("#speak") == "Stop"
    wait_for_text(page, "#voice-response", re.compile(r"."))
    assert "interim" not in (page.get_attribute("#voice-heard", "class") or "")
    assert page.text_content("#voice-error") == ""


def stop(page: Any) -> None:
    page.click("#speak")  # Stop: the rest of the audio, then VOICE_AUDIO_END
    page.wait_for_selector("#speak[aria-pressed='false']")
    assert page.text_content("#speak") == "Speak"


def test_a_spoken_buy_is_shown_then_confirmed_into_a_trade(daphne_server, speaking_page, tmp_path):
    off_loop(environment_create, name="Demo launch", environment_id="demo")
    server = off_loop(daphne_server)
    page = speaking_page("buy two sol")
    sent = record_frames(page)
    wallet = sign_in_and_join(page, server)

    say(page)
    assert page.text_content("#voice-heard") == "buy two sol"
    assert page.text_content("#voice-intent") == "EXECUTE_TRADE"
    assert page.text_content("#voice-params").startswith("buy 2 SOL (")
    response = page.text_content("#voice-response")
    assert response == "Buy about 66,285,714.22 tokens of Demo launch for 2 SOL? Confirm to trade."
    assert page.is_visible("#voice-confirm")
    assert page.text_content("#balance-sol") == "100"  # heard and quoted, not traded
    heard = page.evaluate("window.heard")
    assert heard[-1] == ["buy two sol", False]
    assert any(interim for _, interim in heard[:-1])  # words shown greyed while heard
    page.screenshot(path=str(tmp_path / "voice.png"), full_page=True)
    stop(page)

    page.click("#voice-confirm")
    wait_for_text(page, "#balance-sol", "98.000000001")
    page.wait_for_selector("#trades li")
    assert "bought 66285714.223523 tokens for 1.97530864 SOL" in page.text_content("#trades li")
    assert page.text_content("#voice-result") == "Bought 66285714.223523 tokens for 1.97530864 SOL."
    assert page.is_hidden("#voice-confirm")  # one Confirm, one trade
    assert page.text_content("#voice-error") == ""

    # The microphone went out as 100 ms frames of 16 kHz PCM16 (3200 bytes, the last one
    # shorter), then VOICE_AUDIO_END; the trade only when Confirm was pressed.
    audio = [frame for frame in sent if isinstance(frame, bytes)]
    assert len(audio) > 20
    assert all(len(frame) == 3200 for frame in audio[:-1])
    assert len(audio[-1]) % 2 == 0 and 0 < len(audio[-1]) <= 3200
    kinds = [json.loads(frame)["type"] if isinstance(frame, str) else "audio" for frame in sent]
    kinds = [kind for kind in kinds if kind != "HEARTBEAT"]
    start = kinds.index("VOICE_SESSION_START")
    assert kinds[start + 1 :] == [
        *["audio"] * len(audio),
        "VOICE_AUDIO_END",
        "VIRTUAL_TRADE",
    ]

    position = off_loop(Position.objects.get, environment_id="demo", wallet=wallet)
    assert position.sol_balance == 98_000_000_001  # 2 SOL spent, fee included
    command = off_loop(VoiceCommand.objects.get, session__wallet=wallet)
    assert command.intent == "EXECUTE_TRADE" and command.source == "socket"


def test_sell_half_sells_the_floor_of_half_the_balance_the_page_shows(daphne_server, speaking_page):
    off_loop(environment_create, name="Demo launch", environment_id="demo")
    server = off_loop(daphne_server)
    # The recogniser mishears espeak's "sell half" ("sell two"); flite's slt voice it gets.
    page = speaking_page("sell half", voice="flite:slt")
    wallet = sign_in_and_join(page, server)
    page.fill("#amount", "1")
    page.click("button[value='buy']")
    wait_for_text(page, "#balance-token", "34199203.154141")

    say(page)
    # After flite's soft final "f", the recogniser now and then also hears the grammar's
    # "of it" ("sell half of it"), by a hair's breadth that depends on the near-silence the
    # browser's microphone gives before the words; both are the same command.
    assert page.text_content("#voice-heard") in ("sell half", "sell half of it")
    assert page.text_content("#voice-intent") == "EXECUTE_TRADE"
    assert page.text_content("#voice-params").startswith("sell half of your tokens (")
    assert page.text_content("#voice-response").startswith(
        "Sell 17,099,601.58 tokens of Demo launch for about "
    )
    stop(page)

    page.click("#voice-confirm")
    # 34199203154141 raw units: half is 17099601577070.5, floored; the rest stays.
    wait_for_text(page, "#balance-token", "17099601.577071")
    assert page.text_content("#voice-result").startswith("Sold 17099601.57707 tokens for ")
    position = off_loop(Position.objects.get, environment_id="demo", wallet=wallet)
    assert position.token_balance == 17_099_601_577_071
