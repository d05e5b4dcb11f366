"""From a stream of audio to recognition events: utterances, interim and final transcripts.

:class:`Listener` is the part every audio path shares (socket frames and the LiveKit agent). It
takes 16 kHz mono PCM16 in chunks of any size, finds speech with WebRTC's voice activity
detector, feeds the speech (with a short pre-roll, so a word's first sound is not lost) to one
recognition stream, and reports:

* :class:`Interim` while an utterance is being heard, at most every ``INTERIM_EVERY`` seconds of
  audio and only when the words changed;
* :class:`Final` at the end of the utterance: after a silence, when the client says the
  utterance ended (``VOICE_AUDIO_END``), or when it reaches ``MAX_UTTERANCE`` seconds (the
  contract's 10 s cut). Each ``VOICE_AUDIO_END`` gets exactly one final (:meth:`Listener.end`).

How long a silence ends an utterance depends on what was said so far (:func:`completeness`):

* the words make a command nothing can follow ("buy two sol", "what is the price"):
  ``DONE_SILENCE`` is enough, so the answer comes quickly;
* they make a command whose free text may go on ("launch a token called moon", "say hello"):
  ``PAUSE_SILENCE``, a little longer, so "moon... rocket" is not cut after "moon";
* anything else ("buy twenty", "launch a token called"): ``END_SILENCE``, so a pause in the
  middle of a command does not cut it.

A listener is synchronous and not thread-safe: the session runs it on one worker at a time, so
recognition never blocks the event loop. Its buffers are bounded by the utterance limit.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from voice.speech.engines import BYTES_PER_SECOND, SAMPLE_RATE, RecognitionStream, Transcript
from voice.speech.intents import parse_command

FRAME_SECONDS = 0.03  # WebRTC VAD takes 10, 20 or 30 ms frames
FRAME_BYTES = int(BYTES_PER_SECOND * FRAME_SECONDS)
PRE_ROLL = 0.3  # seconds of audio kept from before speech was detected
START_SPEECH = 0.09  # seconds of voiced frames (within the pre-roll) that start an utterance
DONE_SILENCE = 0.15  # seconds of silence that end an utterance that is a complete command
PAUSE_SILENCE = 0.24  # ... a command whose free text (a name, a message) may go on
END_SILENCE = 0.35  # ... any other utterance
PREPARE_SILENCE = 0.06  # seconds of silence after which the stream may start on the final
INTERIM_EVERY = 0.3  # seconds of audio between interim results
MAX_UTTERANCE = 10.0  # the contract's limit: an utterance is cut and finalised here
QUIET_DB = 45  # a frame this far below the utterance's loudest counts as silence
QUIET_RATIO = 10 ** (-QUIET_DB / 20)
VAD_AGGRESSIVENESS = 2  # 0 (keeps most) .. 3 (drops most non-speech)


@dataclass(frozen=True, slots=True)
class Interim:
    text: str


@dataclass(frozen=True, slots=True)
class Final:
    transcript: Transcript
    seconds: float  # how much audio the utterance held
    reason: str  # "silence", "end" (VOICE_AUDIO_END) or "limit"
    # The turn's last final again, answering VOICE_AUDIO_END after silence had already ended
    # the utterance: its command was already given.
    repeated: bool = False


Result = Interim | Final


class Listener:
    """Voice activity detection and utterance boundaries over one recognition stream."""

    def __init__(
        self,
        stream: RecognitionStream,
        *,
        end_silence: float = END_SILENCE,
        done_silence: float = DONE_SILENCE,
        pause_silence: float = PAUSE_SILENCE,
        max_utterance: float = MAX_UTTERANCE,
    ) -> None:
        self.stream = stream
        self.vad = webrtcvad.Vad(VAD_AGGRESSIVENESS)
        self.pending = b""  # less than one VAD frame, waiting for the rest
        self.pre_roll: deque[tuple[bytes, bool]] = deque(maxlen=round(PRE_ROLL / FRAME_SECONDS))
        self.end_frames = max(1, round(end_silence / FRAME_SECONDS))
        self.done_frames = max(1, min(self.end_frames, round(done_silence / FRAME_SECONDS)))
        self.pause_frames = max(
            self.done_frames, min(self.end_frames, round(pause_silence / FRAME_SECONDS))
        )
        self.max_frames = round(max_utterance / FRAME_SECONDS)
        self.start_frames = max(1, round(START_SPEECH / FRAME_SECONDS))
        self.prepare_frames = max(1, round(PREPARE_SILENCE / FRAME_SECONDS))
        self.interim_frames = max(1, round(INTERIM_EVERY / FRAME_SECONDS))
        self.in_speech = False
        self.frames = 0  # frames of the current utterance
        self.silent = 0  # consecutive unvoiced frames at its end
        self.loudest = 0.0  # the loudest frame of the utterance so far (RMS)
        self.last_final: Transcript | None = None  # since the client's last VOICE_AUDIO_END
        self.last_interim = ""

    def feed(self, pcm: bytes) -> list[Result]:
        """Take audio; return what it completed (interim texts, finals)."""
        results: list[Result] = []
        data = self.pending + pcm
        usable = len(data) - len(data) % FRAME_BYTES
        self.pending = data[usable:]
        for start in range(0, usable, FRAME_BYTES):
            self._frame(data[start : start + FRAME_BYTES], results)
        return results

    def end(self) -> list[Result]:
        """The client ended the utterance (``VOICE_AUDIO_END``): finalise what was heard.

        Exactly one final answers each ``VOICE_AUDIO_END``: the final of the utterance being
        heard; else, if silence already ended the turn's last utterance, that final again
        (``repeated``; a sound after it that showed and heard no words changes nothing, see
        ``_finish``); else, nothing having been said since the last ``VOICE_AUDIO_END``, an
        empty one.
        """
        results: list[Result] = []
        if self.pending and self.in_speech:
            self._feed_stream(self.pending + bytes(FRAME_BYTES - len(self.pending)), results)
        self.pending = b""
        if self.in_speech:
            self._finish("end", results)
        if not any(isinstance(result, Final) for result in results):
            if self.last_final is not None:
                results.append(Final(self.last_final, 0.0, "end", repeated=True))
            else:
                results.append(Final(Transcript("", 0.0), 0.0, "end"))
        self.pre_roll.clear()
        self.last_final = None
        return results

    def close(self) -> None:
        self.stream.close()

    def _frame(self, frame: bytes, results: list[Result]) -> None:
        voiced = self.vad.is_speech(frame, SAMPLE_RATE)
        if not self.in_speech:
            self.pre_roll.append((frame, voiced))
            if sum(1 for _, v in self.pre_roll if v) < self.start_frames:
                return
            self.in_speech = True
            self.frames = self.silent = 0
            for earlier, _ in self.pre_roll:
                self._feed_stream(earlier, results)
            self.pre_roll.clear()
            return
        self._feed_stream(frame, results)
        level = _level(frame)
        self.loudest = max(self.loudest, level)
        # The detector keeps calling the ~0.1 s after a word's end speech; a frame far quieter
        # than the utterance's loudest is silence whatever it says, so the end comes sooner.
        quiet = level < self.loudest * QUIET_RATIO
        self.silent = 0 if voiced and not quiet else self.silent + 1
        if self.silent == self.prepare_frames:
            self.stream.prepare()  # the final's work starts while the silence is waited out
        if self.silent >= self.end_frames or self._heard_enough():
            self._finish("silence", results)
        elif self.frames >= self.max_frames:
            self._finish("limit", results)

    def _heard_enough(self) -> bool:
        """Whether the silence so far ends what the words so far say."""
        if self.silent not in (self.done_frames, self.pause_frames):
            return False  # the words are read only when the answer can change
        needed = {
            Completeness.DONE: self.done_frames,
            Completeness.MAY_GO_ON: self.pause_frames,
        }.get(completeness(self.stream.partial()))
        return needed is not None and self.silent >= needed

    def _feed_stream(self, frame: bytes, results: list[Result]) -> None:
        self.frames += 1
        self.stream.accept(frame)
        if self.frames % self.interim_frames == 0:
            text = self.stream.partial()
            if text and text != self.last_interim:
                self.last_interim = text
                results.append(Interim(text))

    def _finish(self, reason: str, results: list[Result]) -> None:
        transcript = self.stream.finish()
        seconds = round(self.frames * FRAME_SECONDS, 2)
        shown = bool(self.last_interim)
        self.in_speech = False
        self.frames = self.silent = 0
        self.loudest = 0.0
        self.last_interim = ""
        if not transcript.text and not shown and self.last_final is not None:
            return  # nothing heard or shown after a final of this turn: a breath, a word's tail
        results.append(Final(transcript, seconds, reason))
        self.last_final = transcript


def _level(frame: bytes) -> float:
    """A frame's RMS level (PCM16 units)."""
    samples = np.frombuffer(frame, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


class Completeness(enum.Enum):
    PARTIAL = "partial"  # not a command yet, or one that needs more words
    MAY_GO_ON = "may go on"  # a whole command whose free text may take more words
    DONE = "done"  # a whole command that nothing more can follow


# Words a command can end with when nothing more is to come: a trade's unit or share.
_TRADE_ENDINGS = frozenset({"sol", "solana", "tokens", "all", "everything", "half", "it", "them"})
_FIXED = frozenset({"MARKET_ANALYSIS", "GET_REWARDS", "CLAIM_REWARDS"})
# Commands that end in free text; the parser gives them only once the text has a word.
_FREE_TEXT = frozenset({"LAUNCH_TOKEN", "JOIN_ENVIRONMENT", "CHAT"})


def completeness(text: str) -> Completeness:
    """How much of a command ``text`` is: the listener ends on a shorter silence the more."""
    intent = parse_command(text).intent
    words = text.split()
    if intent in _FIXED or (intent == "EXECUTE_TRADE" and words[-1] in _TRADE_ENDINGS):
        return Completeness.DONE
    if intent in _FREE_TEXT:
        return Completeness.MAY_GO_ON
    return Completeness.PARTIAL
