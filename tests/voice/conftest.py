"""The process's speech recogniser, ready before a test opens a voice session."""

from __future__ import annotations

import pytest

from voice.speech.recogniser import recogniser


@pytest.fixture(scope="session")
def voice_ready() -> None:
    """Voice sessions are refused until the recogniser is ready (``voice/speech/recogniser.py``); a
    server preloads it at startup, a test process here, once."""
    assert recogniser.wait(timeout=600), "the speech recogniser did not get ready"
