"""The offline engines: what the recognisers are given to hear, how Moonshine rescores
pocketsphinx, and words they must not mishear."""

from __future__ import annotations

import numpy as np
import pytest

from tests.voice.speech import silence, speak
from voice.speech import moonshine
from voice.speech.engines import (
    CALIBRATE,
    LEAD,
    MARGIN,
    NO_COMMAND,
    NOISE_FLOOR,
    SURE,
    Engine,
    Reading,
    RescoredStream,
    SphinxEngine,
    SphinxStream,
    Transcript,
    _cepstrum,
    _grammar_dictionary,
    _speech,
)
from voice.speech.pipeline import Final, Listener
from voice.speech.recogniser import default_engine


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


def hear(text: str, speed: int, voice: str = "en-us", engine: Engine | None = None) -> list[str]:
    """The finals of ``text`` as a session's first utterance (pocketsphinx alone by default)."""
    listener = Listener((engine or SphinxEngine()).open())
    results = listener.feed(silence(0.3) + speak(text, voice, speed=speed) + silence(0.8))
    results += listener.end()
    listener.close()
    # VOICE_AUDIO_END after the silence repeats the final: that is not a second utterance.
    return [r.transcript.text for r in results if isinstance(r, Final) and not r.repeated]


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
    stream = SphinxEngine().open()
    stream.accept(audio)
    assert stream.calibrated
    calibrated = np.array(_cepstrum(stream.decoder.get_cmn(False)))
    assert calibrated[0] > 45  # pocketsphinx starts at 40; this voice's speech is louder
    # Heard again from the calibrated mean, the same audio leaves the mean where it is.
    check = SphinxEngine().open()
    check.decoder.set_cmn(stream.decoder.get_cmn(False))
    check.decoder.start_utt()
    check.decoder.process_raw(SphinxStream(None)._with_noise_floor(audio), False, False)
    again = np.array(_cepstrum(check.decoder.get_cmn(True)))
    np.testing.assert_allclose(again, calibrated, atol=0.3)


# Rescoring: pocketsphinx's words against Moonshine's reading.


class FirstOpinion:
    """Stands in for the pocketsphinx stream: hears ``text`` whatever the audio."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.closed = False

    def accept(self, pcm: bytes) -> None:
        pass

    def partial(self) -> str:
        return self.text

    def finish(self) -> Transcript:
        return Transcript(self.text, 0.9 if self.text else 0.0)

    def close(self) -> None:
        self.closed = True


class FakeMoonshine:
    """Stands in for the model: reads ``words`` at ``sure`` per token; ``scores`` gives each
    text's log-probability. Counts its encodings."""

    def __init__(self, words: str, sure: float = -0.5, scores: dict[str, float] | None = None):
        self.words, self.sure, self.scores = words, sure, scores or {}
        self.encoded = 0

    def encode(self, audio: np.ndarray) -> np.ndarray:
        self.encoded += 1
        return audio

    def search(self, hidden: np.ndarray, grammar: object) -> tuple[list[int], float]:
        tokens = list(range(len(self.words.split()) + 1))
        return tokens, self.sure * len(tokens)

    def text(self, tokens: list[int]) -> str:
        return self.words.capitalize() + "."

    def score(self, hidden: np.ndarray, texts: list[str]) -> list[float]:
        return [self.scores[text] for text in texts]


def rescored(first: str, model: FakeMoonshine) -> Transcript:
    stream = RescoredStream(FirstOpinion(first), model, grammar=None)  # type: ignore[arg-type]
    stream.accept(speak("sell all", "en-us", speed=175))
    return stream.finish()


def test_moonshine_replaces_pocketsphinx_only_when_it_is_much_surer():
    near = {"say lol": -10.0, "sell all": -10.0 - MARGIN + 0.5}
    assert rescored("say lol", FakeMoonshine("sell all", scores=near)).text == "say lol"
    far = {"say lol": -10.0 - MARGIN - 0.5, "sell all": -10.0}
    assert rescored("say lol", FakeMoonshine("sell all", scores=far)).text == "sell all"
    assert rescored("sell all", FakeMoonshine("sell all")).text == "sell all"  # no scoring


