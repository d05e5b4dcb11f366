"""Tests for the spoken-command parser in :mod:`voice.speech.intents` (pure: no Django, no
database)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice.speech.intents import (
    INTENTS,
    U64_MAX,
    UNKNOWN_FIT,
    Command,
    parse_command,
    spoken_number,
)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)
SOL = 10**9
TOKEN = 10**6


def buy(lamports: int) -> tuple[str, dict[str, str | bool]]:
    return "EXECUTE_TRADE", {"isBuy": True, "amount": str(lamports)}


def sell(raw: int) -> tuple[str, dict[str, str | bool]]:
    return "EXECUTE_TRADE", {"isBuy": False, "amount": str(raw)}


def sell_share(fraction: str) -> tuple[str, dict[str, str | bool]]:
    return "EXECUTE_TRADE", {"isBuy": False, "fraction": fraction}


def market(metric: str) -> tuple[str, dict[str, str | bool]]:
    return "MARKET_ANALYSIS", {"metric": metric}


UNKNOWN: tuple[str, dict[str, str | bool]] = ("UNKNOWN", {})
GET_REWARDS: tuple[str, dict[str, str | bool]] = ("GET_REWARDS", {})
CLAIM_REWARDS: tuple[str, dict[str, str | bool]] = ("CLAIM_REWARDS", {})

PHRASINGS: list[tuple[str, tuple[str, dict[str, str | bool]]]] = [
    # Trades: the contract's examples.
    ("buy two sol", buy(2 * SOL)),
    ("buy zero point five sol", buy(SOL // 2)),
    ("sell all", sell_share("1")),
    ("sell half", sell_share("0.5")),
    ("sell one thousand tokens", sell(1000 * TOKEN)),
    # Trades: numbers in words and digits.
    ("buy 2 sol", buy(2 * SOL)),
    ("buy 1.5 sol", buy(1_500_000_000)),
    ("buy 0.5 sol", buy(SOL // 2)),
    ("buy .25 sol", buy(250_000_000)),
    ("buy two point two five sol", buy(2_250_000_000)),
    ("buy twenty five sol", buy(25 * SOL)),
    ("buy a hundred sol", buy(100 * SOL)),
    ("buy one hundred and five sol", buy(105 * SOL)),
    ("buy twenty-five sol", buy(25 * SOL)),
    ("buy two and a half sol", buy(2_500_000_000)),
    ("buy half a sol", buy(SOL // 2)),
    ("buy me two sol", buy(2 * SOL)),
    ("purchase two solana", buy(2 * SOL)),
    ("buy 0.000000001 sol", buy(1)),
    ("buy 18446744073.709551615 sol", buy(U64_MAX)),
    ("sell two thousand tokens", sell(2000 * TOKEN)),
    ("sell three million tokens", sell(3_000_000 * TOKEN)),
    ("sell 1000 tokens", sell(1000 * TOKEN)),
    ("sell 0.000001 tokens", sell(1)),
    ("sell one token", sell(TOKEN)),
    ("sell a quarter", sell_share("0.25")),
    ("sell everything", sell_share("1")),
    ("sell all of it", sell_share("1")),
    ("sell half of my tokens", sell_share("0.5")),
    ("sell half of my coins", sell_share("0.5")),
    # Trades without a unit: buys in SOL, sells in tokens.
    ("buy two", buy(2 * SOL)),
    ("sell one thousand", sell(1000 * TOKEN)),
    # Mishearings.
    ("by two sol", buy(2 * SOL)),
    ("bye two sol", buy(2 * SOL)),
    ("bi two sol", buy(2 * SOL)),
    ("buy two soul", buy(2 * SOL)),
    ("buy two sole", buy(2 * SOL)),
    ("buy two sold", buy(2 * SOL)),
    ("buy two saul", buy(2 * SOL)),
    ("buy two sols", buy(2 * SOL)),
    ("buy to sol", buy(2 * SOL)),
    ("buy too sol", buy(2 * SOL)),
    ("buy for sol", buy(4 * SOL)),
    ("buy won sol", buy(SOL)),
    ("by to soul", buy(2 * SOL)),
    ("cell all", sell_share("1")),
    ("sale half", sell_share("0.5")),
    ("sail one thousand tokens", sell(1000 * TOKEN)),
    ("self all", sell_share("1")),
    ("sell for thousand coins", sell(4000 * TOKEN)),
    # Fillers.
    ("please buy two sol", buy(2 * SOL)),
    ("okay buy two sol please", buy(2 * SOL)),
    ("hey can you buy two sol", buy(2 * SOL)),
    ("i want to buy two sol", buy(2 * SOL)),
    ("i would like to sell half", sell_share("0.5")),
    ("could you please sell all now", sell_share("1")),
    ("let's buy two sol", buy(2 * SOL)),
    ("um buy two sol uh", buy(2 * SOL)),
    ("Buy two SOL.", buy(2 * SOL)),
    # Market analysis.
    ("what is the price", market("price")),
    ("what's the price", market("price")),
    ("whats the price", market("price")),
    ("price", market("price")),
    ("how much is it", market("price")),
    ("what's the volume", market("volume")),
    ("what's the twenty four hour volume", market("volume")),
    ("show the market cap", market("marketCap")),
    ("what's the marketcap", market("marketCap")),
    ("show me the market capitalization", market("marketCap")),
    ("show me the price", market("price")),
    ("tell me the volume", market("volume")),
    ("what is the price now", market("price")),
    # Launch.
    ("launch a token called moon rocket", ("LAUNCH_TOKEN", {"tokenName": "moon rocket"})),
    ("launch a new coin named doge", ("LAUNCH_TOKEN", {"tokenName": "doge"})),
    ("create a token called moon", ("LAUNCH_TOKEN", {"tokenName": "moon"})),
    ("launch token named star please", ("LAUNCH_TOKEN", {"tokenName": "star"})),
    # Join.
    ("join environment alpha", ("JOIN_ENVIRONMENT", {"environmentName": "alpha"})),
    ("join the room alpha", ("JOIN_ENVIRONMENT", {"environmentName": "alpha"})),
    ("join alpha", ("JOIN_ENVIRONMENT", {"environmentName": "alpha"})),
    ("join the environment moon base", ("JOIN_ENVIRONMENT", {"environmentName": "moon base"})),
    # Chat: the message as heard.
    ("say hello everyone", ("CHAT", {"message": "hello everyone"})),
    ("chat hello", ("CHAT", {"message": "hello"})),
    ("send hello everyone", ("CHAT", {"message": "hello everyone"})),
    ("say what's up", ("CHAT", {"message": "what's up"})),
    ("say buy two sol", ("CHAT", {"message": "buy two sol"})),
    ("say okay", ("CHAT", {"message": "okay"})),
    # Rewards.
    ("check my rewards", GET_REWARDS),
    ("show my rewards", GET_REWARDS),
    ("what are my rewards", GET_REWARDS),
    ("check my reward", GET_REWARDS),
    ("claim my rewards", CLAIM_REWARDS),
    ("claim rewards", CLAIM_REWARDS),
    ("claim reward", CLAIM_REWARDS),
    # Not commands.
    ("", UNKNOWN),
    ("   ", UNKNOWN),
    ("please", UNKNOWN),
    ("hello there", UNKNOWN),
    ("i bought two apples yesterday", UNKNOWN),
    ("the weather is nice today", UNKNOWN),
    ("sell me a story", UNKNOWN),
    ("buy buy", UNKNOWN),
    ("buy", UNKNOWN),
    ("buy sol", UNKNOWN),
    ("sell", UNKNOWN),
    ("half a sol", UNKNOWN),
    ("buy one thousand tokens", UNKNOWN),
    ("sell two sol", UNKNOWN),
    ("sell a third", UNKNOWN),
    ("buy zero sol", UNKNOWN),
    ("buy 0 sol", UNKNOWN),
    ("buy 0.0000000001 sol", UNKNOWN),
    ("sell 0.0000001 tokens", UNKNOWN),
    ("buy 18446744073.709551616 sol", UNKNOWN),
    ("buy -5 sol", UNKNOWN),
    ("buy one two sol", UNKNOWN),
    ("buy one hundred and sol", UNKNOWN),
    ("buy two sol and sell it", UNKNOWN),
    ("by the way it is raining", UNKNOWN),
    ("what is the price of fish", UNKNOWN),
    ("launch a token called", UNKNOWN),
    ("launch moon rocket", UNKNOWN),
    ("join", UNKNOWN),
    ("join the room", UNKNOWN),
    ("say", UNKNOWN),
    ("rewards", UNKNOWN),
]


@pytest.mark.parametrize(("text", "expected"), PHRASINGS, ids=[text for text, _ in PHRASINGS])
def test_phrasings(text: str, expected: tuple[str, dict[str, str | bool]]) -> None:
    command = parse_command(text)
    assert (command.intent, command.parameters) == expected
    assert 0.0 <= command.confidence <= 1.0
    if command.intent == "UNKNOWN":
        assert command.confidence <= 0.3
    # Wire types: integers travel as decimal strings, isBuy as a JSON boolean.
    if "amount" in command.parameters:
        amount = command.parameters["amount"]
        assert isinstance(amount, str)
        assert amount.isdigit()
        assert 0 < int(amount) <= U64_MAX
    if "isBuy" in command.parameters:
        assert type(command.parameters["isBuy"]) is bool


@pytest.mark.parametrize(("text", "_"), PHRASINGS, ids=[text for text, _ in PHRASINGS])
@pytest.mark.parametrize("heard", [0.0, 0.37, 1.0])
def test_confidence_is_in_range_and_scales_with_what_was_heard(
    text: str, _: object, heard: float
) -> None:
    command = parse_command(text, heard=heard)
    assert command.intent in INTENTS
    assert 0.0 <= command.confidence <= heard
    assert command.confidence == pytest.approx(heard * parse_command(text).confidence)


@pytest.mark.parametrize(
    ("canonical", "other"),
    [
        ("buy two sol", "by two sol"),
        ("buy two sol", "buy two soul"),
        ("buy two sol", "buy to sol"),
        ("buy two sol", "buy two"),
        ("buy two sol", "please buy two sol"),
        ("buy two sol", "purchase two solana"),
        ("buy two soul", "by to soul"),
        ("sell all", "cell all"),
        ("sell one thousand tokens", "sell one thousand"),
        ("sell one thousand tokens", "sell one thousand coins"),
        ("what is the price", "um what is the price please"),
        ("show the market cap", "show the marketcap"),
        ("claim my rewards", "claim my reward"),
        ("say hello", "say hello please"),
    ],
)
def test_canonical_phrasing_is_more_confident(canonical: str, other: str) -> None:
    first, second = parse_command(canonical, heard=0.9), parse_command(other, heard=0.9)
    assert first.intent == second.intent != "UNKNOWN"
    assert first.parameters == second.parameters
    assert first.confidence > second.confidence


def test_canonical_phrasing_fits_almost_perfectly() -> None:
    for text in ("buy two sol", "sell half", "what's the volume", "claim my rewards"):
        assert parse_command(text).confidence >= 0.95


def test_any_command_outranks_unknown() -> None:
    worst = parse_command("hey um by to soul uh", heard=0.5)
    assert worst.intent == "EXECUTE_TRADE"
    assert worst.confidence > parse_command("hello there", heard=0.5).confidence
    assert parse_command("hello there").confidence == UNKNOWN_FIT
    assert parse_command("").confidence == 0.0


def test_parsing_is_deterministic() -> None:
    assert parse_command("by to soul", heard=0.8) == parse_command("by to soul", heard=0.8)


@pytest.mark.parametrize("heard", [-0.1, 1.01, float("nan"), float("inf")])
def test_heard_outside_zero_to_one_is_refused(heard: float) -> None:
    with pytest.raises(ValueError, match="heard"):
        parse_command("buy two sol", heard=heard)


def test_command_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="intent"):
        Command("DANCE", {}, 0.5)
    with pytest.raises(ValueError, match="confidence"):
        Command("UNKNOWN", {}, 1.5)


def test_names_and_messages_have_length_limits() -> None:
    name = "x" * 32
    assert parse_command(f"launch a token called {name}").parameters == {"tokenName": name}
    assert parse_command(f"launch a token called {name}y").intent == "UNKNOWN"
    message = " ".join(["hello"] * 83)  # 497 characters
    assert parse_command(f"say {message} hi").parameters == {"message": f"{message} hi"}
    assert parse_command(f"say {message} hey").parameters == {"message": message}
    assert parse_command(f"say {message} hiya").intent == "UNKNOWN"
    assert parse_command("join " + "a" * 65).intent == "UNKNOWN"


@pytest.mark.parametrize(
    ("words", "value"),
    [
        ("two thousand", "2000"),
        ("zero point five", "0.5"),
        ("point five", "0.5"),
        ("1.5", "1.5"),
        ("0.5", "0.5"),
        ("a hundred", "100"),
        ("a thousand", "1000"),
        ("twenty one", "21"),
        ("twenty five", "25"),
        ("one hundred and five", "105"),
        ("two point two five", "2.25"),
        ("three million", "3000000"),
        ("fifteen hundred", "1500"),
        ("one thousand and five", "1005"),
        ("two and a half", "2.5"),
        ("zero", "0"),
        ("to", "2"),
        ("for hundred", "400"),
        ("Seven", "7"),
        (
            "nine hundred ninety nine billion nine hundred ninety nine million "
            "nine hundred ninety nine thousand nine hundred ninety nine",
            "999999999999",
        ),
    ],
)
def test_spoken_number(words: str, value: str) -> None:
    assert spoken_number(words.split()) == Decimal(value)


@pytest.mark.parametrize(
    "words",
    [
        "",
        "a",
        "point",
        "one two",
        "twenty ten",
        "thousand",
        "one thousand thousand",
        "one thousand million",
        "one hundred and",
        "zero zero",
        "two point",
        "two point twelve",
        "apples",
        "1e5",
        "-1",
        "and a half",
    ],
)
def test_not_a_spoken_number(words: str) -> None:
    assert spoken_number(words.split()) is None


ONES = "zero one two three four five six seven eight nine"
TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen"
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety"


def say(n: int) -> str:
    """English words for 1 <= n < 10**12, the way the grammar spells them."""
    ones, teens, tens = ONES.split(), TEENS.split(), TENS.split()

    def below_thousand(k: int) -> list[str]:
        hundreds, rest = divmod(k, 100)
        words = [ones[hundreds], "hundred"] if hundreds else []
        if 10 <= rest < 20:
            words.append(teens[rest - 10])
        elif rest:
            words += [tens[rest // 10]] if rest >= 20 else []
            words += [ones[rest % 10]] if rest % 10 else []
        return words

    words: list[str] = []
    for scale, name in ((10**9, "billion"), (10**6, "million"), (10**3, "thousand"), (1, "")):
        group, n = divmod(n, scale)
        if group:
            words += below_thousand(group) + ([name] if name else [])
    return " ".join(words)


@PROPERTY_SETTINGS
@given(st.decimals(min_value=Decimal("1e-9"), max_value=Decimal(U64_MAX).scaleb(-9), places=9))
def test_sol_amounts_in_digits_become_exact_lamports(amount: Decimal) -> None:
    command = parse_command(f"buy {amount:f} sol")
    assert command.intent == "EXECUTE_TRADE"
    assert command.parameters == {"isBuy": True, "amount": str(int(amount * 10**9))}
    assert Decimal(str(command.parameters["amount"])) == amount * 10**9


@PROPERTY_SETTINGS
@given(st.decimals(min_value=Decimal("1e-6"), max_value=Decimal(U64_MAX).scaleb(-6), places=6))
def test_token_amounts_in_digits_become_exact_raw_units(amount: Decimal) -> None:
    command = parse_command(f"sell {amount:f} tokens")
    assert command.parameters == {"isBuy": False, "amount": str(int(amount * 10**6))}


@PROPERTY_SETTINGS
@given(st.integers(min_value=1, max_value=10**9), st.integers(min_value=1, max_value=9))
def test_amounts_finer_than_a_lamport_are_unknown(units: int, extra: int) -> None:
    amount = Decimal(units * 10 + extra).scaleb(-10)  # a tenth of a lamport left over
    assert parse_command(f"buy {amount:f} sol").intent == "UNKNOWN"


@PROPERTY_SETTINGS
@given(st.integers(min_value=1, max_value=10**12 - 1))
def test_whole_numbers_in_words_read_back(n: int) -> None:
    assert spoken_number(say(n).split()) == n
    assert parse_command(f"sell {say(n)} tokens").parameters == {
        "isBuy": False,
        "amount": str(n * 10**6),
    }


@PROPERTY_SETTINGS
@given(st.text(max_size=60))
def test_any_text_gives_a_well_formed_command(text: str) -> None:
    command = parse_command(text, heard=0.5)
    assert command.intent in INTENTS
    assert 0.0 <= command.confidence <= 0.5
    assert all(isinstance(value, str | bool) for value in command.parameters.values())
