"""Moonshine: the packaged model rebuilt for ONNX Runtime, its tokens, and the grammar search."""

from __future__ import annotations

import numpy as np
import pytest

from tests.voice.speech import speak
from voice.speech import moonshine
from voice.speech.engines import _speech
from voice.speech.search import STOPPED, TokenGrammar
from voice.speech.tokenizer import read_vocabulary

pytestmark = pytest.mark.skipif(
    not moonshine.available(), reason="moonshine-cpp ships for x86-64 only; it is not installed"
)


def audio(text: str, voice: str = "en-us", speed: int = 165) -> np.ndarray:
    samples = np.frombuffer(speak(text, voice, speed=speed), dtype="<i2").astype(np.float32)
    return _speech(samples / 32768)


def test_the_vocabulary_file_is_read_piece_by_piece():
    long = b"x" * 200
    data = b"\x05<unk>\x03<s>\x01a" + bytes([0x80 | (200 & 0x7F), 200 >> 7]) + long
    assert read_vocabulary(data) == [b"<unk>", b"<s>", b"a", long]


def test_words_become_the_tokens_the_model_was_trained_on():
    # Ids as Moonshine's own tokenizer (tokenizer.json of the model's release) writes them.
    tokenizer = moonshine.load().tokenizer
    assert tokenizer.word("two") == (1023,)
    assert tokenizer.word("sol") == (899,)
    assert tokenizer.word("buy") == (15649,)
    assert tokenizer.word("Buy") == (5373, 29891)
    assert tokenizer.word("Sell") == (317, 514)
    assert tokenizer.sentence("sell half") == (317, 514, 4203, 29889)
    # A character no piece holds falls back to its UTF-8 bytes.
    assert tokenizer.word("\u2603", space=False) == tuple(3 + b for b in "\u2603".encode())


def walk(grammar: TokenGrammar, tokens: tuple[int, ...]) -> bool | None:
    """True if the grammar ends after ``tokens``, False if it may not end there, None if the
    tokens leave the grammar."""
    items = grammar.start
    for token in tokens:
        following, _ = grammar.successors(items)
        if token not in following:
            return None
        items = following[token][0]
    return grammar.successors(items)[1]


def test_the_search_may_only_follow_the_grammar_in_any_case_with_a_closing_mark():
    tokenizer = moonshine.load().tokenizer
    transitions = [(0, 2, 0.5, "sell"), (2, 1, 1.0, "all"), (0, 1, 0.5, "seven"), (2, 1, 0.5)]
    grammar = TokenGrammar(transitions, tokenizer, prior=1.0)

    def tokens(*words: str) -> tuple[int, ...]:
        return tuple(t for w in words for t in tokenizer.word(w))

    assert walk(grammar, tokens("sell", "all")) is True
    assert walk(grammar, tokens("Sell", "ALL")) is True
    assert walk(grammar, tokens("sell")) is True  # "all" is optional
    assert walk(grammar, tokens("seven") + tokenizer.word("?", space=False)) is True
    assert walk(grammar, tokens("sell", "seven")) is None
    assert walk(grammar, tokens("all")) is None
    stop = tokenizer.word(".", space=False)
    assert walk(grammar, tokens("seven") + stop + stop) is None
    # The grammar's probabilities are the prior: entering "sell" costs log 0.5.
    following, ends = grammar.successors(grammar.start)
    assert not ends
    first = following[tokenizer.word("sell")[0]]
    assert first[1] == pytest.approx(np.log(0.5))
    assert all(item[0] != STOPPED for item in first[0])


def test_the_rebuilt_model_computes_what_the_packaged_one_does():
    import onnxruntime

    source = moonshine.model_folder() / "encoder_model.ort"
    rebuilt = moonshine.ort_to_onnx(source.read_bytes()).SerializeToString()
    speech = audio("buy two sol")[None, :]
    outputs = []
    for model in (str(source), rebuilt):
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {"input_values": speech})[0])
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-4)


@pytest.mark.parametrize(
    ("text", "voice", "speed"),
    [
        ("buy two sol", "en-us", 165),
        ("sell half of my tokens", "en-gb", 175),
        ("launch a token called moon rocket", "en-us", 175),
        ("what's the market cap", "en-us+f3", 165),
    ],
)
def test_moonshine_reads_commands_within_the_grammar(text, voice, speed):
    model = moonshine.load()
    hidden = model.encode(audio(text, voice, speed))
    tokens, _ = model.search(hidden, moonshine.command_grammar())
    assert model.text(tokens).lower().rstrip(".?!") == text


def test_scores_rank_the_words_said_above_others():
    model = moonshine.load()
    hidden = model.encode(audio("sell half"))
    said, other = model.score(hidden, ["sell half", "say hello"])
    assert said > other


def test_the_rebuilt_models_are_cached_by_content():
    folder = moonshine.model_folder()
    first = moonshine.prepared(folder / "encoder_model.ort")
    assert first.parent == moonshine.cache_folder() and first.exists()
    assert moonshine.prepared(folder / "encoder_model.ort") == first
