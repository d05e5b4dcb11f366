"""Spoken commands to FunPump intents: a small, pure parser.

The offline recogniser (pocketsphinx listening with ``voice.grammar``) hands over a transcript of
lowercase words. This module decides what it means: which intent, with which wire parameters, and
how sure we are. No Django and no I/O: text in, ``Command`` out.

Approach
--------
1. Tokenise: lowercase, split on whitespace, trim punctuation around words. Digits keep their
   decimal point ("1.5"); letters joined by a hyphen are split ("twenty-five").
2. Drop fillers at the start ("please", "okay", "hey", "can you", "i would like to", ...) and at
   the end ("please", "okay", "now", "um", ...).
3. Dispatch on the first word and match the rest against a few fixed shapes. A shape matches
   completely or not at all: leftover words mean UNKNOWN, so ordinary speech ("i bought two
   apples yesterday", "sell me a story", "buy buy") never becomes a trade.
4. Known mishearings are corrected only where the intended word can stand: "by" is "buy" only as
   the first word, "to" is "two" only where a number is expected, "soul" is "sol" only as the
   unit after an amount. Free text (a chat message, a token or environment name) is kept as
   heard, less trailing fillers ("say hello please" says "hello"; "say okay" says "okay").

A transcript over ``TEXT_MAX`` characters is UNKNOWN; ``heard`` outside 0..1 is a ValueError.

Amounts
-------
Numbers are read with ``Decimal``, never ``float``. A buy is in SOL and becomes lamports (10**9 per
SOL); a sell is in tokens and becomes raw units (10**6 per token). The result must be a whole
number of units, greater than zero and at most ``U64_MAX``; anything else is UNKNOWN. A sell of a
share of the holding carries ``fraction`` ("1", "0.5", "0.25") instead of ``amount``; a third is
not exact in decimal, so "sell a third" is UNKNOWN.

Confidence
----------
``confidence = heard * fit``. ``heard`` is the recogniser's acoustic confidence (0..1); ``fit``
says how well the words fit a command. It starts at 1.0 for canonical phrasing and loses

* ``FILLER`` (0.05) per filler phrase dropped,
* ``VARIANT`` (0.05) per accepted synonym ("purchase", "solana", "coins", "reward", "marketcap"),
* ``MISHEARING`` (0.15) per corrected word ("by" -> "buy", "soul" -> "sol", "to" -> "two"),
* ``IMPLIED_UNIT`` (0.2) when the unit was left out ("buy two", "sell one thousand"),

and never drops below ``MIN_FIT`` (0.4), so a recognised command always outranks UNKNOWN, whose
fit is ``UNKNOWN_FIT`` (0.3; 0.0 when nothing was said). The result is deterministic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import get_args

from protocol import MAX_CHAT_CHARS, Intent
from trading.curve import SOL_DECIMALS, TOKEN_DECIMALS, U64_MAX

INTENTS: tuple[str, ...] = get_args(Intent)

TOKEN_NAME_MAX = 32
ENVIRONMENT_NAME_MAX = 64  # the length of an environment's name in the database
# No command is longer than a maximal chat message and its verb; the cap bounds the work done.
TEXT_MAX = 1000

FILLER = 0.05
VARIANT = 0.05
MISHEARING = 0.15
IMPLIED_UNIT = 0.2
MIN_FIT = 0.4
UNKNOWN_FIT = 0.3


@dataclass(frozen=True, slots=True)
class Command:
    """What a transcript asks for: an intent, its wire parameters and a confidence in 0..1."""

    intent: Intent
    parameters: dict[str, str | bool]
    confidence: float

    def __post_init__(self) -> None:
        if self.intent not in INTENTS:
            raise ValueError(f"unknown intent {self.intent!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence!r} is outside 0..1")


@dataclass(slots=True)
class _Match:
    intent: Intent
    parameters: dict[str, str | bool]
    penalty: float = 0.0


Phrase = tuple[str, ...]

# Word lists map a heard word to the cost of taking it as the canonical one.
_BUY = {"buy": 0.0, "purchase": VARIANT} | dict.fromkeys(("by", "bye", "bi"), MISHEARING)
_SELL = {"sell": 0.0} | dict.fromkeys(("cell", "sale", "sail", "self"), MISHEARING)
_SOL = {"sol": 0.0, "solana": VARIANT, "sols": VARIANT}
_SOL |= dict.fromkeys(("soul", "sole", "sold", "saul"), MISHEARING)
_TOKENS = {"tokens": 0.0, "token": VARIANT, "coins": VARIANT, "coin": VARIANT}
_TOKEN_NOUNS = {"token": 0.0, "coin": 0.0, "tokens": VARIANT, "coins": VARIANT}

# Spellings of a word or phrase that the structured commands read alike (free text is kept).
_SPELLINGS: dict[Phrase, tuple[Phrase, float]] = {
    ("what's",): (("what", "is"), 0.0),
    ("whats",): (("what", "is"), 0.0),
    ("marketcap",): (("market", "cap"), VARIANT),
    ("market", "capitalization"): (("market", "cap"), VARIANT),
    ("market", "capitalisation"): (("market", "cap"), VARIANT),
    ("reward",): (("rewards",), VARIANT),
}

_LEADING_FILLERS: tuple[Phrase, ...] = tuple(
    tuple(phrase.split())
    for phrase in (
        "i would like to",
        "i want to",
        "can you",
        "could you",
        "let's",
        "lets",
        "please",
        "okay",
        "ok",
        "hey",
        "now",
        "um",
        "uh",
    )
)
_TRAILING_FILLERS = frozenset({"please", "okay", "ok", "hey", "now", "um", "uh"})

# A share of the holding, and the words that may name the holding after it ("half of my tokens").
_FRACTIONS: dict[Phrase, str] = {
    ("all",): "1",
    ("everything",): "1",
    ("half",): "0.5",
    ("a", "quarter"): "0.25",
    ("one", "quarter"): "0.25",
}
_HOLDINGS: frozenset[Phrase] = frozenset(
    {(), ("it",), ("them",), ("tokens",), ("my", "tokens"), ("the", "tokens")}
)


def _phrases(
    asks: dict[Phrase, float], subjects: dict[Phrase, str]
) -> dict[Phrase, tuple[str, float]]:
    return {
        ask + subject: (value, cost)
        for ask, cost in asks.items()
        for subject, value in subjects.items()
    }


_MARKET_ASKS: dict[Phrase, float] = {
    (): 0.0,
    ("what", "is", "the"): 0.0,
    ("show", "the"): 0.0,
    ("show", "me", "the"): 0.0,
    ("tell", "me", "the"): 0.0,
    ("the",): VARIANT,
    ("what", "is"): VARIANT,
    ("show", "me"): VARIANT,
    ("tell", "me"): VARIANT,
}
_METRICS: dict[Phrase, str] = {
    ("price",): "price",
    ("volume",): "volume",
    ("twenty", "four", "hour", "volume"): "volume",
    ("24", "hour", "volume"): "volume",
    ("daily", "volume"): "volume",
    ("market", "cap"): "marketCap",
}
_MARKET = _phrases(_MARKET_ASKS, _METRICS) | {("how", "much", "is", "it"): ("price", 0.0)}

_REWARDS: dict[Phrase, tuple[Intent, float]] = {
    ("check", "my", "rewards"): ("GET_REWARDS", 0.0),
    ("show", "my", "rewards"): ("GET_REWARDS", 0.0),
    ("what", "are", "my", "rewards"): ("GET_REWARDS", 0.0),
    ("show", "me", "my", "rewards"): ("GET_REWARDS", VARIANT),
    ("check", "rewards"): ("GET_REWARDS", VARIANT),
    ("show", "rewards"): ("GET_REWARDS", VARIANT),
    ("claim", "my", "rewards"): ("CLAIM_REWARDS", 0.0),
    ("claim", "rewards"): ("CLAIM_REWARDS", 0.0),
    ("claim", "the", "rewards"): ("CLAIM_REWARDS", VARIANT),
}

# Numbers.


def _numbering(names: str, start: int, step: int = 1) -> dict[str, int]:
    return {name: start + step * k for k, name in enumerate(names.split())}


_ONES = _numbering("one two three four five six seven eight nine", 1)
_DIGITS = {"zero": 0} | _ONES
_TEENS = _numbering(
    "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen", 10
)
_TENS = _numbering("twenty thirty forty fifty sixty seventy eighty ninety", 20, 10)
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9}
# Homophones of number words, taken as numbers only where a number is expected.
_NUMBER_MISHEARINGS = {"to": "two", "too": "two", "for": "four", "won": "one"}
_NUMERAL = re.compile(r"[0-9]{1,30}(?:\.[0-9]{1,30})?|\.[0-9]{1,30}")
_BETWEEN_LETTERS_HYPHEN = re.compile(r"(?<=[^\W\d_])-(?=[^\W\d_])")


def parse_command(text: str, *, heard: float = 1.0) -> Command:
    """The command a transcript asks for; ``heard`` is the recogniser's confidence in 0..1."""
    if not 0.0 <= heard <= 1.0:  # also refuses NaN
        raise ValueError(f"heard {heard!r} is outside 0..1")
    words = _tokens(text)
    if not words:
        return Command("UNKNOWN", {}, 0.0)
    words, fillers = _strip_leading(words)
    match = _match(words) if words and len(text) <= TEXT_MAX else None
    if match is None:
        return Command("UNKNOWN", {}, heard * UNKNOWN_FIT)
    # Penalties are multiples of 0.05: rounding keeps fits like 0.85 free of float noise.
    fit = max(MIN_FIT, round(1.0 - FILLER * fillers - match.penalty, 2))
    return Command(match.intent, match.parameters, heard * fit)


