"""Tests for the write side of environments: :mod:`environments.services` (create, join,
open/close, chat, moderation).

Every refusal must raise :class:`DomainError` with the contract's code and leave the database
exactly as it was (``assert_refused``; the helpers shared with the trade tests are in
``tests/conftest.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import base58
import pytest

import protocol
from environments.models import ChatMessage, Environment, Position
from environments.services import (
    chat_post,
    chat_set_hidden,
    environment_create,
    environment_join,
    environment_set_open,
)
from kernel.realtime import Event
from protocol.errors import ErrorCode
from tests.conftest import STRANGER, WALLET_A, WALLET_B, assert_refused, buy, fresh, join, position
from trading.curve import (
    DEFAULT_REAL_TOKEN,
    DEFAULT_STARTING_SOL,
    DEFAULT_VIRTUAL_SOL,
    DEFAULT_VIRTUAL_TOKEN,
    LAMPORTS_PER_SOL,
    Curve,
)
from trading.state import CurveConstants

pytestmark = pytest.mark.django_db

SOL = LAMPORTS_PER_SOL

MakeEnvironment = Callable[..., Environment]


# --- chat ----------------------------------------------------------------------------------------


def test_chat_publishes_after_commit(
    joined: Environment,
    dispatched: list[Event],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        chat = chat_post(environment_id=joined.id, wallet=WALLET_A, message="gm").line
        assert dispatched == []
    assert len(callbacks) == 1
    [event] = dispatched
    assert event.type == "CHAT_MESSAGE"
    assert event.sequence == chat.sequence == 1
    data = protocol.dump(event.data)
    assert data["message"] == "gm"
    assert data["userId"] == WALLET_A
    assert data["environmentId"] == joined.id
    assert data["sequence"] == 1


def test_chat_post_stores_the_text(joined: Environment) -> None:
    chat = chat_post(environment_id=joined.id, wallet=WALLET_B, message="hello, curve 🚀").line
    stored = ChatMessage.objects.get()
    assert stored.pk == chat.pk
    assert stored.environment_id == joined.id
    assert stored.wallet == WALLET_B
    assert stored.message == "hello, curve 🚀"
    assert stored.sequence == 1
    assert stored.hidden is False
    assert fresh(joined).sequence == 1


def test_chat_requires_a_joined_wallet(joined: Environment) -> None:
    chat_post(environment_id=joined.id, wallet=WALLET_A, message="first")
    assert_refused(
        ErrorCode.UNAUTHORIZED,
        lambda: chat_post(environment_id=joined.id, wallet=STRANGER, message="let me in"),
    )
    assert_refused(
        ErrorCode.ENVIRONMENT_NOT_FOUND,
        lambda: chat_post(environment_id="env_missing", wallet=WALLET_A, message="hi"),
    )


def test_chat_set_hidden_hides_and_unhides(joined: Environment) -> None:
    ids = [
        chat_post(environment_id=joined.id, wallet=WALLET_A, message=f"line {n}").line.pk
        for n in range(3)
    ]

    assert chat_set_hidden(message_ids=ids[:2], hidden=True) == 2
    assert set(ChatMessage.objects.filter(hidden=True).values_list("pk", flat=True)) == set(ids[:2])
    assert chat_set_hidden(message_ids=ids[:2], hidden=True) == 0  # already hidden
    assert chat_set_hidden(message_ids=ids, hidden=True) == 1  # only the third changes
    assert chat_set_hidden(message_ids=[ids[0]], hidden=False) == 1
    assert chat_set_hidden(message_ids=[ids[0]], hidden=False) == 0
    assert set(ChatMessage.objects.filter(hidden=False).values_list("pk", flat=True)) == {ids[0]}
    assert chat_set_hidden(message_ids=[max(ids) + 1000], hidden=True) == 0
    assert chat_set_hidden(message_ids=[], hidden=True) == 0
    # Moderation touches neither the text nor the sequence.
    assert [(m.message, m.sequence) for m in ChatMessage.objects.order_by("sequence")] == [
        ("line 0", 1),
        ("line 1", 2),
        ("line 2", 3),
    ]


# --- environment creation and joining ------------------------------------------------------------


def valid_mint() -> str:
    return base58.b58encode(secrets.token_bytes(32)).decode()


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, " " + "y" * 65 + " "])
def test_create_rejects_bad_names(db: None, name: str) -> None:
    assert_refused(ErrorCode.INVALID_MESSAGE, lambda: environment_create(name=name))
    assert not Environment.objects.exists()


def test_create_accepts_64_characters_and_trims(db: None) -> None:
    environment = environment_create(name="  " + "é" * 64 + "  ")
    assert environment.name == "é" * 64
    assert fresh(environment).name == "é" * 64


@pytest.mark.parametrize(
    "constants",
    [
        CurveConstants(protocol_fee_bps=1001),
        CurveConstants(creator_fee_bps=1001),
        CurveConstants(protocol_fee_bps=-1),
        CurveConstants(real_token=DEFAULT_VIRTUAL_TOKEN),
        CurveConstants(real_token=DEFAULT_VIRTUAL_TOKEN + 1),
        CurveConstants(real_token=0),
        CurveConstants(virtual_sol=0),
    ],
    ids=[
        "protocol-fee-1001",
        "creator-fee-1001",
        "negative-fee",
        "real-equals-virtual",
        "real-above-virtual",
        "no-real-tokens",
        "no-virtual-sol",
    ],
)
def test_create_rejects_bad_constants(db: None, constants: CurveConstants) -> None:
    assert_refused(
        ErrorCode.INVALID_MESSAGE, lambda: environment_create(name="bad", constants=constants)
    )


def test_create_accepts_the_limits(db: None) -> None:
    environment = environment_create(
        name="limits",
        constants=CurveConstants(
            protocol_fee_bps=1000,
            creator_fee_bps=1000,
            real_token=DEFAULT_VIRTUAL_TOKEN - 1,
            total_supply=DEFAULT_VIRTUAL_TOKEN,
        ),
    )
    stored = fresh(environment)
    assert (stored.protocol_fee_bps, stored.creator_fee_bps) == (1000, 1000)
    assert stored.real_token_reserves == stored.initial_real_token == DEFAULT_VIRTUAL_TOKEN - 1


@pytest.mark.parametrize(
    "mint",
    [
        "not-a-mint",
        "0OIl" * 11,  # characters outside the base58 alphabet
        base58.b58encode(bytes(range(1, 32))).decode(),  # 31 bytes
        base58.b58encode(bytes(range(1, 34))).decode(),  # 33 bytes
        "ñ" * 44,
        " " + valid_mint(),
    ],
    ids=["dashes", "bad-alphabet", "31-bytes", "33-bytes", "non-ascii", "leading-space"],
)
def test_create_rejects_bad_mints(db: None, mint: str) -> None:
    assert_refused(ErrorCode.INVALID_MESSAGE, lambda: environment_create(name="m", token_mint=mint))


@pytest.mark.parametrize("suffix", [" ", "\n", "\t"], ids=["space", "newline", "tab"])
def test_create_rejects_mint_with_trailing_white_space(db: None, suffix: str) -> None:
    mint = valid_mint() + suffix
    assert_refused(ErrorCode.INVALID_MESSAGE, lambda: environment_create(name="m", token_mint=mint))


def test_create_keeps_a_given_mint(db: None) -> None:
    mint = valid_mint()
    assert fresh(environment_create(name="real", token_mint=mint)).token_mint == mint


def test_generated_mint_is_base58_of_32_bytes(db: None) -> None:
    mints = {environment_create(name=f"virtual {n}").token_mint for n in range(5)}
    assert len(mints) == 5
    for mint in mints:
        decoded = base58.b58decode(mint)
        assert len(decoded) == 32
        assert base58.b58encode(decoded).decode() == mint
        assert len(mint) <= 44


def test_create_stores_the_constants(db: None) -> None:
    environment = fresh(environment_create(name="defaults"))
    assert environment.is_open
    assert environment.sequence == 0
    assert (
        environment.virtual_sol_reserves == environment.initial_virtual_sol == (DEFAULT_VIRTUAL_SOL)
    )
    assert environment.virtual_token_reserves == DEFAULT_VIRTUAL_TOKEN
    assert environment.real_sol_reserves == 0
    assert environment.real_token_reserves == DEFAULT_REAL_TOKEN
    assert environment.curve == Curve()


def test_join_twice_creates_one_position(environment: Environment) -> None:
    _, first = environment_join(environment_id=environment.id, wallet=WALLET_A)
    _, second = environment_join(environment_id=environment.id, wallet=WALLET_A)
    assert first.pk == second.pk
    assert Position.objects.filter(environment=environment, wallet=WALLET_A).count() == 1
    assert (second.sol_balance, second.token_balance) == (DEFAULT_STARTING_SOL, 0)


def test_join_again_keeps_the_balance(environment: Environment) -> None:
    join(environment, WALLET_A)
    tokens = buy(environment, WALLET_A, SOL).trade.token_amount
    _, again = environment_join(environment_id=environment.id, wallet=WALLET_A)
    assert again.token_balance == tokens
    assert again.sol_balance < DEFAULT_STARTING_SOL
    assert Position.objects.count() == 1


def test_join_uses_the_environment_starting_balance(make_environment: MakeEnvironment) -> None:
    environment = make_environment(starting_sol_balance=7 * SOL)
    _, joined_position = environment_join(environment_id=environment.id, wallet=WALLET_A)
    assert joined_position.sol_balance == 7 * SOL
    assert position(environment, WALLET_A).sol_balance == 7 * SOL


def test_join_unknown_environment(db: None) -> None:
    assert_refused(
        ErrorCode.ENVIRONMENT_NOT_FOUND,
        lambda: environment_join(environment_id="env_missing", wallet=WALLET_A),
    )


def test_closed_environment_can_still_be_joined(environment: Environment) -> None:
    environment_set_open(environment_id=environment.id, is_open=False)
    _, joined_position = environment_join(environment_id=environment.id, wallet=WALLET_A)
    assert joined_position.sol_balance == DEFAULT_STARTING_SOL
