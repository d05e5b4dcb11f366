"""Coalesced feeds: a value many connections follow, sent at most once per window.

A feed (an environment's price, a wallet's rewards, a real mint's market price) is computed
once per window after it changed, whatever the number of its subscribers, encoded once, and
the same frame is pushed to each of them. What changes a feed: the events of its environment
named in ``changed_by`` (a trade moves the price, a chat line does not), a touch
(:func:`kernel.realtime.touch_on_commit`), a later sequence in the database, or a value pushed
over the layer (a market price).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

WINDOW = 0.1  # seconds: at most one update per feed per window

Value = BaseModel | dict[str, Any]


def market_key(mint: str) -> str:
    """The feed key of a real mint's market price (environment ids never start with '_')."""
    return f"_market.{mint}"


def rewards_key(wallet: str) -> str:
    """The feed key of a wallet's rewards (environment ids never start with '_')."""
    return f"_rewards.{wallet}"


@dataclass(slots=True)
class CoalescedFeed:
    """One feed of this process: its subscribers and when it last went out."""

    kind: str  # the message type its subscribers receive
    compute: Callable[[], Awaitable[Value]]  # its current value; awaited once per window
    changed_by: frozenset[str] = frozenset()  # event types of its environment that change it
    subscribers: dict[str, Callable[[str], None]] = field(default_factory=dict)  # connection → push
    changed: bool = False
    sent_at: float = float("-inf")  # the window (loop time) of its last update
    sequence: int = 0  # the highest event sequence of its environment seen (environment feeds)
    latest: Value | None = None  # the last value pushed over the layer (market feeds)

    def saw(self, event_type: str, sequence: int) -> None:
        """An event of its environment: a later one may change it."""
        self.sequence = max(self.sequence, sequence)
        if event_type in self.changed_by:
            self.changed = True