def spoken_number(words: list[str]) -> Decimal | None:
    """The number that words say ("two thousand", "zero point five", "1.5"), or None."""
    parsed = _number([word.lower() for word in words])
    return None if parsed is None else parsed[0]


# Words.


def _tokens(text: str) -> list[str]:
    text = _BETWEEN_LETTERS_HYPHEN.sub(" ", text.lower())
    words = (word.lstrip("\"'([").rstrip(".,!?;:\"')]") for word in text.split())
    return [word for word in words if word]


def _strip_leading(words: list[str]) -> tuple[list[str], int]:
    dropped = 0
    while True:
        for phrase in _LEADING_FILLERS:
            if tuple(words[: len(phrase)]) == phrase:
                words, dropped = words[len(phrase) :], dropped + 1
                break
        else:
            return words, dropped


def _strip_trailing(words: list[str]) -> tuple[list[str], int]:
    end = len(words)
    while end and words[end - 1] in _TRAILING_FILLERS:
        end -= 1
    return words[:end], len(words) - end


def _respell(words: list[str]) -> tuple[list[str], float]:
    out: list[str] = []
    cost, i = 0.0, 0
    while i < len(words):
        for source, (target, extra) in _SPELLINGS.items():
            if tuple(words[i : i + len(source)]) == source:
                out.extend(target)
                cost, i = cost + extra, i + len(source)
                break
        else:
            out.append(words[i])
            i += 1
    return out, cost


