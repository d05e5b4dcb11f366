"""Speech-to-text engines behind one small interface.

An :class:`Engine` opens one :class:`RecognitionStream` per voice session; the stream takes
16 kHz mono PCM16 audio an utterance at a time: ``accept`` feeds audio, ``partial`` reads the
words so far (interim results), ``finish`` ends the utterance and returns its final
:class:`Transcript`. Streams are not thread-safe: the pipeline gives each one to a single worker
at a time. A cloud engine plugs in by implementing the same two classes.

The default engine, :class:`RescoredEngine`, is offline and uses two recognisers, each with a model
that ships inside its package. pocketsphinx hears the words as they come (interims) and decides
whether the speech is a command at all; once the utterance ends, Moonshine, a neural model far surer
of what it hears, reads it within the same grammar (``voice/speech/moonshine.py``) and its reading
replaces pocketsphinx's words when it finds them much less likely than its own (``MARGIN``); when
even its best reading is very unlikely, the speech is no command (``NO_COMMAND``). The listener
calls ``prepare`` when the speech pauses, so that reading is done while the end-of-utterance silence
is waited out, not after it.

:class:`SphinxEngine` is pocketsphinx 5 with the acoustic model that ships inside the package and
FunPump's command grammar (``voice/speech/grammar.py``), one decoder per session. Beside the
commands, the grammar holds a costly loop of single phones: speech that fits no command is cheaper
to explain as phones than as a forced command, and a hypothesis that went through that loop is no
transcript at all. That is what keeps "the weather is nice today" from being read as "buy one
thousand". The decoder hears the audio over a faint noise floor (``NOISE_FLOOR``), and its
dictionary adds FunPump's own pronunciations (``PRONUNCIATIONS`` in the grammar) to the model's.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from voice.speech import moonshine
from voice.speech.grammar import (
    PRONUNCIATIONS,
    command_fsg,
    garbage_words,
    grammar_words,
    is_garbage,
)

SAMPLE_RATE = 16_000
BYTES_PER_SECOND = SAMPLE_RATE * 2

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Transcript:
    """The final words of one utterance and the engine's confidence in them (0..1)."""

    text: str
    confidence: float


class RecognitionStream(Protocol):
    def accept(self, pcm: bytes) -> None:
        """Feed audio of the current utterance."""

    def partial(self) -> str:
        """The best guess so far at the current utterance's words."""

    def prepare(self) -> None:
        """Speech may have ended: a stream may start its final's work now, while the listener
        waits out the silence (``finish`` reuses it if nothing audible came after)."""

    def finish(self) -> Transcript:
        """End the current utterance and return its final transcript."""

    def close(self) -> None:
        """Release the stream's resources."""


class Engine(Protocol):
    name: str

    def open(self) -> RecognitionStream:
        """A stream for one voice session."""


# The final hypothesis is the Viterbi path. A second, lattice-based pass (pocketsphinx's default
# ``bestpath``) took 1.4-3.4 s per utterance with this grammar's free-word branches and was no
# more accurate on the benchmark.
DECODER_OPTIONS: dict[str, object] = {"bestpath": False}

# The acoustic model was trained on recorded speech, which always has a noise floor. Digital
# silence (exact zeros, as synthesised speech and gated microphones give, even inside a word at
# the closure of a "t") is nothing it ever heard: the sounds after it lose their start ("sell"
# heard as "ell", "buy" as "eye"). So the stream lays a faint noise with a fixed seed under the
# audio before the recogniser hears it, about a quiet microphone's floor (-64 dBFS). On the
# voice bench this turned about 3% more of the commands right (bench/voice.py).
NOISE_FLOOR = 20.0  # standard deviation, in PCM16 units
NOISE_SEED = 0

