"""The command grammar the offline recogniser listens with.

A grammar, not a general language model: a short command vocabulary is recognised far more reliably
than free English. The shapes follow :mod:`voice.speech.intents`, with one difference: a trade needs
its unit ("buy two sol", "sell one thousand tokens"), so that a number said in passing is not forced
into a trade. Free text (a chat message, a token or environment name) comes from short word lists:
``NAMES`` for names, ``WORDS`` for chat.

Speech that is no command needs somewhere to go, or the decoder forces it onto the nearest
command ("where did you put my keys" heard as "buy thirty eight thousand sol"). That place is a
garbage loop: any sequence of English phones, each at a price (``GARBAGE_PHONE``). A command that
fits the audio costs nothing per phone, so it wins; speech that fits no command is cheaper as
garbage, and a transcript of garbage is no transcript at all.

The rules are written in JSGF (``command_grammar``, readable and checked by pocketsphinx's own
parser in the tests of this module's users) and compiled here to a finite-state grammar with
costs (``command_fsg``): JSGF weights cannot price a loop. The intent parser decides what a
transcript means; this file only shapes what the recogniser can hear.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS = [
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]

# Names people give tokens and rooms: a token or an environment is called by one or two of these.
NAMES = """
alpha beta gamma delta omega sigma zeta demo test main lobby moon rocket star sun sky gold
silver diamond doge dog cat frog pepe bear bull whale fish pizza banana apple cherry tiger lion
dragon ninja pixel laser turbo mega super magic lucky happy red blue green black white pink
orange purple blaze fire ice storm thunder nova comet galaxy planet mars jupiter pluto cash
money pump party fun
"""

# Everyday words: the chat vocabulary.
WORDS = """
a about all am and anyone are at awesome back bad be big bye can cool day do does doing down
everybody everyone for friend friends fun gm go going good great guys have hello help here hey
hi how i is it just let's like lol love me moon morning my nice night no not now ok okay on
one our pump ready see so team thanks thank that the there this time to today too up us wait
we welcome what who win with wow yeah yes you your
"""

# Pronunciations the recogniser's dictionary lacks, beside its own. "sell" said as "sill" (the
# fell-fill merger of some Southern US and other accents, and how the recogniser hears espeak-ng's
# "sell"): without it, "sell all" ends up as a chat message, "say lol all". On the voice bench it
# turned about 6% more of its commands right (bench/voice.py).
PRONUNCIATIONS = {"sell": "S IH L"}

GRAMMAR_TEMPLATE = """#JSGF V1.0;
grammar funpump;

public <utterance> = [<opener>] <command> [please];
<opener> = please | okay | hey | now | i want to | i would like to | can you;
<command> = <buy> | <sell> | <market> | <launch> | <join> | <chat> | <rewards>;

<buy> = (buy | purchase) [me] <amount> [of] (sol | solana);
<sell> = sell (<share> [of (it | them | my tokens)] | <amount> tokens);
<share> = all | everything | half | a quarter;