def _free_text(words: list[str], limit: int) -> tuple[str, int] | None:
    """Words kept as heard, less trailing fillers unless they are all there is ("say okay")."""
    body, dropped = _strip_trailing(words)
    if not body:
        body, dropped = words, 0
    text = " ".join(body)
    return (text, dropped) if 1 <= len(text) <= limit else None


# Commands.


def _match(words: list[str]) -> _Match | None:
    verb, rest = words[0], words[1:]
    if verb in ("say", "chat", "send"):
        return _chat(rest)
    if verb in ("launch", "create"):
        return _launch(rest)
    if verb == "join":
        return _join(rest)
    body, dropped = _strip_trailing(words)
    if not body:
        return None
    match = _trade(body)
    if match is None:
        body, cost = _respell(body)
        match = _lookup(body, cost)
    if match is not None:
        match.penalty += FILLER * dropped
    return match


def _lookup(words: list[str], cost: float) -> _Match | None:
    phrase = tuple(words)
    if phrase in _MARKET:
        metric, extra = _MARKET[phrase]
        return _Match("MARKET_ANALYSIS", {"metric": metric}, cost + extra)
    if phrase in _REWARDS:
        intent, extra = _REWARDS[phrase]
        return _Match(intent, {}, cost + extra)
    return None


def _chat(rest: list[str]) -> _Match | None:
    text = _free_text(rest, MAX_CHAT_CHARS)
    if text is None:
        return None
    message, dropped = text
    return _Match("CHAT", {"message": message}, FILLER * dropped)


