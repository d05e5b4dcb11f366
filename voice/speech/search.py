"""The command grammar at the level of Moonshine's tokens, for a search that only follows the
grammar's paths (:meth:`voice.speech.moonshine.Moonshine.search`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from voice.speech.tokenizer import Tokenizer

STOPPED = -1  # the state after the text's closing punctuation
# A search position's items: (the state after the word, the word's tokens, tokens read so far).
Items = frozenset[tuple[int, tuple[int, ...], int]]


class TokenGrammar:
    """Which tokens may come next, for a word-level finite-state grammar.

    A search position is the set of grammar paths its tokens fit: items ``(state, word tokens,
    tokens read)``, where ``state`` is where the grammar goes once the word is complete. Several
    words can share their first tokens ("sell", "seven"), so a position holds them all until the
    tokens tell them apart.
    """

    def __init__(
        self,
        transitions: list[Any],
        tokenizer: Tokenizer,
        *,
        start: int = 0,
        final: int = 1,
        prior: float = 0.0,
    ) -> None:
        self.arcs: dict[int, list[tuple[int, tuple[int, ...], float]]] = {}
        reach: dict[int, dict[int, float]] = {}
        for transition in transitions:
            if len(transition) == 4:
                src, dst, probability, word = transition
                for spelling in {word, word.capitalize(), word.upper()}:
                    self.arcs.setdefault(src, []).append(
                        (dst, tokenizer.word(spelling), prior * math.log(probability))
                    )
            else:  # word-less transitions are already closed (see command_fsg)
                src, dst, probability = transition
                reach.setdefault(src, {})[dst] = prior * math.log(probability)
        self.reach = {state: {state: 0.0, **reach.get(state, {})} for state in reach}
        self.final = final
        self.start: Items = frozenset({(start, (), 0)})
        # The text may end in a full stop or a question mark, as the model writes them.
        self.stops = [tokenizer.word(mark, space=False) for mark in ".?!"]

    def closure(self, state: int) -> dict[int, float]:
        return self.reach.get(state, {state: 0.0})

    def successors(self, items: Items) -> tuple[dict[int, tuple[Items, float]], bool]:
        """The tokens that may follow ``items`` (with the items each leads to and the grammar's
        log-prior for taking it), and whether the text may end here."""
        following: dict[int, dict[tuple[int, tuple[int, ...], int], float]] = {}
        ends = False
        for state, tokens, read in items:
            if read < len(tokens):
                following.setdefault(tokens[read], {})[(state, tokens, read + 1)] = 0.0
                continue
            if state == STOPPED:
                ends = True
                continue
            for here, through in self.closure(state).items():
                if here == self.final:
                    ends = True
                    for stop in self.stops:
                        following.setdefault(stop[0], {})[(STOPPED, stop, 1)] = 0.0
                for there, word, prior in self.arcs.get(here, ()):
                    options = following.setdefault(word[0], {})
                    item = (there, word, 1)
                    options[item] = max(options.get(item, -math.inf), through + prior)
        return {
            token: (frozenset(options), max(options.values()))
            for token, options in following.items()
        }, ends


@dataclass
class Hypothesis:
    items: Items
    tokens: list[int] = field(default_factory=list)
    score: float = 0.0