# Cepstral mean normalisation starts every session from pocketsphinx's default mean
# (40,3,-1,0,...), far from any voice on the bench (which all settle near 53-57,...), and the live
# mean moves slowly: the starting value weighs as much as CMN_WINDOW frames of speech. So a
# session's first command was heard with the wrong mean. Once the first utterance holds
# CALIBRATE seconds of audio, the stream sets the mean to that audio's own and decodes it again
# from the start. That happens while the user is still speaking, so the final comes no later.
# On the voice bench (--cold) first commands went from 70% to 85% right, as good as later ones;
# doing the same on every utterance was no better than the live mean.
CALIBRATE = 1.0  # seconds; CMN_WINDOW plus these frames stay under pocketsphinx's 800-frame cap
CMN_WINDOW = 500  # frames of weight behind a mean set with set_cmn (CMN_WIN in pocketsphinx)

# The grammar gives no per-utterance score worth reporting (the decoder's path score is not
# comparable across utterances), so a transcript that got past the garbage loop is reported with
# one fixed confidence; ``parse_command`` scales it by how well the words fit a command.
HEARD = 0.9


class SphinxStream:
    """One pocketsphinx grammar decoder over one session's utterances."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder
        self.active = False
        self.noise = np.random.default_rng(NOISE_SEED)
        self.calibrated = False
        self.heard = bytearray()  # the utterance so far, until the mean is calibrated
        self.start_mean: list[float] = []

    def accept(self, pcm: bytes) -> None:
        if not self.active:
            if not self.calibrated:
                # Set afresh, the mean has a known weight behind it: CMN_WINDOW frames.
                mean = self.decoder.get_cmn(False)
                self.decoder.set_cmn(mean)
                self.start_mean = _cepstrum(mean)
                self.heard = bytearray()
            self.decoder.start_utt()
            self.active = True
        audio = self._with_noise_floor(pcm)
        self.decoder.process_raw(audio, False, False)
        if not self.calibrated:
            self.heard += audio
            if len(self.heard) >= CALIBRATE * BYTES_PER_SECOND:
                self._calibrate(bytes(self.heard))

    def _with_noise_floor(self, pcm: bytes) -> bytes:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        samples += self.noise.normal(0.0, NOISE_FLOOR, samples.size)
        return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()

    def _calibrate(self, audio: bytes) -> None:
        """Set the cepstral mean to that of ``audio`` (the utterance so far); decode it again."""
        frames = len(audio) // (BYTES_PER_SECOND // 100)
        # The live mean is now the start mean and the audio's own, weighted by their frames.
        blended = _cepstrum(self.decoder.get_cmn(True))
        own = [
            ((CMN_WINDOW + frames) * mixed - CMN_WINDOW * start) / frames
            for mixed, start in zip(blended, self.start_mean, strict=True)
        ]
        self.decoder.end_utt()
        self.decoder.set_cmn(",".join(f"{value:.4f}" for value in own))
        self.decoder.start_utt()
        self.decoder.process_raw(audio, False, False)
        self.calibrated = True
        self.heard = bytearray()

    def partial(self) -> str:
        hypothesis = self.decoder.hyp() if self.active else None
        return _words(hypothesis.hypstr) if hypothesis is not None else ""

    def prepare(self) -> None:
        """Nothing to prepare: pocketsphinx decodes as the audio comes."""

    def finish(self) -> Transcript:
        if not self.active:
            return Transcript("", 0.0)
        self.active = False
        self.decoder.end_utt()
        hypothesis = self.decoder.hyp()
        text = _words(hypothesis.hypstr) if hypothesis is not None else ""
        if not text:
            return Transcript("", 0.0)
        return Transcript(text, HEARD)

    def close(self) -> None:
        if self.active:
            self.finish()


def _cepstrum(text: str) -> list[float]:
    """pocketsphinx's cepstral mean, written as comma-separated numbers."""
    return [float(value) for value in text.split(",")]