def _launch(rest: list[str]) -> _Match | None:
    """``[a] [new] (token | coin) (called | named) <name>``, after "launch" or "create"."""
    i = 0
    for optional in ("a", "new"):
        if rest[i : i + 1] == [optional]:
            i += 1
    if i >= len(rest) or rest[i] not in _TOKEN_NOUNS:
        return None
    cost = _TOKEN_NOUNS[rest[i]]
    if rest[i + 1 : i + 2] not in (["called"], ["named"]):
        return None
    text = _free_text(rest[i + 2 :], TOKEN_NAME_MAX)
    if text is None:
        return None
    name, dropped = text
    return _Match("LAUNCH_TOKEN", {"tokenName": name}, cost + FILLER * dropped)


def _join(rest: list[str]) -> _Match | None:
    """``[the] [environment | room] <name>``, after "join"."""
    if rest[:1] == ["the"]:
        rest = rest[1:]
    if rest[:1] in (["environment"], ["room"]):
        rest = rest[1:]
    text = _free_text(rest, ENVIRONMENT_NAME_MAX)
    if text is None:
        return None
    name, dropped = text
    return _Match("JOIN_ENVIRONMENT", {"environmentName": name}, FILLER * dropped)


def _trade(words: list[str]) -> _Match | None:
    verb, rest = words[0], words[1:]
    if verb in _BUY:
        match = _buy(rest)
        cost = _BUY[verb]
    elif verb in _SELL:
        match = _sell(rest)
        cost = _SELL[verb]
    else:
        return None
    if match is not None:
        match.penalty += cost
    return match


def _buy(rest: list[str]) -> _Match | None:
    """``[me] <amount> [[of] sol]``: buys are in SOL; an amount in tokens is not a buy."""
    if rest[:1] == ["me"]:
        rest = rest[1:]
    return _trade_amount(rest, is_buy=True)


def _sell(rest: list[str]) -> _Match | None:
    """``<share> [of] [it | them | my tokens]`` or ``<amount> [tokens]``: sells are in tokens."""
    for share, fraction in _FRACTIONS.items():
        if tuple(rest[: len(share)]) != share:
            continue
        holding, cost = rest[len(share) :], 0.0
        if holding[:1] == ["of"]:
            holding = holding[1:]
        if holding and holding[-1] in _TOKENS:  # "half of my coins"
            holding, cost = [*holding[:-1], "tokens"], _TOKENS[holding[-1]]
        if tuple(holding) in _HOLDINGS:
            return _Match("EXECUTE_TRADE", {"isBuy": False, "fraction": fraction}, cost)
    return _trade_amount(rest, is_buy=False)


def _trade_amount(rest: list[str], *, is_buy: bool) -> _Match | None:
    """An amount in the trade's own unit: lamports for a buy (SOL), raw units for a sell."""
    quantity = _quantity(rest)
    if quantity is None:
        return None
    value, unit, cost = quantity
    if unit == ("tokens" if is_buy else "sol"):
        return None
    amount = _units(value, SOL_DECIMALS if is_buy else TOKEN_DECIMALS)
    if amount is None:
        return None
    return _Match("EXECUTE_TRADE", {"isBuy": is_buy, "amount": str(amount)}, cost)


def _quantity(words: list[str]) -> tuple[Decimal, str | None, float] | None:
    """An amount and its unit ("sol", "tokens" or None when left out), with the cost of reading."""
    unit: str | None = None
    cost = IMPLIED_UNIT
    if words and words[-1] in _SOL:
        unit, cost, words = "sol", _SOL[words[-1]], words[:-1]
    elif words and words[-1] in _TOKENS:
        unit, cost, words = "tokens", _TOKENS[words[-1]], words[:-1]
    if unit is not None and words[-1:] == ["of"]:
        words = words[:-1]
    if unit == "sol" and words == ["half", "a"]:
        return Decimal("0.5"), unit, cost
    parsed = _number(words)
    if parsed is None:
        return None
    value, corrections = parsed
    return value, unit, cost + MISHEARING * corrections


