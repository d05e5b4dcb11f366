"""Ordered fan-out: an environment's events to its members in this process, in sequence order.

Events carry the environment's ``sequence``. A :class:`Fanout` delivers them to its members in
sequence order, holding back the ones that arrive ahead of a missing number, and never gives a
member an event its ``ENVIRONMENT_STATE`` already included. What is missing the hub reads back
from the database through the :class:`History` the apps register.

The sender of an event gets its own copy (its ``requestId``, its balance) in place of the public
one: while its request runs, its connection *holds* its broadcasts; when the service has
returned, it *releases* them with the own copy's text and sequence, and the member sends that
text where the public event of that sequence comes. The services that publish the events know
nothing of this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

import protocol


@dataclass(slots=True)
class Event:
    """One broadcast of an environment: a message type and its public data, encoded once."""

    environment_id: str
    sequence: int
    type: str
    data: BaseModel | dict[str, Any]
    text: str = ""

    def __post_init__(self) -> None:
        if not self.text:
            self.text = protocol.encode(self.type, self.data)


@dataclass(frozen=True, slots=True)
class History:
    """Where hubs read back the events they missed; registered by the apps (the kernel imports
    none of them) with :func:`kernel.realtime.register_history`. Both run as ORM work on a
    worker thread.

    ``events(environment_id, after, upto)``: the stored events with ``after < sequence <= upto``
    in sequence order, each built exactly as it was broadcast (public copy). ``latest(ids)``:
    each environment's current ``sequence``. ``participants(ids)``, when given: each
    environment's participant count across every process (a presence read, not the ORM), for
    the hub's ``PARTICIPANTS`` roll call.
    """

    events: Callable[[str, int, int], list[Event]]
    latest: Callable[[list[str]], dict[str, int]]
    participants: Callable[[list[str]], dict[str, int]] | None = None


@dataclass(slots=True)
class Member:
    """One connection's place in an environment's fan-out."""

    push: Callable[[str], None]
    last: int | None = None  # highest sequence this member has seen; None until its state is sent
    # Events kept back until its state is sent, or while its own request runs (a count: a
    # request and a state being re-read may overlap).
    queued: list[Event] = field(default_factory=list)
    holding: int = 0
    own: dict[int, str] = field(default_factory=dict)  # sequence → its own copy, sent instead
    # Event types after which ``react`` is called (once the event is sent): rare events only,
    # such as a new round, after which the connection re-reads its state.
    reacts_to: frozenset[str] = frozenset()
    react: Callable[[Event], None] | None = None
    participants: int | None = None  # the participant count this member was last told

    def offer(self, event: Event) -> None:
        if self.last is None or self.holding:
            self.queued.append(event)
            return
        if event.sequence <= self.last:
            return
        self.last = event.sequence
        if not self.own:
            self.push(event.text)
        else:
            self.push(self.own.pop(event.sequence, event.text))
            for passed in [number for number in self.own if number < event.sequence]:
                del self.own[passed]  # its event was passed over (not in the database): never sent
        if event.type in self.reacts_to and self.react is not None:
            self.react(event)

    @property
    def owes(self) -> bool:
        """Its request ran (or runs) and its own copy is not sent yet."""
        return bool(self.holding) or bool(self.own)

    def ready(self, sequence: int) -> None:
        """Its state (up to ``sequence``) was sent: send what came after it."""
        self.last = max(sequence, self.last or 0)
        self._flush()

    def release(self, sequence: int | None, own: str | None) -> None:
        """Its request is done: send what was kept back, ``own`` in place of event ``sequence``
        (now, or when that event arrives)."""
        self.holding = max(0, self.holding - 1)
        if sequence is not None and own is not None:
            self.own[sequence] = own
        self._flush()

    def _flush(self) -> None:
        if self.last is None or self.holding:
            return
        queued, self.queued = self.queued, []
        for event in queued:
            self.offer(event)


@dataclass(slots=True)
class Fanout:
    """The members of one environment in this process and the in-order delivery of its events."""

    members: dict[str, Member] = field(default_factory=dict)
    next_sequence: int | None = None
    pending: dict[int, Event] = field(default_factory=dict)
    horizon: int = 0  # the highest sequence known to exist: seen in an event or in the database
    gap_timer: asyncio.TimerHandle | None = None
    filling: bool = False  # the hub is reading missing events back from the database

    @property
    def gap(self) -> bool:
        """Events are missing: later ones wait behind them, or the database holds later ones."""
        return self.next_sequence is not None and (
            bool(self.pending) or self.horizon >= self.next_sequence
        )

    @property
    def sender_waits(self) -> bool:
        """A member's own copy waits for its event: a sender of this process waits on a gap."""
        return any(member.own for member in self.members.values())

    def offer(self, event: Event) -> None:
        self.horizon = max(self.horizon, event.sequence)
        if self.next_sequence is None:
            self.next_sequence = event.sequence
        if event.sequence < self.next_sequence:
            return  # a duplicate: every member has it, or its state included it
        self.pending.setdefault(event.sequence, event)
        self._drain()

    def fill(self, events: list[Event], upto: int) -> list[int]:
        """Deliver events read back from the database, up to sequence ``upto``.

        Returns the sequence numbers below ``upto`` that the database does not hold (rows
        deleted since): they are passed over.
        """
        assert self.next_sequence is not None
        for event in events:
            number = event.sequence
            if number >= self.next_sequence and number not in self.pending:
                self.pending[number] = event
        self._drain()
        missing: list[int] = []
        while self.next_sequence <= upto:
            missing.append(self.next_sequence)
            self.next_sequence += 1
            self._drain()
        return missing

    def skip(self) -> None:
        """Move past missing events that nobody here can be given (no members, no history)."""
        self.next_sequence = min(self.pending) if self.pending else self.horizon + 1
        self._drain()

    def _drain(self) -> None:
        assert self.next_sequence is not None
        while self.next_sequence in self.pending:
            event = self.pending.pop(self.next_sequence)
            for member in self.members.values():
                member.offer(event)
            self.next_sequence += 1

    def close(self) -> None:
        if self.gap_timer is not None:
            self.gap_timer.cancel()
            self.gap_timer = None