<market> = (what is | what's) the <metric> | (show | tell) me the <metric> | show the <metric>
        | how much is it;
<metric> = price | volume | market cap | twenty four hour volume;

<launch> = (launch | create) [a] [new] (token | coin) (called | named) <name>;
<join> = join [the] [environment | room] <name> [room | environment];
<name> = <nameword> [<nameword>];
<chat> = (say | chat | send) <word> [<word>] [<word>] [<word>];
<rewards> = (check | show) my rewards | what are my rewards | claim [my] rewards;

<amount> = <number> [point <digit> [<digit>] [<digit>]] | zero point <digit> [<digit>] [<digit>]
        | a (hundred | thousand);
<number> = <below_thousand> [thousand [<below_thousand>]];
<below_thousand> = <below_hundred> | <one_digit> hundred [[and] <below_hundred>];
<below_hundred> = <one_digit> | <teen> | <ten> [<one_digit>];
<one_digit> = {ones};
<digit> = {units};
<teen> = {teens};
<ten> = {tens};

<nameword> = {names};
<word> = {words};
"""

# The garbage loop: one pseudo-word per phone of the acoustic model ("_aa" is AA), and the
# probability each of them costs. Lower rejects more: commands start to fall into garbage too.
PHONES = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W "
    "Y Z ZH"
)
GARBAGE_PREFIX = "_"
GARBAGE_PHONE = 1e-8


def command_grammar() -> str:
    """The JSGF text of FunPump's command grammar (without the garbage loop)."""
    return GRAMMAR_TEMPLATE.format(
        ones=" | ".join(UNITS[1:]),
        units=" | ".join(UNITS),
        teens=" | ".join(TEENS),
        tens=" | ".join(TENS),
        names=" | ".join(sorted(set(NAMES.split()))),
        words=" | ".join(sorted(set(WORDS.split()))),
    )


def grammar_words() -> frozenset[str]:
    """Every word the grammar can produce (its pronunciation dictionary's entries)."""
    words: set[str] = set()

    def visit(node: Node) -> None:
        if node[0] == "word":
            words.add(node[1])
        elif node[0] in ("seq", "alt"):
            for item in node[1]:
                visit(item[1] if node[0] == "alt" else item)
        elif node[0] in ("opt", "plus"):
            visit(node[1])

    for rule in _rules(command_grammar()).values():
        visit(rule)
    return frozenset(words)


def garbage_words() -> dict[str, str]:
    """The garbage loop's pseudo-words and their one-phone pronunciations."""
    return {GARBAGE_PREFIX + phone.lower(): phone for phone in PHONES.split()}


def is_garbage(word: str) -> bool:
    return word.startswith(GARBAGE_PREFIX)


# Compilation: JSGF text to (from, to, probability[, word]) transitions.

Transition = tuple[int, int, float] | tuple[int, int, float, str]


@dataclass
class Fsg:
    """A finite-state grammar under construction: state 0 starts it, state 1 ends it."""

    states: int = 2
    transitions: list[Transition] = field(default_factory=list)

    def state(self) -> int:
        self.states += 1
        return self.states - 1


def command_fsg(garbage_phone: float = GARBAGE_PHONE) -> Fsg:
    """The command grammar as a finite-state grammar, with the garbage loop beside it."""
    rules = _rules(command_grammar())
    fsg = Fsg()
    _compile(("ref", "utterance"), 0, 1, fsg, rules, 1.0)
    if garbage_phone > 0:
        loop = fsg.state()
        fsg.transitions.append((0, loop, 1.0))
        for word in garbage_words():
            fsg.transitions.append((loop, loop, garbage_phone, word))
        fsg.transitions.append((loop, 1, 1.0))
    _close_null_transitions(fsg)
    return fsg


def _close_null_transitions(fsg: Fsg) -> None:
    """Make word-less transitions transitive: the decoder follows only one in a row."""
    null: dict[int, dict[int, float]] = {}
    words: list[Transition] = []
    for transition in fsg.transitions:
        if len(transition) == 3:
            src, dst, probability = transition
            edges = null.setdefault(src, {})
            edges[dst] = max(edges.get(dst, 0.0), probability)
        else:
            words.append(transition)
    closed: dict[int, dict[int, float]] = {}
    for start in null:
        best = {start: 1.0}
        frontier = [start]
        while frontier:
            here = frontier.pop()
            for there, probability in null.get(here, {}).items():
                reached = best[here] * probability
                if reached > best.get(there, 0.0):
                    best[there] = reached
                    frontier.append(there)
        closed[start] = {state: p for state, p in best.items() if state != start}
    fsg.transitions = words + [
        (src, dst, probability)
        for src, edges in closed.items()
        for dst, probability in edges.items()
    ]


_TOKEN = re.compile(r"<[^>]+>|/[^/]+/|[()\[\]|+*]|[^\s()\[\]|+*<>/]+")

Node = tuple[
    Any, ...
]  # ("word", str) | ("ref", str) | ("seq", list) | ("alt", list) | ("opt"|"plus", Node)


def _rules(text: str) -> dict[str, Node]:
    body = text.split("grammar funpump;", 1)[1]
    rules: dict[str, Node] = {}
    for chunk in body.split(";"):
        name, equals, expansion = chunk.partition("=")
        if not equals:
            continue
        tokens = _TOKEN.findall(expansion)
        node, end = _alternatives(tokens, 0)
        if end != len(tokens):
            raise ValueError(f"cannot parse rule {name.strip()}: {expansion.strip()}")
        rules[name.replace("public", "").strip().strip("<>")] = node
    return rules


def _alternatives(tokens: list[str], i: int) -> tuple[Node, int]:
    options: list[tuple[float, Node]] = []
    while True:
        weight = 1.0
        if i < len(tokens) and tokens[i].startswith("/"):
            weight, i = float(tokens[i].strip("/")), i + 1
        node, i = _sequence(tokens, i)
        options.append((weight, node))
        if i < len(tokens) and tokens[i] == "|":
            i += 1
            continue
        return (options[0][1] if len(options) == 1 else ("alt", options)), i


def _sequence(tokens: list[str], i: int) -> tuple[Node, int]:
    items: list[Node] = []
    while i < len(tokens) and tokens[i] not in ("|", ")", "]"):
        part = tokens[i]
        if part in ("(", "["):
            inner, i = _alternatives(tokens, i + 1)
            closing = {"(": ")", "[": "]"}[part]
            if i >= len(tokens) or tokens[i] != closing:
                raise ValueError(f"expected {closing!r}")
            node: Node = inner if part == "(" else ("opt", inner)
            i += 1
        elif part.startswith("<"):
            node, i = ("ref", part.strip("<>")), i + 1
        else:
            node, i = ("word", part), i + 1
        if i < len(tokens) and tokens[i] in ("+", "*"):
            node = ("plus", node) if tokens[i] == "+" else ("opt", ("plus", node))
            i += 1
        items.append(node)
    return (items[0] if len(items) == 1 else ("seq", items)), i


def _compile(
    node: Node, src: int, dst: int, fsg: Fsg, rules: dict[str, Node], probability: float
) -> None:
    kind = node[0]
    if kind == "word":
        fsg.transitions.append((src, dst, probability, node[1]))
    elif kind == "ref":
        _compile(rules[node[1]], src, dst, fsg, rules, probability)
    elif kind == "seq":
        items = node[1]
        here = src
        for k, item in enumerate(items):
            there = dst if k == len(items) - 1 else fsg.state()
            _compile(item, here, there, fsg, rules, probability if k == 0 else 1.0)
            here = there
    elif kind == "alt":
        total = sum(weight for weight, _ in node[1])
        for weight, item in node[1]:
            _compile(item, src, dst, fsg, rules, probability * weight / total)
    elif kind == "opt":
        fsg.transitions.append((src, dst, probability))
        _compile(node[1], src, dst, fsg, rules, probability)
    elif kind == "plus":
        loop = fsg.state()
        _compile(node[1], src, loop, fsg, rules, probability)
        _compile(node[1], loop, loop, fsg, rules, 1.0)
        fsg.transitions.append((loop, dst, 1.0))
    else:  # pragma: no cover - the parser makes no other kind
        raise ValueError(f"unknown node {kind}")
