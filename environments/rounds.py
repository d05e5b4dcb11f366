"""Rounds: an operator (or the demo's timer) ends a room's round and starts it over.

A new round is one transaction with the environment's row locked (then its positions, the order
of :mod:`environments.locks`): every position is archived to :class:`RoundPosition` and reset in
place to the environment's current starting balance; the market goes back to its initial curve
(phase ``curve``, the pool emptied); ``round`` and ``sequence`` go up by one and a
``ROUND_STARTED`` event is stored under that sequence and published after commit. Trades, chat
and candles of earlier rounds stay in the database. A trade racing the reset queues on the
environment's lock, so it lands wholly in the old round or wholly in the new one.

``new_round_after`` (seconds) makes a room start over by itself once its market has graduated
and has had no trade for that long: checked lazily when someone joins and by each server
process's periodic check. The check is repeated under the lock, so any number of processes may
ask at once: one starts the round, the others find it not due any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

import protocol
from environments.locks import lock_environment
from environments.models import Environment, Position, RoundPosition
from kernel.clock import millis
from kernel.realtime import Event, publish_on_commit
from trading.models import MarketEvent
from trading.state import Phase

# What a new round resets on the environment, besides the curve's reserves and market cap.
RESET_FIELDS = {
    "phase": Phase.CURVE,
    "pool_sol_reserves": 0,
    "pool_token_reserves": 0,
    "graduated_at": None,
    "last_trade_at": None,
}


@dataclass(frozen=True, slots=True)
class RoundStarted:
    """What starting a round did: the environment as it is now, the broadcast's data and how
    many positions were archived and reset."""

    environment: Environment
    event: protocol.RoundStarted
    positions: int


def round_due(environment: Environment, now: datetime | None = None) -> bool:
    """Whether ``environment`` should start a new round by itself: it has ``new_round_after``
    set, its market has graduated to its pool, and its last trade is at least that old."""
    if environment.new_round_after is None or environment.phase != Phase.POOL:
        return False
    quiet_since = environment.last_trade_at or environment.graduated_at
    if quiet_since is None:
        return True
    now = now or timezone.now()
    return now - quiet_since >= timedelta(seconds=environment.new_round_after)


def round_start(
    *, environment_id: str, only_if_due: bool = False, now: datetime | None = None
) -> RoundStarted | None:
    """End the environment's round and start the next one (see the module's docstring).

    ENVIRONMENT_NOT_FOUND for an unknown id. With ``only_if_due`` nothing happens (None) unless
    :func:`round_due` holds once the row is locked.
    """
    with transaction.atomic():
        environment = lock_environment(environment_id)
        now = now or timezone.now()
        if only_if_due and not round_due(environment, now):
            return None
        positions = list(
            Position.objects.select_for_update().filter(environment=environment).order_by("pk")
        )
        RoundPosition.objects.bulk_create(
            RoundPosition(
                environment=environment,
                round=environment.round,
                wallet=position.wallet,
                sol_balance=position.sol_balance,
                token_balance=position.token_balance,
                joined_at=position.joined_at,
                ended_at=now,
            )
            for position in positions
        )
        Position.objects.filter(environment=environment).update(
            sol_balance=environment.starting_sol_balance,
            token_balance=0,
            last_traded_at=None,
            updated_at=now,
        )
        fresh = environment.constants.fields() | RESET_FIELDS
        fresh.update(
            round=environment.round + 1,
            round_started_at=now,
            sequence=environment.sequence + 1,
        )
        for field, value in fresh.items():
            setattr(environment, field, value)
        environment.save(update_fields=list(fresh))
        event = protocol.RoundStarted(
            environmentId=environment.id,
            sequence=environment.sequence,
            round=environment.round,
            timestamp=millis(now),
        )
        MarketEvent.objects.create(
            environment=environment,
            sequence=environment.sequence,
            round=environment.round,
            kind=MarketEvent.Kind.ROUND_STARTED,
            data=protocol.dump(event),
        )
        publish_on_commit(Event(environment.id, environment.sequence, "ROUND_STARTED", event))
        return RoundStarted(environment, event, len(positions))


def rounds_start_due(now: datetime | None = None) -> list[RoundStarted]:
    """Start a new round in every environment where one is due (the periodic check)."""
    now = now or timezone.now()
    candidates = Environment.objects.filter(new_round_after__isnull=False, phase=Phase.POOL).only(
        "id", "new_round_after", "phase", "last_trade_at", "graduated_at"
    )
    started = []
    for candidate in candidates:
        if round_due(candidate, now):
            result = round_start(environment_id=candidate.id, only_if_due=True, now=now)
            if result is not None:
                started.append(result)
    return started