def test_when_pocketsphinx_hears_no_command_moonshine_must_be_sure():
    assert rescored("", FakeMoonshine("sell all", sure=SURE + 0.5)).text == "sell all"
    assert rescored("", FakeMoonshine("sell all", sure=SURE - 0.5)) == Transcript("", 0.0)


def test_speech_no_path_of_the_grammar_fits_is_no_command_whatever_pocketsphinx_heard():
    # "she sold her car last week": pocketsphinx heard "sell all"; Moonshine's best reading
    # within the grammar is far less likely than any command it hears right.
    unsure = FakeMoonshine("sell all", sure=NO_COMMAND - 0.5)
    assert rescored("sell all", unsure) == Transcript("", 0.0)
    assert rescored("sell all", FakeMoonshine("sell all", sure=NO_COMMAND + 0.5)).text == "sell all"


def test_a_reading_made_when_the_speech_paused_is_reused_unless_speech_came_after():
    model = FakeMoonshine("sell all")
    stream = RescoredStream(FirstOpinion("sell all"), model, grammar=None)  # type: ignore[arg-type]
    stream.accept(silence(0.2) + speak("sell all", "en-us", speed=175))
    stream.prepare()
    stream.accept(silence(0.3))
    assert stream.finish().text == "sell all"
    assert model.encoded == 1  # the final did not read the audio again

    stream.accept(speak("sell", "en-us", speed=175))
    stream.prepare()
    stream.accept(speak("all", "en-us", speed=175))  # the speech went on
    stream.finish()
    assert model.encoded == 3
    stream.close()
    assert stream.first.closed  # type: ignore[attr-defined]


def test_moonshine_hears_the_speech_up_to_its_fading_end_between_short_silences():
    speech = np.frombuffer(speak("buy two sol"), dtype="<i2").astype(np.float32) / 32768
    audio = np.concatenate([speech, np.zeros(16_000, np.float32)])  # a second of silence after
    pause = int(LEAD * 16_000)
    heard = _speech(audio)
    assert not heard[:pause].any() and not heard[-pause:].any()
    kept = heard[pause:-pause]
    loud = np.flatnonzero(np.abs(speech) > 0.01)[-1]  # the last clearly audible sample
    assert loud + pause <= kept.size <= speech.size + pause
    np.testing.assert_array_equal(kept, audio[: kept.size])
    assert _speech(np.zeros(16_000, np.float32)).size == 0


with_moonshine = pytest.mark.skipif(
    not moonshine.available(), reason="moonshine-cpp ships for x86-64 only; it is not installed"
)


@with_moonshine
def test_the_default_engine_rescores_pocketsphinx_with_moonshine():
    stream = default_engine().open()
    assert isinstance(stream, RescoredStream) and isinstance(stream.first, SphinxStream)
    assert isinstance(Reading(0, None, "", 0.0).decided, dict)
    stream.close()


def test_without_moonshines_package_pocketsphinx_works_alone(monkeypatch, caplog):
    monkeypatch.setattr(moonshine, "available", lambda: False)
    default_engine.cache_clear()
    try:
        assert isinstance(default_engine(), SphinxEngine)
        assert "pocketsphinx alone" in caplog.text
    finally:
        default_engine.cache_clear()


@with_moonshine
@pytest.mark.parametrize(
    ("text", "voice", "speed"),
    [
        ("sell half", "en-gb", 175),
        ("buy seven point two five sol", "en-gb", 175),
        ("sell everything", "en-us+f3", 165),
    ],
)
def test_moonshine_hears_commands_pocketsphinx_misses(text, voice, speed):
    # pocketsphinx alone heard these as nothing, or as a chat message ("say who am we be").
    assert hear(text, speed, voice) != [text]
    assert hear(text, speed, voice, default_engine()) == [text]
