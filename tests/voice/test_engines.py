"""The offline engine: what the recogniser is given to hear, and words it must not mishear."""

from __future__ import annotations

import numpy as np
import pytest

from tests.voice.speech import silence, speak
from voice.engines import (
    CALIBRATE,
    NOISE_FLOOR,
    SphinxStream,
    _cepstrum,
    _grammar_dictionary,
    default_engine,
)
from voice.pipeline import Final, Listener


class FakeDecoder:
    """Stands in for pocketsphinx: keeps the audio it is given."""

    def __init__(self) -> None:
        self.audio = b""

    def start_utt(self) -> None:
        pass

    def get_cmn(self, update: bool) -> str:
        return "40,3,-1"

    def set_cmn(self, cmn: str) -> None:
        pass

    def process_raw(self, pcm: bytes, no_search: bool, full_utt: bool) -> None:
        self.audio += pcm


def fed(pcm: bytes) -> np.ndarray:
    decoder = FakeDecoder()
    stream = SphinxStream(decoder)
    stream.calibrated = True  # the audio once, as it is heard
    stream.accept(pcm)
    return np.frombuffer(decoder.audio, dtype="<i2").astype(np.float64)


def test_the_recogniser_hears_a_faint_fixed_noise_floor_under_the_audio():
    floor = fed(silence(1.0))
    assert floor.size == 16_000
    assert NOISE_FLOOR * 0.8 < np.sqrt(np.mean(floor**2)) < NOISE_FLOOR * 1.2

    speech = speak("buy two sol")
    heard = fed(speech)
    change = heard - np.frombuffer(speech, dtype="<i2")
    assert np.abs(change).max() < NOISE_FLOOR * 8  # a floor, not a new sound

    loud = np.concatenate([np.full(1000, 32767), np.full(1000, -32768)]).astype("<i2")
    clipped = fed(loud.tobytes())
    assert clipped.max() <= 32767 and clipped.min() >= -32768

    # Every session's recogniser hears the same audio the same way.
    np.testing.assert_array_equal(fed(speech), heard)


def hear(text: str, speed: int) -> list[str]:
    listener = Listener(default_engine().open())
    results = listener.feed(silence(0.3) + speak(text, "en-us", speed=speed) + silence(0.8))
    results += listener.end()
    listener.close()
    return [r.transcript.text for r in results if isinstance(r, Final)]


@pytest.mark.parametrize(("text", "speed"), [("sell all", 200), ("sell half", 165)])
def test_a_first_sound_after_digital_silence_is_heard(text, speed):
    # Without the noise floor, espeak-ng's exact-zero silence swallowed the "s" of "sell":
    # nothing was heard, or a chat message ("say a ok no").
    assert hear(text, speed) == [text]


@pytest.mark.parametrize("speed", [165, 175])
def test_sell_said_like_sill_is_still_a_sale(speed):
    # The recogniser hears espeak-ng's "sell" as "sill"; without that pronunciation the words
    # became a chat message ("say like who our do").
    assert hear("sell a quarter", speed) == ["sell a quarter"]
    with open(_grammar_dictionary(), encoding="utf-8") as dictionary:
        entries = dictionary.read().splitlines()
    assert "sell S EH L" in entries and "sell(2) S IH L" in entries


@pytest.mark.parametrize(
    "text", ["join environment alpha", "buy seven point two five sol", "join the demo room"]
)
def test_a_sessions_first_command_is_heard_with_the_speakers_own_cepstral_mean(text):
    # Each of these, as a session's first utterance, was heard with pocketsphinx's starting mean
    # as something else ("join the white delta", "buy seventy point two five sol") or nothing.
    assert hear(text, 175) == [text]


def test_the_calibrated_mean_is_the_mean_of_the_audio_it_came_from():
    pcm = silence(0.2) + speak("join environment alpha", "en-us", speed=175)
    audio = pcm[: int(CALIBRATE * 32_000)]
    stream = default_engine().open()
    stream.accept(audio)
    assert stream.calibrated
    calibrated = np.array(_cepstrum(stream.decoder.get_cmn(False)))
    assert calibrated[0] > 45  # pocketsphinx starts at 40; this voice's speech is louder
    # Heard again from the calibrated mean, the same audio leaves the mean where it is.
    check = default_engine().open()
    check.decoder.set_cmn(stream.decoder.get_cmn(False))
    check.decoder.start_utt()
    check.decoder.process_raw(SphinxStream(None)._with_noise_floor(audio), False, False)
    again = np.array(_cepstrum(check.decoder.get_cmn(True)))
    np.testing.assert_allclose(again, calibrated, atol=0.3)
