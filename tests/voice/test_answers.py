"""VOICE_RESPONSE sentences: the figures asked for, or the action restated with a quote."""

from __future__ import annotations

from decimal import Decimal

import pytest

from environments.selectors import price_update
from environments.services import environment_join
from tests.conftest import Wallet
from trading.services import trade_execute
from voice.answers import sol, spoken_price, voice_answer
from voice.speech.intents import parse_command

pytestmark = pytest.mark.django_db


def answer(wallet: Wallet, environment, text: str) -> str:
    return voice_answer(
        wallet=wallet.address, environment_id=environment.id, command=parse_command(text)
    )


def test_questions_get_live_figures(alice, environment):
    environment_join(environment_id=environment.id, wallet=alice.address)
    trade_execute(environment_id=environment.id, wallet=alice.address, amount=10**9, is_buy=True)
    environment.refresh_from_db()
    now = price_update(environment_id=environment.id)
    spoken = spoken_price(Decimal(now.price))
    assert answer(alice, environment, "what is the price") == (
        f"{environment.name} is at {spoken} SOL per token."
    )
    assert len(spoken.replace(".", "").lstrip("0")) == 4  # four significant digits
    assert abs(Decimal(spoken) - Decimal(now.price)) <= Decimal(now.price) / 1000
    assert answer(alice, environment, "what's the volume") == (
        f"{environment.name} traded {sol(int(now.volume))} in the last 24 hours."
    )
    assert "market cap is" in answer(alice, environment, "show the market cap")


def test_trades_are_quoted_for_confirmation_with_the_wallets_balance(alice, environment):
    environment_join(environment_id=environment.id, wallet=alice.address)
    quote = answer(alice, environment, "buy two sol")
    assert quote.startswith("Buy about ") and quote.endswith("for 2 SOL? Confirm to trade.")
    assert answer(alice, environment, "buy five hundred sol") == "You have only 100 SOL to spend."
    assert (
        answer(alice, environment, "sell all") == f"You hold no {environment.name} tokens to sell."
    )
    trade_execute(environment_id=environment.id, wallet=alice.address, amount=10**9, is_buy=True)
    environment.refresh_from_db()
    assert answer(alice, environment, "sell half").startswith("Sell 17,099,601.58 tokens of ")
    assert "You hold only" in answer(alice, environment, "sell one hundred million tokens")


def test_other_commands_are_restated_and_unclear_speech_gets_help(alice, environment):
    assert "moon rocket" in answer(alice, environment, "launch a token called moon rocket")
    assert answer(alice, environment, "say hello everyone") == (
        'Send "hello everyone" to the chat? Confirm to post it.'
    )
    assert "no open environment called alpha" in answer(
        alice, environment, "join environment alpha"
    )
    assert answer(alice, environment, "check my rewards") == "You are BRONZE with 0 SOL unclaimed."
    assert answer(alice, environment, "claim my rewards") == "You have no unclaimed rewards yet."
    assert answer(alice, environment, "the weather is nice").startswith("Sorry")
    no_room = voice_answer(
        wallet=alice.address, environment_id=None, command=parse_command("what is the price")
    )
    assert no_room == "Join an environment first, then ask again."
