"""The listener: voice activity, utterance ends, interim results, the 10 s cut."""

from __future__ import annotations

from tests.voice.speech import chunks, silence, speak
from voice.speech.engines import Transcript
from voice.speech.pipeline import (
    PRE_ROLL,
    PREPARE_SILENCE,
    Completeness,
    Final,
    Interim,
    Listener,
    completeness,
)


class Recorder:
    """A recognition stream that remembers the audio it was given."""

    def __init__(self) -> None:
        self.audio = b""
        self.utterances: list[bytes] = []
        self.prepared: list[int] = []  # bytes of the utterance when each prepare() came

    def accept(self, pcm: bytes) -> None:
        self.audio += pcm

    def partial(self) -> str:
        return f"{len(self.audio)} bytes"

    def prepare(self) -> None:
        self.prepared.append(len(self.audio))

    def finish(self) -> Transcript:
        self.utterances.append(self.audio)
        self.audio = b""
        return Transcript(f"utterance {len(self.utterances)}", 0.9)

    def close(self) -> None:
        pass


def listen(listener: Listener, pcm: bytes) -> list[Interim | Final]:
    results: list[Interim | Final] = []
    for frame in chunks(pcm, 1000):  # sizes that do not line up with the VAD's frames
        results += listener.feed(frame)
    return results


def test_silence_is_not_an_utterance():
    stream = Recorder()
    listener = Listener(stream)
    assert listen(listener, silence(3)) == []
    assert stream.utterances == [] and stream.audio == b""


def test_two_sentences_with_a_pause_are_two_utterances_with_interims_first():
    stream = Recorder()
    listener = Listener(stream)
    speech = speak("buy two sol")
    results = listen(listener, silence(0.5) + speech + silence(1) + speech + silence(1))
    finals = [result for result in results if isinstance(result, Final)]
    assert [final.reason for final in finals] == ["silence", "silence"]
    assert isinstance(results[0], Interim)
    first_final = results.index(finals[0])
    assert all(isinstance(result, Interim) for result in results[:first_final])
    # Each utterance holds the speech (with its pre-roll) and not the long silences.
    for utterance in stream.utterances:
        assert 0.8 * len(speech) <= len(utterance) <= len(speech) + 32_000 * 0.7
    # VOICE_AUDIO_END after silence ended the turn: its last final again, marked as a repeat.
    [again] = listener.end()
    assert again.repeated and again.transcript == Transcript("utterance 2", 0.9)
    assert not finals[-1].repeated


def test_the_stream_may_start_on_the_final_once_the_speech_pauses():
    """prepare() comes when a silence starts (so a slow final engine works while the listener
    waits the silence out), and again after each later pause; never before speech."""
    stream = Recorder()
    listener = Listener(stream)
    speech = trimmed(speak("buy two sol"))
    listen(listener, silence(0.5))
    assert stream.prepared == []
    assert [r for r in listen(listener, speech + silence(1)) if isinstance(r, Final)]
    assert stream.prepared, "no prepare() before the final"
    first = stream.prepared[0]
    pause = 32_000 * 0.1
    assert len(speech) - pause <= first <= len(speech) + 32_000 * (PRE_ROLL + PREPARE_SILENCE + 0.1)
    assert len(stream.utterances[0]) > stream.prepared[-1]  # the final came after it


def test_an_utterance_is_cut_at_ten_seconds():
    stream = Recorder()
    listener = Listener(stream)
    talk = speak(" ".join(["seven hundred and seventy seven"] * 12), speed=220)
    assert len(talk) > 32_000 * 11
    results = listen(listener, talk)
    finals = [result for result in results if isinstance(result, Final)]
    assert finals and finals[0].reason == "limit"
    assert 9.9 <= finals[0].seconds <= 10.0
    assert len(stream.utterances[0]) <= 32_000 * 10


