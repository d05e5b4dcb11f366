"""A crowd joining one room reads its history once, and never a stale one that a user could see.

Joins at one sequence share the room's chat, trades and 24 h analytics (environments.selectors);
these tests are the ways that sharing could show a newcomer something out of date.
"""

from __future__ import annotations

import pytest

from environments.models import Environment
from environments.services import chat_post, chat_set_hidden, environment_set_open
from environments.services import participant_state as state_of
from tests.conftest import WALLET_A, WALLET_B, buy
from trading.curve import LAMPORTS_PER_SOL

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _kept_for_a_minute(settings) -> None:
    """Long enough that only the sequence, round and moderation can end a kept history."""
    settings.FUNPUMP_STATE_CACHE_SECONDS = 60


def chat_lines(environment: Environment, wallet: str) -> list[str]:
    return [
        line.message for line in state_of(environment_id=environment.id, wallet=wallet).chatHistory
    ]


def test_a_trade_after_a_join_is_in_the_next_join(joined: Environment) -> None:
    before = state_of(environment_id=joined.id, wallet=WALLET_A)
    assert before.trades == []
    trade = buy(joined, WALLET_A, LAMPORTS_PER_SOL).trade
    after = state_of(environment_id=joined.id, wallet=WALLET_B)
    assert [t.sequence for t in after.trades] == [trade.sequence]
    assert after.sequence == before.sequence + 1
    assert after.volume24h == str(trade.sol_amount)
    assert after.trades24h == 1


def test_a_chat_line_after_a_join_is_in_the_next_join(joined: Environment) -> None:
    assert chat_lines(joined, WALLET_A) == []
    chat_post(environment_id=joined.id, wallet=WALLET_A, message="gm")
    assert chat_lines(joined, WALLET_B) == ["gm"]


def test_a_hidden_line_leaves_the_next_join_at_once(joined: Environment) -> None:
    line = chat_post(environment_id=joined.id, wallet=WALLET_A, message="spam").line
    chat_post(environment_id=joined.id, wallet=WALLET_A, message="gm")
    assert chat_lines(joined, WALLET_B) == ["spam", "gm"]
    chat_set_hidden(message_ids=[line.pk], hidden=True)  # no new sequence: only moderation
    assert chat_lines(joined, WALLET_B) == ["gm"]
    chat_set_hidden(message_ids=[line.pk], hidden=False)
    assert chat_lines(joined, WALLET_A) == ["spam", "gm"]


def test_each_member_gets_their_own_balance(joined: Environment) -> None:
    buy(joined, WALLET_A, LAMPORTS_PER_SOL)
    mine = state_of(environment_id=joined.id, wallet=WALLET_A)
    theirs = state_of(environment_id=joined.id, wallet=WALLET_B)
    assert mine.trades == theirs.trades
    assert int(mine.balance.token) > 0
    assert theirs.balance.token == "0"


def test_closing_the_room_shows_in_the_next_join(joined: Environment) -> None:
    assert state_of(environment_id=joined.id, wallet=WALLET_A).isOpen is True
    environment_set_open(environment_id=joined.id, is_open=False)
    assert state_of(environment_id=joined.id, wallet=WALLET_B).isOpen is False


def test_without_keeping_every_join_reads_again(joined: Environment, settings) -> None:
    settings.FUNPUMP_STATE_CACHE_SECONDS = 0
    line = chat_post(environment_id=joined.id, wallet=WALLET_A, message="spam").line
    assert chat_lines(joined, WALLET_B) == ["spam"]
    # Hidden behind the services' back (as another process's operator would): read again.
    type(line).objects.filter(pk=line.pk).update(hidden=True)
    assert chat_lines(joined, WALLET_B) == []