class SphinxEngine:
    """Offline recognition with pocketsphinx's bundled US English model and FunPump's grammar."""

    name = "pocketsphinx"

    def open(self) -> SphinxStream:
        # pocketsphinx is imported where a decoder is made: a web process that leaves speech to
        # a worker (FUNPUMP_SPEECH=worker) never loads its native library.
        from pocketsphinx import Decoder

        decoder = Decoder(
            lm=None,
            dict=_grammar_dictionary(),
            samprate=SAMPLE_RATE,
            loglevel="FATAL",
            **DECODER_OPTIONS,
        )
        grammar = command_fsg()
        fsg = decoder.create_fsg("commands", 0, 1, grammar.transitions)
        decoder.add_fsg("commands", fsg)
        decoder.activate_search("commands")
        return SphinxStream(decoder)


def _words(hypothesis: str) -> str:
    """A hypothesis less its garbage: speech that fits no command is no transcript."""
    words = hypothesis.split()
    return "" if any(is_garbage(word) for word in words) else " ".join(words)


@functools.cache
def _grammar_dictionary() -> str:
    """The grammar's words from the model's dictionary plus ``PRONUNCIATIONS`` (loads in ms)."""
    from pocketsphinx import get_model_path  # see SphinxEngine.open

    wanted = grammar_words()
    lines = []
    entries: dict[str, int] = {}
    with open(
        os.path.join(get_model_path(), "en-us", "cmudict-en-us.dict"), encoding="utf-8"
    ) as source:
        for line in source:
            word = line.split(" ", 1)[0].split("(", 1)[0]
            if word in wanted:
                lines.append(line)
                entries[word] = entries.get(word, 0) + 1
    for word, phones in PRONUNCIATIONS.items():
        if word in wanted:
            entries[word] = entries.get(word, 0) + 1
            lines.append(f"{word}({entries[word]}) {phones}\n")
    lines.extend(f"{word} {phone}\n" for word, phone in garbage_words().items())
    handle, path = tempfile.mkstemp(prefix="funpump-voice-", suffix=".dict")
    atexit.register(os.remove, path)
    with os.fdopen(handle, "w", encoding="utf-8") as target:
        target.writelines(lines)
    return path


# Rescoring: pocketsphinx hears as the audio comes (interims, and whether the speech is a command
# at all: its garbage loop); Moonshine, a neural model, reads the whole utterance within the
# grammar for the final. pocketsphinx's words stand unless Moonshine finds them at least MARGIN
# (natural log) less likely than its own reading; when pocketsphinx heard no command, Moonshine's
# reading counts only if its tokens average at least SURE. The settings are from the voice bench
# (bench/voice.py): with them, 84% of its commands right became 95-96%.
MARGIN = 4.0
SURE = -2.0  # mean log-probability per token (the grammar prior included)
# Below this, Moonshine's best reading within the grammar is so unlikely that the speech is no
# command at all, whatever pocketsphinx heard: on the bench, every command heard right read at
# -5.5 or above, and most non-commands that became a trade ("she sold her car last week" heard
# as "sell all") at -7.4 or below.
NO_COMMAND = -6.5
LEAD = 0.2  # seconds of silence Moonshine hears before and after the speech
QUIET = 10 ** (-45 / 20)  # audio this far below the utterance's loudest 10 ms is silence
# A reading made when the speech seemed to end still stands if nothing after it came within this
# of the utterance's loudest (the fading tail of the last sound does not count).
AFTER = 10 ** (-30 / 20)


@dataclass(slots=True)
class Reading:
    """Moonshine's reading of the start of an utterance."""

    heard: int  # samples of the utterance it read
    hidden: Any  # the encoder's output, kept to score pocketsphinx's words against
    words: str
    sure: float  # mean log-probability per token
    decided: dict[str, str] = field(default_factory=dict)  # pocketsphinx's words -> the final's