def test_audio_end_finalises_what_was_heard_and_answers_an_empty_turn():
    stream = Recorder()
    listener = Listener(stream)
    words = speak("sell one thousand tokens")
    assert listen(listener, silence(0.3) + words[: len(words) // 2]) != []  # cut mid-word
    [final] = listener.end()
    assert final.reason == "end" and final.transcript.text == "utterance 1"
    [empty] = listener.end()  # nothing said since: an empty final answers it
    assert empty.transcript == Transcript("", 0.0) and not empty.repeated


class Saying(Recorder):
    """A stream that has heard ``words`` so far."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words = words

    def partial(self) -> str:
        return self.words


def trimmed(pcm: bytes) -> bytes:
    """``pcm`` without the synthesiser's trailing silence."""
    samples = memoryview(pcm).cast("h")
    end = len(samples)
    while end and abs(samples[end - 1]) < 200:
        end -= 1
    return pcm[: end * 2]


def finals(listener: Listener, pcm: bytes) -> list[Final]:
    return [result for result in listen(listener, pcm) if isinstance(result, Final)]


def test_a_complete_command_ends_on_a_short_silence_a_half_one_waits():
    speech = trimmed(speak("what is the price"))
    # The detector's own tail (~0.1 s) is not waited for: 0.2 s of silence is enough.
    assert len(finals(Listener(Saying("what is the price")), speech + silence(0.2))) == 1
    waiting = Listener(Saying("launch a token called"))
    assert not finals(waiting, speech + silence(0.3))
    assert finals(waiting, silence(0.1))


def test_free_text_may_go_on_so_it_waits_a_little_longer():
    speech = trimmed(speak("launch a token called moon"))
    named = Listener(Saying("launch a token called moon"))
    assert not finals(named, speech + silence(0.18))  # "... rocket" may follow
    assert finals(named, silence(0.1))


class Heard(Recorder):
    """A stream whose utterances are heard as ``texts``, in order."""

    def __init__(self, *texts: str) -> None:
        super().__init__()
        self.texts = list(texts)

    def partial(self) -> str:
        return self.texts[0] if self.texts else ""

    def finish(self) -> Transcript:
        super().finish()
        text = self.texts.pop(0)
        return Transcript(text, 0.9 if text else 0.0)


def test_a_wordless_sound_after_a_command_does_not_answer_the_turn_again():
    """A breath or a word's tail after "sell half" must not end the turn with an empty final."""
    speech = trimmed(speak("sell half"))
    listener = Listener(Heard("sell half", ""))
    [final] = finals(listener, speech + silence(0.3))
    assert final.transcript.text == "sell half"
    assert not finals(listener, trimmed(speak("ah")) + silence(0.05))  # still in speech
    [again] = listener.end()  # VOICE_AUDIO_END: "sell half" answered this turn, and again
    assert again.repeated and again.transcript.text == "sell half"
    [empty] = listener.end()  # a turn with nothing said is still answered, emptily
    assert empty.transcript == Transcript("", 0.0) and not empty.repeated


class Guessing(Heard):
    """Shows words while it hears, then finds no command in them."""

    def partial(self) -> str:
        return "what are" if self.audio else ""


def test_words_shown_while_hearing_always_get_a_final():
    """Continuous speech: after a command, a sentence that is no command still gets its
    (empty) final, or the interim words would stay on the screen."""
    listener = Listener(Guessing("what is the price", ""))
    speech = trimmed(speak("the weather is nice today"))
    assert len(finals(listener, speech + silence(0.5))) == 1
    results = listen(listener, speech + silence(0.5))
    assert isinstance(results[0], Interim)
    [empty] = [result for result in results if isinstance(result, Final)]
    assert empty.transcript.text == ""


def test_how_complete_the_words_are():
    done, may_go_on, partial = Completeness.DONE, Completeness.MAY_GO_ON, Completeness.PARTIAL
    assert completeness("buy two sol") is done
    assert completeness("sell half") is done
    assert completeness("what is the price") is done
    assert completeness("claim my rewards") is done
    assert completeness("launch a token called moon") is may_go_on  # "... rocket"
    assert completeness("join room gamma") is may_go_on
    assert completeness("say hello") is may_go_on  # a chat message may go on
    assert completeness("buy twenty") is partial  # "... five sol" must follow
    assert completeness("launch a token called") is partial
    assert completeness("") is partial