def _units(value: Decimal, places: int) -> int | None:
    """``value * 10**places`` when that is a whole number in 1..U64_MAX, exactly, else None."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # NaN or infinity
        return None
    # Trailing zeros after the point carry no value: "1.50" is 1.5.
    while exponent < 0 and len(digits) > 1 and digits[-1] == 0:
        digits, exponent = digits[:-1], exponent + 1
    exponent += places
    # Integer arithmetic from here on: no context, so no rounding.
    if sign or exponent < 0 or len(digits) + exponent > len(str(U64_MAX)):
        return None
    units = int("".join(map(str, digits))) * 10**exponent
    return units if 0 < units <= U64_MAX else None


# Numbers: a numeral ("1.5"), or words with an optional "point" and digits, or "and a half".


def _number(words: list[str]) -> tuple[Decimal, int] | None:
    """The value of number words and how many homophones ("to", "for", "won") were corrected."""
    if len(words) == 1 and _NUMERAL.fullmatch(words[0]):
        return Decimal(words[0]), 0
    corrected = [_NUMBER_MISHEARINGS.get(word, word) for word in words]
    corrections = sum(a != b for a, b in zip(words, corrected, strict=True))
    words = corrected
    half = words[-3:] == ["and", "a", "half"]
    if half:
        words = words[:-3]
    fraction = ""
    if "point" in words and not half:
        at = words.index("point")
        words, decimals = words[:at], words[at + 1 :]
        if not decimals or any(word not in _DIGITS for word in decimals):
            return None
        fraction = "".join(str(_DIGITS[word]) for word in decimals)
    if not words:
        integer: int | None = 0 if fraction else None  # "point five"
    elif words == ["zero"]:
        integer = 0
    else:
        integer = _integer(words)
    if integer is None:
        return None
    value = Decimal(f"{integer}.{fraction}" if fraction else integer)
    return (value + Decimal("0.5") if half else value), corrections


def _integer(words: list[str]) -> int | None:
    """Whole-number words: groups below a thousand, each with a smaller scale than the last."""
    total, i, last_scale = 0, 0, U64_MAX
    while i < len(words):
        group = _below_thousand(words, i)
        if group is None:
            return None
        value, i = group
        if i == len(words):
            return total + value
        scale = _SCALES.get(words[i], 0)
        if not scale or scale >= last_scale:
            return None
        total, last_scale, i = total + value * scale, scale, i + 1
        if words[i : i + 1] == ["and"]:  # "one thousand and five"
            i += 1
            if i == len(words):
                return None
    return total


def _below_thousand(words: list[str], i: int) -> tuple[int, int] | None:
    # "a" stands for "one" before a multiplier: "a hundred", "a thousand".
    if (
        words[i] == "a"
        and i + 1 < len(words)
        and (words[i + 1] == "hundred" or words[i + 1] in _SCALES)
    ):
        head, i = 1, i + 1
    else:
        parsed = _below_hundred(words, i)
        if parsed is None:
            return None
        head, i = parsed
    if words[i : i + 1] != ["hundred"]:
        return head, i
    i += 1  # "one hundred", and "fifteen hundred" too
    if words[i : i + 1] == ["and"]:  # "one hundred and five": the "and" needs a tail
        tail = _below_hundred(words, i + 1)
        return None if tail is None else (head * 100 + tail[0], tail[1])
    tail = _below_hundred(words, i)
    return (head * 100, i) if tail is None else (head * 100 + tail[0], tail[1])


def _below_hundred(words: list[str], i: int) -> tuple[int, int] | None:
    if i >= len(words):
        return None
    word = words[i]
    if word in _TENS:
        if i + 1 < len(words) and words[i + 1] in _ONES:
            return _TENS[word] + _ONES[words[i + 1]], i + 2
        return _TENS[word], i + 1
    if word in _TEENS:
        return _TEENS[word], i + 1
    if word in _ONES:
        return _ONES[word], i + 1
    return None