class RescoredStream:
    """pocketsphinx for interims and a first opinion, Moonshine for the final's words."""

    def __init__(self, first: SphinxStream, model: Any, grammar: Any) -> None:
        self.first = first
        self.model = model
        self.grammar = grammar
        self.audio = bytearray()  # the utterance so far (the listener bounds it to 10 s)
        self.prepared: Reading | None = None

    def accept(self, pcm: bytes) -> None:
        self.first.accept(pcm)
        self.audio += pcm

    def partial(self) -> str:
        return self.first.partial()

    def prepare(self) -> None:
        self._decide(self._reading(), self.first.partial())

    def _reading(self) -> Reading:
        """Moonshine's reading of the utterance so far: the prepared one, unless something
        audible came after it."""
        audio = np.frombuffer(bytes(self.audio), dtype="<i2").astype(np.float32) / 32768
        if self.prepared is not None:
            since = _levels(audio[self.prepared.heard :]).max(initial=0.0)
            if since < AFTER * _levels(audio).max(initial=0.0):
                return self.prepared
        self.prepared = self._read(audio)
        return self.prepared

    def _read(self, audio: np.ndarray) -> Reading:
        """Moonshine's reading, within the grammar, of the utterance so far."""
        speech = _speech(audio)
        if not speech.size:
            return Reading(audio.size, None, "", -math.inf)
        hidden = self.model.encode(speech)
        tokens, score = self.model.search(hidden, self.grammar)
        words = re.sub(r"[^a-z' ]", " ", self.model.text(tokens).lower()).split()
        return Reading(audio.size, hidden, " ".join(words), score / max(1, len(tokens)))

    def _decide(self, reading: Reading, first: str) -> str:
        """The final's words, from pocketsphinx's ``first`` and Moonshine's ``reading``."""
        if first not in reading.decided:
            if reading.hidden is not None and reading.sure < NO_COMMAND:
                words = ""  # no path of the grammar fits: whatever was said, it is no command
            elif reading.hidden is None or first == reading.words:
                words = first
            elif not first:
                words = reading.words if reading.sure >= SURE else ""
            else:
                kept, read = self.model.score(reading.hidden, [first, reading.words])
                words = first if kept >= read - MARGIN else reading.words
            reading.decided[first] = words
        return reading.decided[first]

    def finish(self) -> Transcript:
        first = self.first.finish()
        words = self._decide(self._reading(), first.text)
        self.audio, self.prepared = bytearray(), None
        if words == first.text:
            return first
        return Transcript(words, HEARD) if words else Transcript("", 0.0)

    def close(self) -> None:
        self.first.close()
        self.audio, self.prepared = bytearray(), None


def _levels(samples: np.ndarray) -> np.ndarray:
    """The RMS level of each whole 10 ms of ``samples``."""
    frame = SAMPLE_RATE // 100
    frames = samples[: samples.size - samples.size % frame].reshape(-1, frame)
    return np.sqrt((frames * frames).mean(axis=1)) if frames.size else np.zeros(0)


def _speech(samples: np.ndarray) -> np.ndarray:
    """The utterance as Moonshine should hear it: ``LEAD`` of silence, the audio up to ``LEAD``
    after its last audible 10 ms, ``LEAD`` of silence; empty if nothing is audible."""
    levels = _levels(samples)
    if not levels.size or levels.max() == 0:
        return np.zeros(0, np.float32)
    last = np.flatnonzero(levels > levels.max() * QUIET)[-1]
    end = min(samples.size, (last + 1) * (SAMPLE_RATE // 100) + int(LEAD * SAMPLE_RATE))
    pause = np.zeros(int(LEAD * SAMPLE_RATE), np.float32)
    return np.concatenate([pause, samples[:end], pause])


class RescoredEngine:
    """pocketsphinx rescored by Moonshine (``voice/speech/moonshine.py``)."""

    name = "pocketsphinx + moonshine"

    def open(self) -> RescoredStream:
        return RescoredStream(SphinxEngine().open(), moonshine.load(), moonshine.command_grammar())


def warm_up() -> None:
    """What every session's pocketsphinx decoder reads, made ready ahead of the first."""
    import pocketsphinx  # noqa: F401 - see SphinxEngine.open

    _grammar_dictionary()
